"""HTTP layer of the OpenAI-compatible simulator: routes, OpenAI-shaped bodies, fault delivery.

THIS IS A SIMULATOR: the content it serves is synthetic (``scripts/sim/content.py``).

Routes: ``POST /v1/chat/completions``, ``POST /v1/images/generations``, ``GET /v1/models``, the Batch
API's ``/v1/files`` and ``/v1/batches`` (``scripts/sim/batch.py``; not counted in ``requests`` / ``total``),
``GET /sim/files/<id>.png`` (images asked for with ``response_format="url"``), ``GET /sim/stats``,
``POST /sim/reset`` (zero the stats), ``POST /sim/config`` (JSON object of knobs, as ``set_config``).
HTTP/1.1 with keep-alive, as the openai SDK keeps its connections open. Shapes follow the OpenAI API
reference: ``chat.completion`` objects with ``usage``; images ``{created, data[].b64_json|url, usage}``;
errors ``{"error": {message, type, param, code}}``.

Chat answers are built by ``scripts/sim/chat.py``. Requests with ``response_format: {"type": "json_schema",
"json_schema": {"schema": ...}}`` get a JSON answer valid for that schema (``sim_styles.structured_reply``), or a 400 when ``reject_response_format`` is
set; ``{"type": "text"}`` is plain text. With ``reply_style_share`` > 0 that seeded share of answers is
written in a real chat model's style (``sim_styles.style_reply``). The request log records the
``response_format`` type and the ``style`` of each chat answer.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import re
import socket
import struct
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scripts.sim import content as sim_content
from scripts.sim.batch import BatchService
from scripts.sim.chat import chat_completion, estimate_tokens, last_user_text
from scripts.sim.state import SimState

_ROUTES = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/images/generations"): "images",
    ("GET", "/v1/models"): "models",
}
_STATUS_TEXT = {
    "429": (429, "rate_limit_exceeded", "requests", "Rate limit reached (simulated)."),
    "rpm_429": (429, "rate_limit_exceeded", "requests", "Requests-per-minute limit reached (simulated)."),
    "500": (500, "server_error", "server_error", "The server had an error (simulated)."),
    "503": (503, "service_unavailable", "server_error", "The engine is overloaded (simulated)."),
    "refusal": (400, "content_policy_violation", "image_generation_user_error",
                "Your request was rejected by the safety system (simulated)."),
}


class SimServer(ThreadingHTTPServer):
    """Threaded server; a deep backlog and daemon threads so 256+ loopback clients connect (docs/DESIGN.md §10)."""

    request_queue_size = 1024
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SimState) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        super().__init__(address, SimHandler)
        self.batches = BatchService(lambda: state.config, self._batch_answer)

    def _batch_answer(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One batch line, answered as the synchronous endpoint answers it (same content, same checks)."""
        name = "chat" if endpoint == "/v1/chat/completions" else "images"
        try:
            body = _parse_body(json.dumps(body).encode("utf-8"), name)
        except ValueError as exc:
            return 400, {"error": {"message": str(exc), "type": "invalid_request_error", "param": None,
                                   "code": None}}
        if name == "chat":
            rejected = _rejected_format(body, self.state)
            if rejected is not None:
                return rejected.status, json.loads(rejected.data)
            return 200, chat_completion(body, self.state, nontemplate=False)
        return 200, images_response(body, self.state, self.file_url, bad=False)

    def file_url(self, name: str) -> str:
        return f"http://{self.state.config.host}:{self.server_address[1]}/sim/files/{name}.png"

    def drop_connections(self) -> None:
        """Shut every open keep-alive connection, so its thread ends with the server."""
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# gpt-image-1 image output tokens per (quality, size), from OpenAI's image generation guide.
_IMAGE_TOKENS = {
    ("low", "1024x1024"): 272, ("low", "1024x1536"): 408, ("low", "1536x1024"): 400,
    ("medium", "1024x1024"): 1056, ("medium", "1024x1536"): 1584, ("medium", "1536x1024"): 1568,
    ("high", "1024x1024"): 4160, ("high", "1024x1536"): 6240, ("high", "1536x1024"): 6208,
    ("auto", "1024x1024"): 1056,
}


class _Abort(Exception):
    """Raised to end a request that answers nothing (hang, reset)."""


@dataclass(frozen=True)
class _Reply:
    status: int
    data: bytes
    ctype: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class SimHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's delayed
    # ACK (~40 ms per keep-alive request on Linux). TCP_NODELAY removes that stall.
    disable_nagle_algorithm = True
    server: SimServer

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:  # the reset fault already closed the socket
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silent: the JSONL request log is the record (and it never holds headers)."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("POST")

    # --- routing -------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        state = self.server.state
        raw = self._read_body()
        if path.startswith("/sim/"):
            self._sim_route(method, path, raw)
            return
        batch_reply = self.server.batches.handle(method, self.path, self.headers.get("Content-Type", ""), raw)
        if batch_reply is not None:
            self._write(_Reply(*batch_reply))
            return
        endpoint = _ROUTES.get((method, path))
        if endpoint is None:
            self._write(_error(404, f"Unknown route {method} {path} (simulator).", "not_found",
                               "invalid_request_error"))
            return
        state.begin(endpoint)
        started = time.monotonic()
        entry: dict[str, Any] = {"endpoint": endpoint, "kind": None, "status": None, "fault": None,
                                 "model": None, "response_format": None, "style": None}
        reply: _Reply | None = None
        try:
            reply = self._serve_v1(endpoint, raw, entry)
        except _Abort:
            pass  # no response is sent (status 0 in the log)
        except Exception as exc:  # a simulator bug must show as one 500, not a silently dropped request
            reply = _error(500, f"simulator internal error: {exc!r}", "simulator_bug", "server_error")
        finally:
            # Book-keeping happens *before* the reply leaves, so a client that has its answer always
            # finds it in /sim/stats and in the log (tests read both right after a call).
            entry["status"] = reply.status if reply else 0
            state.end(endpoint)
            state.log(**entry, latency_ms=round((time.monotonic() - started) * 1000, 3))
        if reply is not None:
            self._write(reply)

    def _sim_route(self, method: str, path: str, raw: bytes) -> None:
        state = self.server.state
        if method == "GET" and path == "/sim/stats":
            self._write(_json(200, {**state.stats(), "batch": self.server.batches.stats()}))
        elif method == "POST" and path == "/sim/reset":
            state.reset_stats()
            self.server.batches.reset_stats()
            self._write(_json(200, {**state.stats(), "batch": self.server.batches.stats()}))
        elif method == "POST" and path == "/sim/config":
            try:
                knobs = json.loads(raw or b"{}")
                if not isinstance(knobs, dict):
                    raise ValueError("POST /sim/config wants a JSON object of knobs")
                if "models" in knobs:
                    knobs["models"] = tuple(knobs["models"])
                self._write(_json(200, {"config": _public(state.set_config(**knobs))}))
            except (ValueError, TypeError) as exc:
                self._write(_error(400, str(exc), None, "invalid_request_error"))
        elif method == "GET" and (m := re.fullmatch(r"/sim/files/([0-9a-f]+)\.png", path)):
            state.begin("files")
            data = state.get_file(m.group(1))
            if data is None:
                self._write(_error(404, f"No simulator file {m.group(1)}.png (expired or never made).",
                                   "not_found", "invalid_request_error"))
            else:
                self._write(_Reply(200, data, "image/png"))
        else:
            self._write(_error(404, f"Unknown route {method} {path} (simulator).", "not_found",
                               "invalid_request_error"))

    def _serve_v1(self, endpoint: str, raw: bytes, entry: dict[str, Any]) -> _Reply:
        """The reply to one /v1 request (raises ``_Abort`` when none is to be sent)."""
        state = self.server.state
        if state.config.require_key and not self.headers.get("Authorization", "").startswith("Bearer "):
            return _error(401, "Missing API key (simulator started with require_key).",
                               "invalid_api_key", "invalid_request_error")
        body: dict[str, Any] = {}
        if endpoint != "models":
            try:
                body = _parse_body(raw, endpoint)
            except ValueError as exc:
                return _error(400, str(exc), None, "invalid_request_error")
            entry["model"] = body.get("model")
            fmt = body.get("response_format")
            entry["response_format"] = fmt.get("type") if isinstance(fmt, dict) else fmt
        kind = "image" if endpoint == "images" else None
        if endpoint == "images":  # what the client asked to be billed for (the log shows it was stated)
            entry["size"], entry["quality"] = body.get("size"), body.get("quality")
        if endpoint == "chat":
            kind = sim_content.classify(last_user_text(body["messages"]))
        if kind is not None:
            entry["kind"] = kind
            state.count(kind=kind)
        if (delay := state.latency_s()) > 0:
            state.stop.wait(delay)
        fault, retry_after = state.decide_fault(endpoint, time.time())
        entry["fault"] = fault
        if fault is not None:
            state.count(fault=fault)
            faulted = self._deliver_fault(fault, retry_after)
            if faulted is not None:
                return faulted
        if endpoint == "chat":
            rejected = _rejected_format(body, state)
            if rejected is not None:
                return rejected
            return _json(200, chat_completion(body, state, nontemplate=fault == "nontemplate", entry=entry))
        if endpoint == "images":
            return _json(200, images_response(body, state, self.server.file_url, bad=fault == "bad_image"))
        cfg = state.config
        return _json(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "ltgc-simulator"} for m in cfg.models
        ]})

    def _deliver_fault(self, fault: str, retry_after: float) -> _Reply | None:
        """The fault's own reply, or ``_Abort``; ``None`` for faults that alter a normal answer."""
        if fault in _STATUS_TEXT:
            status, code, err_type, message = _STATUS_TEXT[fault]
            headers = {}
            if status == 429:
                # Both forms: the SDK prefers retry-after-ms; Retry-After carries (possibly fractional) seconds.
                headers = {"Retry-After": f"{retry_after:g}", "retry-after-ms": str(math.ceil(retry_after * 1000))}
            return _error(status, message, code, err_type, headers)
        if fault == "hang":
            # Hold the request past the client's timeout, then drop it unanswered.
            self.server.state.stop.wait(self.server.state.config.hang_s)
            self.close_connection = True
            raise _Abort
        if fault == "reset":
            # SO_LINGER 0 turns close() into a TCP RST: the client sees a reset, not a clean EOF.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            raise _Abort
        if fault == "malformed_json":
            return _Reply(200, b'{"id": "sim-broken", "object": "chat.completion", "choices": [{"index": 0, ')
        return None  # nontemplate, bad_image: a 200 with altered content

    # --- low-level I/O -------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.ctype)
        self.send_header("Content-Length", str(len(reply.data)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.data)


def _json(status: int, obj: Any) -> _Reply:
    return _Reply(status, json.dumps(obj).encode("utf-8"))


def _error(status: int, message: str, code: str | None, err_type: str,
           headers: dict[str, str] | None = None) -> _Reply:
    """An OpenAI-shaped error: ``{"error": {message, type, param, code}}``."""
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return _Reply(status, json.dumps(body).encode("utf-8"), headers=tuple((headers or {}).items()))


def images_response(body: dict[str, Any], state: SimState, file_url: Any, *, bad: bool) -> dict[str, Any]:
    """gpt-image-1's answer shape: ``n`` PNGs as ``b64_json``, or as URLs under ``/sim/files/``
    (``file_url(name)``); ``usage.output_tokens`` are its image tokens for the quality and size asked for
    ("auto" and unset read as medium / 1024x1024, as the API documents)."""
    cfg = state.config
    prompt, n = body["prompt"], body["n"]
    data = []
    for i in range(n):
        if bad:  # valid base64 of bytes no image decoder accepts
            png = b"this is not an image " + hashlib.sha256(f"{i}{prompt}".encode()).digest()
        else:
            png = sim_content.png_image(prompt, side=cfg.image_side, index=i, seed=cfg.seed)
        if body.get("response_format") == "url":
            name = uuid.uuid4().hex
            state.put_file(name, png)
            data.append({"url": file_url(name)})
        else:
            data.append({"b64_json": base64.b64encode(png).decode("ascii")})
    state.count(images=n)
    text_tokens = estimate_tokens(prompt)
    image_tokens = _IMAGE_TOKENS.get((body.get("quality") or "medium", body.get("size") or "1024x1024"), 1056) * n
    return {
        "created": int(time.time()), "data": data, "output_format": "png",
        "usage": {"input_tokens": text_tokens, "output_tokens": image_tokens, "total_tokens": text_tokens + image_tokens,
                  "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0}},
    }


def _rejected_format(body: dict[str, Any], state: SimState) -> _Reply | None:
    """A 400 for a response_format the simulator will not honour (the knob, or an unknown type)."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if state.config.reject_response_format and kind != "text":
        return _error(400, f"Invalid parameter: 'response_format' of type {kind!r} is not supported with this "
                           "model (simulated).", "invalid_request_error", "invalid_request_error")
    if kind not in ("text", "json_schema"):
        return _error(400, f"response_format type {kind!r} is not supported by the simulator; use "
                           "'json_schema' or 'text'.", None, "invalid_request_error")
    return None


def _parse_body(raw: bytes, endpoint: str) -> dict[str, Any]:
    """The request JSON, checked just enough to answer; ``ValueError`` is one line for a 400."""
    try:
        body = json.loads(raw or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"Request body is not valid JSON ({exc}).") from None
    if not isinstance(body, dict):
        raise ValueError("Request body must be a JSON object.")
    if body.get("stream"):
        raise ValueError("stream=true is not supported by the simulator; send stream=false.")
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ValueError("'messages' must be a non-empty list of message objects.")
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 16:
            raise ValueError("'n' must be an integer between 1 and 16.")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError("'max_tokens' / 'max_completion_tokens' must be a positive integer.")
    else:
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            raise ValueError("'prompt' must be a non-empty string.")
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 10:
            raise ValueError("'n' must be an integer between 1 and 10.")
        body["n"] = n
    return body


def _public(config: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
