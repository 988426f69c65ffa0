"""The simulator's Batch API: ``/v1/files`` and ``/v1/batches`` (``scripts/sim/server.py``).

THIS IS A SIMULATOR: a batch's lines are answered by the same synthetic functions as the synchronous
endpoints (``scripts/sim/http_server.py``), so a request gets the same answer either way.

Routes (shapes as OpenAI's published OpenAPI spec: ``OpenAIFile``, ``Batch``, ``ListBatchesResponse``; the
per-line ``BatchRequestInput`` / ``BatchRequestOutput``; unset fields are ``null``, as the real API sends):

- ``POST /v1/files`` (multipart: ``file``, ``purpose``), ``GET /v1/files/<id>``, ``GET /v1/files/<id>/content``.
- ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window="24h"``, ``metadata``),
  ``GET /v1/batches/<id>``, ``GET /v1/batches?limit=&after=`` (newest first, cursor = a batch id),
  ``POST /v1/batches/<id>/cancel``.

Lifecycle, by the clock (no background thread: a batch's status is worked out whenever it is read):
``validating`` for ``batch_validating_s``, ``in_progress`` for ``batch_in_progress_s``, ``finalizing`` for
``batch_finalizing_s``, then ``completed`` with an output file (answered lines) and an error file (failed
lines), each only when it has lines. A cancel makes it ``cancelling``, then ``cancelled`` after
``batch_finalizing_s``, with the lines answered so far. Input that breaks the line format (no ``custom_id``,
a repeated one, a ``url`` other than the batch's endpoint) fails the batch at validation, as the API does.

Fault knobs: ``inject("batch_failed")`` — the next batch fails validation (``errors`` set, no output);
``inject("batch_expired")`` — the next batch expires with its first half answered and the rest in the error
file (``batch_expired``); ``inject("batch_line_error", count=k)`` and ``rate_batch_line_error`` — lines whose
answer is a 500 in the error file. ``stats()`` counts every submission per ``custom_id`` (at create).
"""

from __future__ import annotations

import collections
import email.parser
import email.policy
import hashlib
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BATCH_FAULT_KINDS = ("batch_failed", "batch_expired", "batch_line_error")
ENDPOINTS = ("/v1/chat/completions", "/v1/images/generations")
WINDOW_S = 24 * 3600
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_REQUESTS = 50_000
# A line's answer: (HTTP status, response body) for one request body sent to an endpoint.
Answer = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]
Reply = tuple[int, bytes, str]  # status, body, content type


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int


@dataclass
class _Batch:
    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    created: float  # time.time() at create
    lines: list[dict[str, Any]]
    fault: str | None = None  # failed | expired
    errors: list[dict[str, Any]] | None = None
    status: str = "validating"
    times: dict[str, int | None] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    usage: dict[str, Any] | None = None
    cancel_at: float | None = None


class BatchService:
    """Files and batches of one simulator, behind one lock (request threads share it)."""

    def __init__(self, knobs: Callable[[], Any], answer: Answer) -> None:
        self._knobs = knobs  # the simulator's current SimConfig
        self._answer = answer
        self._lock = threading.RLock()
        self._files: dict[str, _File] = {}
        self._batches: collections.OrderedDict[str, _Batch] = collections.OrderedDict()
        self._injected: dict[str, int] = {}
        self._line_rng_state = 0
        self.reset_stats()

    # ------------------------------------------------------------------------------------- public
    def reset_stats(self) -> None:
        with self._lock:
            self._requests: collections.Counter[str] = collections.Counter()
            self._submitted: collections.Counter[str] = collections.Counter()
            self._lines_run = 0

    def stats(self) -> dict[str, Any]:
        """``requests`` per route kind, ``submitted`` per custom_id, batches by status, lines answered."""
        with self._lock:
            now = time.time()
            for batch in self._batches.values():
                self._advance(batch, now)
            return {"requests": dict(self._requests), "submitted": dict(self._submitted),
                    "batches": len(self._batches), "files": len(self._files),
                    "by_status": dict(collections.Counter(b.status for b in self._batches.values())),
                    "lines_run": self._lines_run}

    def inject(self, kind: str, count: int = 1) -> None:
        if kind not in BATCH_FAULT_KINDS:
            raise ValueError(f"unknown batch fault {kind!r}; use one of {', '.join(BATCH_FAULT_KINDS)}")
        if count < 1:
            raise ValueError(f"inject count must be >= 1, got {count}")
        with self._lock:
            self._injected[kind] = self._injected.get(kind, 0) + count

    def handle(self, method: str, target: str, content_type: str, raw: bytes) -> Reply | None:
        """The reply to a Batch API request, or ``None`` when ``target`` is not one of its routes."""
        url = urllib.parse.urlsplit(target)
        parts = url.path.rstrip("/").split("/")[2:]  # after "", "v1"
        if not parts or parts[0] not in ("files", "batches"):
            return None
        query = dict(urllib.parse.parse_qsl(url.query))
        with self._lock:
            self._requests[f"{method} {parts[0]}"] += 1
            try:
                return self._route(method, parts, query, content_type, raw)
            except _ApiError as exc:
                return _error(exc.status, exc.message, exc.code)

    # -------------------------------------------------------------------------------------- routes
    def _route(self, method: str, parts: list[str], query: dict[str, str], ctype: str, raw: bytes) -> Reply:
        kind, rest = parts[0], parts[1:]
        if kind == "files":
            if method == "POST" and not rest:
                return _json(self._file_object(self._upload(ctype, raw)))
            if method == "GET" and len(rest) == 1:
                return _json(self._file_object(self._file(rest[0])))
            if method == "GET" and len(rest) == 2 and rest[1] == "content":
                return 200, self._file(rest[0]).data, "application/octet-stream"
        else:
            if method == "POST" and not rest:
                return _json(self._batch_object(self._create(_json_body(raw))))
            if method == "GET" and not rest:
                return _json(self._list(query))
            if method == "GET" and len(rest) == 1:
                return _json(self._batch_object(self._batch(rest[0])))
            if method == "POST" and len(rest) == 2 and rest[1] == "cancel":
                return _json(self._batch_object(self._cancel(self._batch(rest[0]))))
        raise _ApiError(404, f"Unknown route {method} /v1/{'/'.join(parts)} (simulator).", "not_found")

    def _upload(self, ctype: str, raw: bytes) -> _File:
        fields = parse_multipart(ctype, raw)
        if "file" not in fields or "purpose" not in fields:
            raise _ApiError(400, "Multipart form needs 'file' and 'purpose'.", "invalid_request")
        filename, data = fields["file"]
        purpose = fields["purpose"][1].decode("utf-8", "replace")
        if purpose != "batch":
            raise _ApiError(400, f"purpose {purpose!r}: the simulator stores batch input files only.", "invalid_purpose")
        if len(data) > MAX_FILE_BYTES:
            raise _ApiError(400, f"File is {len(data)} bytes; the limit is {MAX_FILE_BYTES}.", "file_too_large")
        return self._store(filename or "upload.jsonl", "batch", data)

    def _create(self, body: dict[str, Any]) -> _Batch:
        endpoint, file_id = body.get("endpoint"), body.get("input_file_id")
        if endpoint not in ENDPOINTS:
            raise _ApiError(400, f"endpoint {endpoint!r} is not served by the simulator ({', '.join(ENDPOINTS)}).",
                            "invalid_endpoint")
        if body.get("completion_window") != "24h":
            raise _ApiError(400, "completion_window must be '24h'.", "invalid_completion_window")
        metadata = body.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16 or not all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items())):
            raise _ApiError(400, "metadata: at most 16 string pairs, keys <= 64 and values <= 512 chars.",
                            "invalid_metadata")
        source = self._file(str(file_id))
        lines, problem = _parse_input(source.data, str(endpoint))
        batch = _Batch(id=f"batch_{uuid.uuid4().hex[:24]}", endpoint=str(endpoint), input_file_id=source.id,
                       metadata=metadata, created=time.time(), lines=lines)
        batch.counts["total"] = len(lines)
        for line in lines:  # every submission counts, whatever becomes of the batch
            self._submitted[str(line.get("custom_id"))] += 1
        if problem is not None:
            batch.fault, batch.errors = "failed", [problem]
        elif self._take("batch_failed"):
            batch.fault = "failed"
            batch.errors = [{"code": "simulated_failure", "message": "The batch failed validation (simulated).",
                             "param": None, "line": None}]
        elif self._take("batch_expired"):
            batch.fault = "expired"
        self._batches[batch.id] = batch
        self._batches.move_to_end(batch.id, last=False)  # newest first, as the API lists them
        return batch

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            raise _ApiError(400, "limit must be an integer from 1 to 100.", "invalid_limit") from None
        if not 1 <= limit <= 100:
            raise _ApiError(400, "limit must be an integer from 1 to 100.", "invalid_limit")
        ids = list(self._batches)
        start = ids.index(query["after"]) + 1 if query.get("after") in self._batches else 0
        page = [self._batch_object(self._batches[i]) for i in ids[start:start + limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(ids)}

    def _cancel(self, batch: _Batch) -> _Batch:
        self._advance(batch, time.time())
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch.cancel_at = time.time()
            batch.status = "cancelling"
            batch.times["cancelling_at"] = int(batch.cancel_at)
        return batch

    # ----------------------------------------------------------------------------------- lifecycle
    def _advance(self, batch: _Batch, now: float) -> None:
        """Bring ``batch`` to the status its age gives it (once final, it never changes)."""
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return
        cfg = self._knobs()
        validating, running, finalizing = cfg.batch_validating_s, cfg.batch_in_progress_s, cfg.batch_finalizing_s
        age = now - batch.created
        if batch.status == "cancelling":
            assert batch.cancel_at is not None
            if now - batch.cancel_at >= finalizing:
                done = 0.0 if age < validating else min(1.0, (batch.cancel_at - batch.created - validating) / max(running, 1e-9))
                self._finish(batch, "cancelled", int(len(batch.lines) * done), int(now))
            return
        if age < validating:
            return
        if batch.fault == "failed":
            batch.status = "failed"
            batch.times["failed_at"] = int(batch.created + validating)
            return
        batch.status, batch.times["in_progress_at"] = "in_progress", int(batch.created + validating)
        if age < validating + running:
            return
        if batch.fault == "expired":
            self._finish(batch, "expired", len(batch.lines) // 2, int(batch.created + validating + running))
            return
        batch.status, batch.times["finalizing_at"] = "finalizing", int(batch.created + validating + running)
        if age >= validating + running + finalizing:
            self._finish(batch, "completed", len(batch.lines), int(batch.created + validating + running + finalizing))

    def _finish(self, batch: _Batch, status: str, answered: int, at: int) -> None:
        """Answer the first ``answered`` lines, write the output and error files, set the final status."""
        out, err = [], []
        tokens = [0, 0]
        for index, line in enumerate(batch.lines):
            custom_id = line["custom_id"]
            if index >= answered:
                if status == "expired":
                    err.append(_out_line(custom_id, None, {"code": "batch_expired", "message": "This request could "
                                         "not be executed before the completion window expired."}))
                continue
            code, body = self._run_line(batch.endpoint, line["body"])
            usage = body.get("usage") or {}
            tokens[0] += int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            tokens[1] += int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
            (out if code == 200 else err).append(_out_line(custom_id, {
                "status_code": code, "request_id": f"req_{uuid.uuid4().hex[:24]}", "body": body}, None))
        if out:
            batch.output_file_id = self._store(f"{batch.id}_output.jsonl", "batch_output", _jsonl(out)).id
        if err:
            batch.error_file_id = self._store(f"{batch.id}_error.jsonl", "batch_output", _jsonl(err)).id
        batch.counts = {"total": len(batch.lines), "completed": len(out), "failed": len(err)}
        batch.usage = {"input_tokens": tokens[0], "input_tokens_details": {"cached_tokens": 0},
                       "output_tokens": tokens[1], "output_tokens_details": {"reasoning_tokens": 0},
                       "total_tokens": sum(tokens)}
        batch.times[f"{status}_at"] = at
        batch.status = status

    def _run_line(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._lines_run += 1
        cfg = self._knobs()
        self._line_rng_state += 1
        chance = (_unit(f"{cfg.seed}|{self._line_rng_state}") < cfg.rate_batch_line_error)
        if self._take("batch_line_error") or chance:
            return 500, {"error": {"message": "The server had an error processing this line (simulated).",
                                   "type": "server_error", "param": None, "code": "server_error"}}
        return self._answer(endpoint, body)

    # -------------------------------------------------------------------------------------- objects
    def _store(self, filename: str, purpose: str, data: bytes) -> _File:
        item = _File(id=f"file-{uuid.uuid4().hex[:24]}", filename=filename, purpose=purpose, data=data,
                     created_at=int(time.time()))
        self._files[item.id] = item
        return item

    def _file(self, file_id: str) -> _File:
        found = self._files.get(file_id)
        if found is None:
            raise _ApiError(404, f"No such File object: {file_id}", "not_found")
        return found

    def _batch(self, batch_id: str) -> _Batch:
        found = self._batches.get(batch_id)
        if found is None:
            raise _ApiError(404, f"No batch found with id '{batch_id}'.", "not_found")
        return found

    def _take(self, kind: str) -> bool:
        if self._injected.get(kind, 0) > 0:
            self._injected[kind] -= 1
            return True
        return False

    @staticmethod
    def _file_object(item: _File) -> dict[str, Any]:
        return {"id": item.id, "object": "file", "bytes": len(item.data), "created_at": item.created_at,
                "expires_at": None, "filename": item.filename, "purpose": item.purpose, "status": "processed",
                "status_details": None}

    def _batch_object(self, batch: _Batch) -> dict[str, Any]:
        self._advance(batch, time.time())
        times = {name: batch.times.get(name) for name in (
            "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
            "cancelled_at")}
        models = {str(line["body"].get("model")) for line in batch.lines if isinstance(line.get("body"), dict)}
        return {
            "id": batch.id, "object": "batch", "endpoint": batch.endpoint,
            "model": models.pop() if len(models) == 1 else None,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id, "completion_window": "24h", "status": batch.status,
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "created_at": int(batch.created), "expires_at": int(batch.created) + WINDOW_S, **times,
            "request_counts": dict(batch.counts), "usage": batch.usage, "metadata": batch.metadata,
        }


class _ApiError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``{field name: (file name or None, bytes)}`` of a ``multipart/form-data`` body (stdlib email parser).

    >>> body = b'--b\\r\\nContent-Disposition: form-data; name="purpose"\\r\\n\\r\\nbatch\\r\\n--b--\\r\\n'
    >>> parse_multipart("multipart/form-data; boundary=b", body)
    {'purpose': (None, b'batch')}
    """
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise _ApiError(400, "Expected a multipart/form-data body.", "invalid_request")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


def _parse_input(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The input file's lines, and the first problem that fails the batch (``BatchError`` shape) or None."""
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            return lines, _problem("invalid_json_line", f"Line {number} is not valid JSON.", number)
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            return lines, _problem("missing_required_parameter", f"Line {number} has no custom_id.", number)
        if custom_id in seen:
            return lines, _problem("duplicate_custom_id", f"The custom_id {custom_id} is repeated.", number)
        seen.add(custom_id)
        lines.append(line)
        if line.get("method") != "POST" or line.get("url") != endpoint or not isinstance(line.get("body"), dict):
            return lines, _problem("invalid_request", f"Line {number}: method must be POST, url {endpoint}, body "
                                   "an object.", number)
    if not lines:
        return lines, _problem("empty_file", "The input file has no requests.", None)
    if len(lines) > MAX_REQUESTS:
        return lines, _problem("too_many_requests", f"{len(lines)} requests; the limit is {MAX_REQUESTS}.", None)
    return lines, None


def _problem(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _out_line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id, "response": response,
            "error": error}


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode("utf-8")


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"")
    except ValueError:
        raise _ApiError(400, "Request body is not valid JSON.", "invalid_json") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "Request body must be a JSON object.", "invalid_json")
    return body


def _json(obj: Any) -> Reply:
    return 200, json.dumps(obj).encode("utf-8"), "application/json"


def _error(status: int, message: str, code: str) -> Reply:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return status, json.dumps(body).encode("utf-8"), "application/json"


def _unit(text: str) -> float:
    """A deterministic number in [0, 1) from ``text`` (seeded line faults, independent of thread timing)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2 ** 64
