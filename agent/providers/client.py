"""Model providers: cached, rate-limited, retried, traced calls to OpenAI-compatible servers.

Contract (docs/INTERFACES.md § agent/providers):

- ``await Providers.open(config, *, cache, traces, blobs, env=os.environ)`` builds one ``openai.AsyncOpenAI``
  per role (``max_retries=0``: retries are ours; explicit timeout) and one :class:`RoleLimiter` per role.
  API keys are read from ``env`` here and live only inside the SDK clients. A local role (``t2i`` with
  ``provider = "diffusers"``) gets no client and needs no key: its transport is agent/providers/local_t2i.py's
  (one the caller passes in ``transports``, or a lazily loading one).
- ``await chat(role, prompt, *, images=(), ctx, structured=None) -> ChatResult`` for ``lmm`` / ``llm``: images
  are downscaled to ``max_image_side`` and sent as data URIs; the cache key and the trace hold their sha256,
  never bytes. ``structured`` (agent/providers/structured.py) is a JSON-schema alternative of the request: sent instead
  when the role has ``structured = true`` and its endpoint has not refused one (``ChatResult.structured``);
  an HTTP 400 / 422 to it is remembered per endpoint and the plain request is sent in its place.
- ``await generate_image(prompt, *, ctx) -> ImageResult``: ``b64_json`` or URL answers, checked to decode,
  stored in the blob store; the result carries the hash.
- Per call: cache get (a hit returns at once: no limiter, no request, a trace row with ``cache_hit=True``)
  -> the role's transport (agent/providers/transport.py; by default retry policy around [limiter slot + tokens ->
  admission -> one HTTP request]) -> cache put -> trace. The limiter is taken per *attempt*, so retries
  count against max in-flight and the per-minute budget too, and a request waiting out a Retry-After does
  not hold a slot. **Admission** — the stop check and the budget (``meter``: the call's price reserved) —
  happens when the request is about to leave, after the limiter, once per call (agent/lifecycle/budget.py).
- A final failure raises :class:`ProviderError` (``kind``, ``status``, ``message``) after its trace row is
  written; failures are never cached, so a re-run tries them again.
- Once a graceful stop was asked for (agent/lifecycle/shutdown.py: SIGINT / SIGTERM), a cache miss is refused before
  it is sent with ``ProviderError(kind="stopped")`` (traced with status ``stopped``, ``attempts=0``); a
  budget refusal is traced with status ``refused``; calls already sent, and their retries, finish and are
  cached, so a resume repays nothing.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx
import httpx2
import openai

from agent.lifecycle.budget import CallMeter
from agent.lifecycle.shutdown import stop_requested
from agent.providers.config import ProvidersConfig, RoleConfig, is_local_role
from agent.providers.endpoints import resolve_api_key
from agent.providers.images import InputImageError, data_uri, decode_b64_image, image_format, prepare_image
from agent.providers.limiter import RoleLimiter
from agent.providers.local_t2i import DiffusersTransport, local_image_body
from agent.providers.replicas import Replica, ReplicaSet
from agent.providers.retry import ProviderError, call_with_retry
from agent.providers.structured import StructuredAsk, StructuredMemory
from agent.providers.transport import HttpTransport, Outbound, Transport, stopped_error
from store.blobs import BlobStore
from store.cache import CallCache, cache_key
from store.traces import TraceRecord, TraceStore

__all__ = ["CallContext", "ChatResult", "ImageResult", "ProviderError", "Providers"]

CHAT_ROLES = ("lmm", "llm")
# Traces refuse requests over 64 KB of JSON; long prompts (an 800-item list) are cut for the trace only.
_TRACE_TEXT_LIMIT = 12_000
# An image URL's download stops here: a generated image is a few MB (4096 px PNG ~ 30 MB at worst).
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


@dataclass
class CallContext:
    """Who is calling: ends up on the trace row. ``sample_index`` separates repeated samples in the cache."""

    run_id: str
    class_name: str
    node: str
    round: int = 0
    sample_index: int = 0


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_hit: bool
    call_id: str
    structured: bool = False  # the answer is the JSON object a StructuredAsk asked for
    fallback: bool = False  # structured was wanted, but the endpoint refused it: this is the text answer


@dataclass
class ImageResult:
    sha256: str
    ext: str
    cache_hit: bool
    call_id: str
    revised_prompt: str | None = None


class Providers:
    """Transports, limiters and the stores, shared by every class of a run. Build with :meth:`open`."""

    def __init__(
        self,
        config: ProvidersConfig,
        clients: Mapping[str, openai.AsyncOpenAI | ReplicaSet],
        *,
        cache: CallCache,
        traces: TraceStore,
        blobs: BlobStore,
        meter: CallMeter | None = None,
        transports: Mapping[str, Transport] | None = None,
    ) -> None:
        self.config = config
        self.meter = meter
        # max_in_flight is per replica (each server has its own slots); per_minute is the whole role's.
        self.limiters = {
            role: RoleLimiter(config.role(role).max_in_flight * _replica_count(client), config.role(role).per_minute)
            for role, client in clients.items()
        }
        # One transport per role: synchronous HTTP unless the caller brings another (Batch API, local).
        self.transports: dict[str, Transport] = {
            role: HttpTransport(role, client, self.limiters[role], stop_requested) for role, client in clients.items()
        }
        self.transports.update(transports or {})
        self.cache, self.traces, self.blobs = cache, traces, blobs
        self.structured = StructuredMemory()
        # Image URLs are pre-signed: fetched without our API key, by a plain client.
        self._download = httpx.AsyncClient(timeout=config.t2i.timeout_s, follow_redirects=True,
                                           verify=_tls_context())

    @classmethod
    async def open(
        cls,
        config: ProvidersConfig,
        *,
        cache: CallCache,
        traces: TraceStore,
        blobs: BlobStore,
        env: Mapping[str, str] = os.environ,
        meter: CallMeter | None = None,
        transports: Mapping[str, Transport] | None = None,
    ) -> Providers:
        """Build the three clients; a missing API key is a :class:`agent.providers.config.ConfigError` (before any call).

        ``meter`` (agent/lifecycle/budget.py) admits each request at the moment it is sent (a cache miss, after the
        limiter) against the run's budget, and prices every trace row before it is written.
        ``transports`` replaces the HTTP transport of the roles it names.
        """
        local = [role for role in ("lmm", "llm", "t2i") if is_local_role(config.role(role))]
        clients = {role: _build_client(role, config.role(role), env) for role in ("lmm", "llm", "t2i")
                   if role not in local}  # a local pipeline has no server: no SDK client, no API key
        transports = {**{role: DiffusersTransport(config.role(role)) for role in local}, **(transports or {})}
        return cls(config, clients, cache=cache, traces=traces, blobs=blobs, meter=meter, transports=transports)

    async def close(self) -> None:
        """Close the transports and HTTP clients (the stores belong to the caller)."""
        for transport in self.transports.values():
            await transport.close()
        await self._download.aclose()

    # ------------------------------------------------------------------------------------------ chat
    async def chat(
        self, role: str, prompt: str, *, images: Sequence[bytes] = (), ctx: CallContext,
        structured: StructuredAsk | None = None,
    ) -> ChatResult:
        """One chat completion (text, plus images for ``lmm``), structured when the role asks for it."""
        if role not in CHAT_ROLES:
            raise ValueError(f"chat role must be one of {CHAT_ROLES}, got {role!r}")
        cfg = self.config.role(role)
        if structured is not None and self.structured.use(role, cfg):
            try:
                result = await self._chat(role, structured.prompt, images, ctx, structured.response_format)
            except ProviderError as exc:
                if not self.structured.refused(role, cfg, exc):
                    raise
            else:
                result.structured = True
                return result
        result = await self._chat(role, prompt, images, ctx)
        result.fallback = structured is not None and bool(cfg.structured)
        return result

    async def _chat(
        self, role: str, prompt: str, images: Sequence[bytes], ctx: CallContext,
        response_format: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """One chat request under the call order of the module docstring."""
        cfg = self.config.role(role)
        row = _new_row(ctx, role, "chat", cfg.model)
        started = time.perf_counter()
        try:
            sent = [await asyncio.to_thread(prepare_image, b, cfg.max_image_side) for b in images]
        except InputImageError as exc:
            self._fail(row, started, ProviderError("bad_request", f"input image: {exc}", attempts=0))
        body, key_body = _chat_bodies(cfg, prompt, sent, response_format)
        row.request = _trace_request(key_body)
        key = cache_key(role=role, model=cfg.model, body=key_body, sample_index=ctx.sample_index,
                        namespace=self.config.cache_namespace)
        cached = await self.cache.get(key)
        hit = cached is not None
        if cached is not None:
            value = cached
        else:
            value = await self._send(Outbound(role, body, key, row, cfg, self._admit, self._hopeless), started)
            await self.cache.put(key, value, role=role, model=cfg.model)
        row.response_text, row.finish_reason = value["text"], value["finish_reason"]
        row.input_tokens, row.output_tokens = value["input_tokens"], value["output_tokens"]
        self._done(row, started, hit)
        return ChatResult(value["text"], value["finish_reason"], value["input_tokens"], value["output_tokens"],
                          hit, row.call_id)

    # ---------------------------------------------------------------------------------------- images
    async def generate_image(self, prompt: str, *, ctx: CallContext) -> ImageResult:
        """One image for ``prompt`` (role ``t2i``), stored in the blob store."""
        cfg = self.config.t2i
        row = _new_row(ctx, "t2i", "image_generation", cfg.model)
        started = time.perf_counter()
        body = image_body(cfg, prompt)
        row.request = _trace_request(body)
        key = cache_key(role="t2i", model=cfg.model, body=body, sample_index=ctx.sample_index,
                        namespace=self.config.cache_namespace)
        cached = await self.cache.get(key)
        # A hit is only good while its blob is still on disk (someone may have pruned blobs/).
        hit = cached is not None and _blob_on_disk(self.blobs, cached)
        if cached is not None and hit:
            value = cached
        else:
            value = await self._image_miss(Outbound("t2i", body, key, row, cfg, self._admit, self._hopeless), started)
            await self.cache.put(key, value, role="t2i", model=cfg.model)
        row.images = 0 if hit else int(body.get("n", 1))
        row.response_text = value.get("revised_prompt")
        row.input_tokens, row.output_tokens = value.get("input_tokens"), value.get("output_tokens")
        self._done(row, started, hit)
        return ImageResult(value["sha256"], value["ext"], hit, row.call_id, value.get("revised_prompt"))

    async def _image_miss(self, call: Outbound, started: float) -> dict[str, Any]:
        """Generate (and download, for URL answers) one image, store its bytes; the cacheable value."""
        value = await self._send(call, started)
        if "b64" in value:
            try:
                value["data"], value["ext"] = await asyncio.to_thread(decode_b64_image, value.pop("b64"))
            except Exception as exc:  # noqa: BLE001 - a broken image is the answer's fault: one final error
                self._fail(call.row, started, ProviderError("bad_response", f"image does not decode: {exc}",
                                                            attempts=call.row.attempts))
        elif "url" in value:
            url = value.pop("url")
            cfg = call.cfg
            # Downloaded under the same policy, but a failed download does not pay for a new image.
            try:
                fetched, more = await call_with_retry(lambda: self._download_once(url), max_attempts=cfg.max_attempts,
                                                      initial_s=cfg.backoff_initial_s, max_s=cfg.backoff_max_s)
            except ProviderError as exc:
                exc.attempts += call.row.attempts
                self._fail(call.row, started, exc)
            value.update(fetched)
            call.row.attempts += more
        value["sha256"] = await asyncio.to_thread(self.blobs.put, value.pop("data"), value["ext"])
        return value

    async def _download_once(self, url: str) -> dict[str, Any]:
        """Fetch an image URL, streamed and capped at ``MAX_DOWNLOAD_BYTES`` (a server, or a URL hijacked in
        transit, must not be able to fill memory); over the cap is a final ``bad_response``, not retried."""
        async with self._download.stream("GET", url) as resp:
            if resp.is_error:
                await resp.aread()  # the error path reads the body for its message
                resp.raise_for_status()
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
                raise _too_large(url, f"{int(declared)} bytes announced")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise _too_large(url, f"more than {MAX_DOWNLOAD_BYTES} bytes sent")
                chunks.append(chunk)
        data = b"".join(chunks)
        ext = await asyncio.to_thread(image_format, data)
        return {"data": data, "ext": ext}

    # --------------------------------------------------------------------------------------- helpers
    async def _send(self, call: Outbound, started: float) -> dict[str, Any]:
        """The role's transport sends ``call``; a final failure writes its trace row and raises."""
        try:
            return await self.transports[call.role].send(call)
        except ProviderError as exc:
            self._fail(call.row, started, exc)
        except Exception as exc:  # a bug, not a provider failure: still leave a trace row, then re-raise
            row = call.row
            row.status, row.error, row.error_kind = "error", f"{type(exc).__name__}: {exc}", "internal"
            row.latency_s = time.perf_counter() - started
            self._trace(row)
            raise

    def _admit(self, call: Outbound) -> None:
        """Right before ``call`` leaves: the stop signal, then the budget (its price reserved)."""
        if stop_requested():  # a class stopped here resumes at this node; the call is made then
            raise stopped_error()
        if self.meter is not None:
            price = self.meter.reserve(call.row, max_tokens=call.cfg.max_tokens)
            self.meter.admit(call.row, price)

    def _hopeless(self, call: Outbound) -> bool:
        """Whether the budget can only refuse ``call`` (agent/lifecycle/budget.py ``Budget.hopeless``)."""
        return self.meter is not None and self.meter.hopeless(call.row, max_tokens=call.cfg.max_tokens)

    def _fail(self, row: TraceRecord, started: float, exc: ProviderError) -> NoReturn:
        # Unsent calls are never "error": refused by our budget, or stopped by a signal (nothing left).
        row.status = {"budget": "refused", "stopped": "stopped"}.get(exc.kind, "error")
        row.error, row.error_kind = exc.message, exc.kind
        row.attempts = exc.attempts
        row.latency_s = time.perf_counter() - started
        self._trace(row)
        raise exc

    def _done(self, row: TraceRecord, started: float, hit: bool) -> None:
        row.cache_hit = hit
        row.latency_s = time.perf_counter() - started
        self._trace(row)

    def _trace(self, row: TraceRecord) -> None:
        if self.meter is not None:
            self.meter.record(row)  # sets cost_usd and settles the budget before the row is stored
        self.traces.add(row)


def _replica_count(client: openai.AsyncOpenAI | ReplicaSet) -> int:
    return len(client) if isinstance(client, ReplicaSet) else 1


def _build_client(role: str, cfg: RoleConfig, env: Mapping[str, str]) -> openai.AsyncOpenAI | ReplicaSet:
    """One SDK client, or a :class:`ReplicaSet` of them when the role names several base URLs."""
    if len(cfg.base_urls) == 1:
        return _sdk_client(role, cfg, cfg.base_url, env)
    replicas = [Replica(url, _sdk_client(role, cfg, url, env)) for url in cfg.base_urls]
    return ReplicaSet(replicas, max_in_flight=cfg.max_in_flight)


def _sdk_client(role: str, cfg: RoleConfig, base_url: str, env: Mapping[str, str]) -> openai.AsyncOpenAI:
    # Keep-alive pool sized to the limiter so a burst of max_in_flight requests reuses connections.
    limits = httpx2.Limits(max_connections=max(100, 2 * cfg.max_in_flight),
                           max_keepalive_connections=max(20, cfg.max_in_flight))
    return openai.AsyncOpenAI(
        api_key=resolve_api_key(role, cfg, env),
        base_url=base_url,
        timeout=cfg.timeout_s,
        max_retries=0,  # one retry policy (ours); SDK retries would multiply with it
        http_client=openai.DefaultAsyncHttpxClient(limits=limits, verify=_tls_context()),
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verified TLS context for every client: building one costs ~0.1-0.3 s (CA bundle parsing),
    and each HTTP client would otherwise build its own."""
    try:
        import certifi  # the CA bundle httpx itself defaults to

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - certifi ships with httpx
        return ssl.create_default_context()


def _too_large(url: str, what: str) -> ProviderError:
    """The over-the-cap error; the URL without its query (pre-signed URLs carry tokens there)."""
    parts = urllib.parse.urlsplit(url)
    where = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return ProviderError("bad_response", f"image download {where}: {what}, over the "
                         f"{MAX_DOWNLOAD_BYTES // (1024 * 1024)} MiB limit for one image", attempts=0)


def _blob_on_disk(blobs: BlobStore, value: Mapping[str, Any]) -> bool:
    """The cached image's blob file exists. One stat of its known path: ``BlobStore.exists`` lists the
    folder for any extension, which cost a third of a warm rerun's CPU time (scripts/bench/bench_agent.py)."""
    try:
        return blobs.path(str(value.get("sha256", "")), str(value.get("ext", ""))).is_file()
    except ValueError:  # a malformed cached value (BlobError is a ValueError): a miss, answered afresh
        return False


def _new_row(ctx: CallContext, role: str, operation: str, model: str) -> TraceRecord:
    return TraceRecord(run_id=ctx.run_id, class_name=ctx.class_name, node=ctx.node, round=ctx.round,
                       role=role, operation=operation, model=model)


def _chat_bodies(
    cfg: RoleConfig, prompt: str, images: Sequence[tuple[bytes, str]],
    response_format: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(body sent, body for the cache key and trace)``: identical but images as hashes, not base64.
    A ``response_format`` is in both: a structured answer is never served for a text request, nor back."""
    if images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        keyed: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        for data, mime in images:
            parts.append({"type": "image_url", "image_url": {"url": data_uri(data, mime)}})
            keyed.append({"type": "image_url", "image_url": {"sha256": hashlib.sha256(data).hexdigest(),
                                                             "mime": mime}})
        content: Any = parts
        key_content: Any = keyed
    else:
        content = key_content = prompt
    extras = {k: v for k, v in (("temperature", cfg.temperature), ("max_tokens", cfg.max_tokens),
                                ("response_format", response_format)) if v is not None}
    body = {"model": cfg.model, "messages": [{"role": "user", "content": content}], **extras}
    key_body = {"model": cfg.model, "messages": [{"role": "user", "content": key_content}], **extras}
    return body, key_body


def image_body(cfg: RoleConfig, prompt: str) -> dict[str, Any]:
    """The images request: size and quality always stated when configured, so the bill matches the plan."""
    if is_local_role(cfg):  # a local pipeline keys its own settings (steps, guidance, seed)
        return local_image_body(cfg, prompt)
    extras = (("size", cfg.image_size), ("quality", cfg.image_quality), ("response_format", cfg.response_format))
    return {"model": cfg.model, "prompt": prompt, "n": 1, **{k: v for k, v in extras if v is not None}}


def _trace_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request for the trace row, with over-long texts cut (the trace store caps rows at 64 KB)."""
    text = json.dumps(body)
    if len(text) <= 4 * _TRACE_TEXT_LIMIT:
        return dict(body)
    return json.loads(json.dumps(body), object_hook=_cut_long_texts)  # type: ignore[no-any-return]


def _cut_long_texts(obj: dict[str, Any]) -> dict[str, Any]:
    for k, v in obj.items():
        if isinstance(v, str) and len(v) > _TRACE_TEXT_LIMIT:
            obj[k] = f"{v[:_TRACE_TEXT_LIMIT]}... [cut: {len(v)} chars in all]"
    return obj
