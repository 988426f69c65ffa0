"""How one role's requests reach its model: the seam between the providers and the wire.

Contract:

- :class:`Outbound` is one cache miss on its way to a model: the role, the request body as sent, its cache
  key (also the Batch API's ``custom_id``), its trace row, and :meth:`Outbound.admit` — which a transport
  calls **at the moment the request leaves** (after the limiter, or when a batch holding it is submitted).
  ``admit`` checks the stop signal and the run's budget (agent/lifecycle/budget.py: the call's price is reserved
  then) and raises ``ProviderError`` (``stopped`` / ``budget``) instead of letting it leave; it counts once
  per call, however many attempts follow.
- A :class:`Transport` has ``await send(call) -> dict`` (the raw, cacheable answer: for chat ``text``,
  ``finish_reason``, ``input_tokens``, ``output_tokens``; for images ``data`` + ``ext`` (decoded and
  checked; a transport may also hand back ``b64`` or a ``url``, which the providers decode / download), plus ``revised_prompt`` and usage) and ``await close()``. It owns its retries and sets
  ``call.row.attempts`` (requests actually sent), ``queue_s`` and ``server_s``; a final failure is a
  ``ProviderError``. The providers own everything around it: cache, image storage, trace rows, pricing.
- :class:`HttpTransport` is the default: synchronous OpenAI-compatible requests through the ``openai``
  SDK, one per attempt, each inside the role's :class:`RoleLimiter` slot and a slot on one of the role's
  replicas (agent/providers/replicas.py: least-loaded dispatch; the row's ``meta["replica"]`` says which
  answered), under the one retry policy (agent/providers/retry.py). Other transports (the Batch API, a local diffusers pipeline) implement the same two
  methods; the graph never knows which one a role uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai

from agent.providers.config import RoleConfig
from agent.providers.images import decode_b64_image
from agent.providers.limiter import LimiterAborted, RoleLimiter
from agent.providers.replicas import ReplicaSet
from agent.providers.retry import BadResponse, Failure, ProviderError, call_with_retry, never_sent
from store.traces import TraceRecord

__all__ = ["HttpTransport", "Outbound", "Transport", "chat_value", "image_value", "stopped_error"]


@dataclass
class Outbound:
    """One request on its way out (see the module docstring)."""

    role: str
    body: dict[str, Any]
    key: str
    row: TraceRecord
    cfg: RoleConfig
    _admit: Callable[[Outbound], None] = field(repr=False, default=lambda call: None)
    # True when admission could only refuse this call (a latched budget stop, --max-calls reached, or its
    # price alone passing --max-cost): checked before and while it waits for a rate-limit slot.
    _hopeless: Callable[[Outbound], bool] = field(repr=False, default=lambda call: False)
    admitted: bool = False
    sent_at: float | None = None  # perf_counter when admitted (first attempt left)

    def admit(self) -> None:
        """Right before the request leaves: stop check + budget (price reserved). Once per call."""
        if self.admitted:
            return
        self._admit(self)
        self.admitted = True
        self.sent_at = time.perf_counter()

    def hopeless(self) -> bool:
        """Whether :meth:`admit` can only refuse this call, whatever the calls in flight turn out to cost."""
        return not self.admitted and self._hopeless(self)


class Transport(Protocol):
    async def send(self, call: Outbound) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class HttpTransport:
    """Synchronous requests through the role's SDK clients (one per replica) and its limiter, under the retry
    policy. ``client`` is one ``AsyncOpenAI`` or a :class:`ReplicaSet` of them."""

    def __init__(self, role: str, client: openai.AsyncOpenAI | ReplicaSet, limiter: RoleLimiter,
                 stop_requested: Callable[[], bool]) -> None:
        self.role, self.limiter, self._stop = role, limiter, stop_requested
        self.replicas = client if isinstance(client, ReplicaSet) else ReplicaSet.single(client)

    async def send(self, call: Outbound) -> dict[str, Any]:
        operation = self._chat if call.role in ("lmm", "llm") else self._image
        return await self.retrying(call, lambda: operation(call))

    async def close(self) -> None:
        await self.replicas.close()

    async def retrying(self, call: Outbound, fn: Callable[[], Awaitable[dict[str, Any]]],
                       *, base_attempts: int = 0) -> dict[str, Any]:
        """``fn`` under the role's retry policy; ``call.row.attempts`` counts what was really sent: an
        attempt that never reached a server (:func:`agent.providers.retry.never_sent`) counts toward the policy's
        ``max_attempts`` but not as a request."""
        cfg = call.cfg
        unsent = 0

        async def attempt() -> dict[str, Any]:
            nonlocal unsent
            try:
                return await fn()
            except Exception as exc:
                if never_sent(exc):
                    unsent += 1
                raise

        def note(_failure: Failure, attempt_no: int) -> None:
            call.row.attempts = base_attempts + attempt_no - unsent

        try:
            value, attempts = await call_with_retry(attempt, max_attempts=cfg.max_attempts,
                                                    initial_s=cfg.backoff_initial_s, max_s=cfg.backoff_max_s,
                                                    on_failure=note)
        except ProviderError as exc:
            if exc.kind in ("stopped", "budget"):  # refused before sending: that last attempt sent nothing
                exc.attempts -= 1
            exc.attempts += base_attempts - unsent
            call.row.attempts = exc.attempts
            raise
        call.row.attempts = base_attempts + attempts - unsent
        return value

    @contextlib.asynccontextmanager
    async def slot(self, call: Outbound, cost: int) -> AsyncIterator[openai.AsyncOpenAI]:
        """The limiter for one attempt, a replica's slot, then admission (stop check + budget), then the wire
        (through the client this yields). A call the budget can only refuse is refused at once, before and while
        it waits for tokens: a queue behind a low per-minute limit is refused in one go once the cap is
        reached, not one call per rate-limit slot."""
        if call.hopeless():
            call.admit()  # raises the budget refusal (admission refuses whatever hopeless() refuses)
        waited = time.perf_counter()
        try:
            async with (self.limiter.acquire(cost, abort=lambda: self._stop() or call.hopeless()),
                        self.replicas.acquire(self._stop) as replica):
                call.row.queue_s += time.perf_counter() - waited
                if len(self.replicas) > 1:
                    call.row.meta = {**call.row.meta, "replica": replica.label}
                call.admit()
                on_wire = time.perf_counter()
                try:
                    yield replica.client
                finally:
                    call.row.server_s += time.perf_counter() - on_wire
        except LimiterAborted:
            if not self._stop() and call.hopeless():
                call.admit()  # the budget's refusal, with its reason
            raise stopped_error() from None

    async def _chat(self, call: Outbound) -> dict[str, Any]:
        async with self.slot(call, 1) as client:
            resp = await client.chat.completions.create(**call.body)
        return chat_value(resp)

    async def _image(self, call: Outbound) -> dict[str, Any]:
        async with self.slot(call, int(call.body.get("n", 1))) as client:
            resp = await client.images.generate(**call.body)
        value = image_value(resp)
        if "b64" in value:  # decoded inside the attempt: an image that does not decode is retried
            value["data"], value["ext"] = await asyncio.to_thread(decode_b64_image, value.pop("b64"))
        return value


def stopped_error() -> ProviderError:
    """A call refused because the run is stopping: checked when it is admitted, and while it waits at the
    limiter (a call queued there when the signal came is never sent)."""
    return ProviderError("stopped", "the run is stopping (signal); not sent", attempts=0)


def chat_value(resp: Any) -> dict[str, Any]:
    """The cacheable part of a chat answer; :class:`BadResponse` when the answer is not a completion."""
    choices = getattr(resp, "choices", None)
    if not choices:
        raise BadResponse(f"chat answer has no choices ({type(resp).__name__})")
    choice = choices[0]
    message = getattr(choice, "message", None)
    text = getattr(message, "content", None)
    finish = getattr(choice, "finish_reason", None)
    if finish == "content_filter":
        raise ProviderError("refused", "the server's content filter stopped the answer")
    if not isinstance(text, str):
        refusal = getattr(message, "refusal", None)
        if isinstance(refusal, str) and refusal:
            raise ProviderError("refused", refusal)
        raise BadResponse("chat answer has no text content")
    usage = getattr(resp, "usage", None)
    return {"text": text, "finish_reason": finish,
            "input_tokens": _int_or_none(getattr(usage, "prompt_tokens", None)),
            "output_tokens": _int_or_none(getattr(usage, "completion_tokens", None))}


def image_value(resp: Any) -> dict[str, Any]:
    """``{"b64": ...}`` or ``{"url": ...}`` plus revised prompt and usage; :class:`BadResponse` otherwise."""
    data = getattr(resp, "data", None)
    if not data:
        raise BadResponse(f"image answer has no data ({type(resp).__name__})")
    item = data[0]
    usage = getattr(resp, "usage", None)
    value: dict[str, Any] = {
        "revised_prompt": getattr(item, "revised_prompt", None),
        "input_tokens": _int_or_none(getattr(usage, "input_tokens", None)),
        "output_tokens": _int_or_none(getattr(usage, "output_tokens", None)),
    }
    b64, url = getattr(item, "b64_json", None), getattr(item, "url", None)
    if isinstance(b64, str) and b64:
        value["b64"] = b64
    elif isinstance(url, str) and url:
        value["url"] = url
    else:
        raise BadResponse("image answer has neither b64_json nor url")
    return value


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
