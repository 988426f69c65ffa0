"""The Batch API's file formats and objects, as pure functions (no I/O): what agent/batch/transport.py writes and reads.

- Input line (``BatchRequestInput``): ``{"custom_id", "method": "POST", "url", "body"}``, one per request;
  ``custom_id`` is the call's cache key, so a result can be matched to its call in any later process.
- Output / error line (``BatchRequestOutput``): ``{"id", "custom_id", "response": {"status_code",
  "request_id", "body"} | null, "error": {"code", "message"} | null}``. :func:`line_outcome` turns one into
  the value the synchronous transport would return, or a :class:`agent.providers.retry.Failure` classified by the
  one retry policy's rules (a 429 / 5xx line or a line the batch never ran is retryable; a 400 is not).
- A batch's metadata names the run and the submission (:func:`metadata`); :func:`submission_of` reads it
  back from a listed batch — how a restarted run finds a batch whose id it never recorded.
- Limits of one input file (OpenAI's published ``CreateBatchRequest``): 50,000 requests, 200 MB.

>>> input_line("k1", "/v1/images/generations", {"prompt": "a fox"})
b'{"custom_id":"k1","method":"POST","url":"/v1/images/generations","body":{"prompt":"a fox"}}\\n'
>>> line_outcome("llm", {"custom_id": "k1", "response": {"status_code": 400, "body": {"error": {
...     "message": "bad", "code": None}}}, "error": None}).failure.kind
'bad_request'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pydantic
from openai.types import ImagesResponse
from openai.types.chat import ChatCompletion

from agent.batch import MAX_REQUESTS
from agent.providers.retry import BadResponse, Failure, ProviderError, failure_from_status
from agent.providers.transport import chat_value, image_value

__all__ = ["ENDPOINTS", "MAX_FILE_BYTES", "MAX_REQUESTS", "TERMINAL", "LineOutcome", "index_lines", "input_line",
           "line_outcome", "metadata", "snapshot", "submission_of"]

ENDPOINTS = {"lmm": "/v1/chat/completions", "llm": "/v1/chat/completions", "t2i": "/v1/images/generations"}
MAX_FILE_BYTES = 200_000_000  # "up to 200 MB": read as decimal megabytes, the smaller of the two readings
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
TIME_FIELDS = ("created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
               "cancelling_at", "cancelled_at")
META_RUN, META_SUBMISSION, META_ROLE = "ltgc_run", "ltgc_submission", "ltgc_role"


@dataclass(frozen=True)
class LineOutcome:
    """One request's end in a batch: the cacheable ``value``, or a ``failure``."""

    value: dict[str, Any] | None = None
    failure: Failure | None = None


def input_line(custom_id: str, url: str, body: dict[str, Any]) -> bytes:
    """One JSONL line of a batch input file (compact, UTF-8)."""
    line = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def metadata(run_id: str, submission_id: str, role: str) -> dict[str, str]:
    """The batch's metadata (at most 16 pairs, values <= 512 characters)."""
    return {META_RUN: run_id[:512], META_SUBMISSION: submission_id, META_ROLE: role}


def submission_of(batch: Any) -> str | None:
    """The submission id in a (listed) batch's metadata, or None for a batch that is not ours."""
    meta = getattr(batch, "metadata", None)
    value = meta.get(META_SUBMISSION) if isinstance(meta, dict) else None
    return value if isinstance(value, str) and value else None


def snapshot(batch: Any) -> dict[str, Any]:
    """Status, request counts and every ``*_at`` time of a batch object (``None`` where unset)."""
    counts = getattr(batch, "request_counts", None)
    return {
        "status": getattr(batch, "status", None),
        "counts": {k: getattr(counts, k, None) for k in ("total", "completed", "failed")} if counts else {},
        "times": {name: getattr(batch, name, None) for name in TIME_FIELDS},
    }


def batch_problem(batch: Any) -> str:
    """Why a batch ended without answering (its ``errors``, else its status)."""
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    words = "; ".join(f"{getattr(e, 'code', '')}: {getattr(e, 'message', '')}" for e in errors[:3])
    return f"batch {getattr(batch, 'id', '?')} {getattr(batch, 'status', '?')}" + (f" ({words})" if words else "")


def line_outcome(role: str, line: dict[str, Any]) -> LineOutcome:
    """What one output or error line means for its call (see the module docstring)."""
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict):
        status = response.get("status_code")
        body = response.get("body")
        if status == 200 and isinstance(body, dict):
            try:
                return LineOutcome(value=_value(role, body))
            except (BadResponse, pydantic.ValidationError) as exc:
                return LineOutcome(failure=Failure(True, "bad_response", 200, _first_line(exc)))
            except ProviderError as exc:  # the content filter stopped a chat answer: final, as when synchronous
                return LineOutcome(failure=Failure(False, exc.kind, exc.status, exc.message))
        if isinstance(status, int):
            message, code = _server_error(body)
            return LineOutcome(failure=failure_from_status(status, message, code))
    if isinstance(error, dict):  # not an HTTP answer: batch_expired, batch_cancelled, ... — the line never ran
        return LineOutcome(failure=Failure(True, "server", None, f"{error.get('code')}: {error.get('message')}"))
    return LineOutcome(failure=Failure(True, "bad_response", None, "batch line has neither a response nor an error"))


def missing(problem: str) -> LineOutcome:
    """The outcome of a request its ended batch did not answer (expired, cancelled, failed): retryable."""
    return LineOutcome(failure=Failure(True, "server", None, f"{problem}: this request was not answered"))


def index_lines(lines: Iterable[bytes]) -> Iterator[tuple[str, bool, int, int]]:
    """``(custom_id, ok, offset, length)`` of each line of an output / error file (lines as read, with ends).

    >>> list(index_lines([b'{"custom_id":"a","response":{"status_code":200}}\\n', b'{"custom_id":"b"}\\n']))
    [('a', True, 0, 49), ('b', False, 49, 18)]
    """
    offset = 0
    for raw in lines:
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            response = line.get("response")
            ok = isinstance(response, dict) and response.get("status_code") == 200
            yield line["custom_id"], ok, offset, len(raw)
        offset += len(raw)


def _value(role: str, body: dict[str, Any]) -> dict[str, Any]:
    if role == "t2i":
        return image_value(ImagesResponse.model_validate(body))
    return chat_value(ChatCompletion.model_validate(body))


def _server_error(body: Any) -> tuple[str, str | None]:
    inner = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(inner, dict):
        code = inner.get("code") or inner.get("type")
        return str(inner.get("message") or "error"), (str(code) if code else None)
    return (str(body)[:500] if body else "error"), None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
