"""The one retry policy for every provider call (chat, image generation, image download).

- Retried (bounded by ``max_attempts``): HTTP 408 / 409 / 429 / 5xx, timeouts, connection errors, and
  malformed answers (:class:`BadResponse`: broken JSON, missing fields, undecodable image bytes).
- Never retried: 400 / 401 / 403 / 404 / 422, content-policy refusals, and 429 ``insufficient_quota``
  (a billing stop, not a rate limit). These end the item at once with a :class:`ProviderError` carrying the
  server's own message.
- Waits: exponential back-off with jitter (tenacity), but never shorter than the server's ``retry-after-ms``
  or ``Retry-After`` (seconds or an HTTP date) header.
- Anything else (a ``TypeError`` from our own code, say) is a bug and propagates unchanged.

:func:`classify` and :func:`retry_after_seconds` are pure; :func:`call_with_retry` runs the policy.
"""

from __future__ import annotations

import email.utils
import functools
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

import httpx
import openai
import pydantic
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

T = TypeVar("T")

# A server asking for more than this is treated as asking for this: a run should stall, not hang for a day.
MAX_RETRY_AFTER_S = 600.0
# asyncio may wake a timer up to one clock tick early; "at least Retry-After" needs a small margin.
_HINT_MARGIN_S = 0.01
_REFUSAL_CODES = frozenset({"content_policy_violation", "moderation_blocked", "content_filter"})
_REFUSAL_WORDS = ("content policy", "safety system", "content_policy", "moderation")


# What can go wrong with one call. Final kinds end an item (or, for STOP_KINDS, stop its class resumably);
# the transient kinds are what a retried attempt failed with, and end an item only as ``exhausted``.
ErrorKind = Literal[
    # final for the item
    "refused",       # content policy / moderation: never retried
    "bad_request",   # 400 / 422: the request itself is wrong
    "auth",          # 401 / 403
    "not_found",     # 404: wrong model name or URL
    "exhausted",     # max_attempts transient failures in a row
    "bad_response",  # an answer that cannot be used (malformed JSON, no choices, broken image)
    # stop the class, resumably (its checkpoint is kept; --resume continues it)
    "budget",        # our own cap: --max-cost / --max-calls refused to send the call
    "quota",         # the server's billing stop (429 insufficient_quota): retrying cannot help
    "stopped",       # a graceful stop (SIGINT / SIGTERM) was asked for: not sent
    # transient (retried)
    "rate_limited", "server", "timeout", "connection",
]
ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))
STOP_KINDS: frozenset[str] = frozenset({"budget", "quota", "stopped"})


class ProviderError(Exception):
    """The final failure of one call: ``kind`` (:data:`ErrorKind`), ``status`` (HTTP, when one came back),
    ``message`` (the server's own words), ``attempts`` (requests actually sent for it).

    >>> ProviderError("quota", "You exceeded your quota", status=429).stops_class
    True
    >>> ProviderError("refused", "policy").stops_class
    False
    """

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ProviderError kind {kind!r}")
        super().__init__(f"{kind}: {message}" if status is None else f"{kind} (HTTP {status}): {message}")
        self.kind: ErrorKind = kind
        self.status = status
        self.message = message
        self.attempts = attempts

    @property
    def stops_class(self) -> bool:
        """True when the failure is not the item's: the class stops where it is and ``--resume`` continues
        it (our budget, the server's quota, a graceful stop); False when only this item fails."""
        return self.kind in STOP_KINDS


class BadResponse(Exception):
    """An answer that arrived but cannot be used (malformed JSON, no choices, broken image bytes)."""


@dataclass(frozen=True)
class Failure:
    """What :func:`classify` makes of one exception."""

    retryable: bool
    kind: ErrorKind
    status: int | None
    message: str
    retry_after_s: float | None = None


def classify(exc: BaseException, *, now: float | None = None) -> Failure | None:
    """Map an exception to a :class:`Failure`, or None when it is not a provider failure (a bug).

    >>> classify(BadResponse("no choices")).kind
    'bad_response'
    """
    if isinstance(exc, ProviderError):  # raised inside an attempt (e.g. a content-filter stop): final
        return Failure(False, exc.kind, exc.status, exc.message)
    if isinstance(exc, BadResponse | json.JSONDecodeError | pydantic.ValidationError):
        return Failure(True, "bad_response", None, _first_line(exc))
    if isinstance(exc, openai.APIResponseValidationError):
        return Failure(True, "bad_response", exc.status_code, _first_line(exc))
    if isinstance(exc, openai.APIStatusError):
        headers = dict(exc.response.headers.items())
        return _from_status(exc.status_code, _server_message(exc.body, exc.message), _code(exc), headers, now)
    if isinstance(exc, httpx.HTTPStatusError):
        resp = exc.response
        return _from_status(resp.status_code, resp.text[:500] or str(exc), None, dict(resp.headers.items()), now)
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return Failure(True, "timeout", None, "request timed out")
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        return Failure(True, "connection", None, _first_line(exc) or type(exc).__name__)
    return None


_NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})


def never_sent(exc: BaseException) -> bool:
    """True when an attempt failed before its request left this machine: no connection could be made
    (connect error or timeout) or none was free in the pool. Such an attempt is retried like any other
    timeout, but no server saw it, so it is not counted as a request sent. The SDK raises its own
    exception *from* the HTTP library's (httpx, or the httpx2 fork the openai SDK ships with), so the
    cause chain is searched by class name.

    >>> import httpx
    >>> never_sent(httpx.ConnectTimeout("slow")), never_sent(httpx.ReadTimeout("slow"))
    (True, False)
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        cls = type(seen)
        if cls.__name__ in _NOT_SENT and cls.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def failure_from_status(status: int, message: str, code: str | None = None) -> Failure:
    """The policy's reading of an HTTP status that did not come as an exception (a Batch API output line).

    >>> failure_from_status(503, "overloaded").kind, failure_from_status(400, "bad").retryable
    ('server', False)
    """
    return _from_status(status, message, code, {}, None)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, or None. ``retry-after-ms`` wins over ``retry-after``.

    >>> retry_after_seconds({"retry-after-ms": "1500"}), retry_after_seconds({"Retry-After": "2"})
    (1.5, 2.0)
    """
    lower = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = lower.get(name)
        if raw is None:
            continue
        try:
            return _clamp(float(raw) * scale)
        except ValueError:
            pass
        if name == "retry-after":  # an HTTP date
            try:
                when = email.utils.parsedate_to_datetime(raw).timestamp()
            except (TypeError, ValueError):
                continue
            return _clamp(when - (time.time() if now is None else now))
    return None


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    max_attempts: int,
    initial_s: float = 1.0,
    max_s: float = 60.0,
    on_failure: Callable[[Failure, int], None] | None = None,
) -> tuple[T, int]:
    """Run ``fn`` under the policy; return ``(result, attempts)`` or raise :class:`ProviderError`.

    ``on_failure(failure, attempt)`` is told about every failed attempt (for traces and counters).
    """
    attempts = 0

    async def attempt() -> T:
        nonlocal attempts
        attempts += 1
        try:
            return await fn()
        except Exception as exc:
            failure = classify(exc)
            if failure is not None and on_failure is not None:
                on_failure(failure, attempts)
            raise

    stop, wait, retry = _policy(max_attempts, initial_s, max_s)
    retrying = AsyncRetrying(stop=stop, wait=wait, retry=retry, reraise=True)
    try:
        result: T = await retrying(attempt)
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            raise
        raise _final_error(failure, attempts) from exc
    return result, attempts


# ------------------------------------------------------------------------------------------------ helpers
@functools.lru_cache(maxsize=64)
def _policy(max_attempts: int, initial_s: float, max_s: float) -> tuple[Any, Any, Any]:
    """The stateless stop / wait / retry parts of a policy, built once per setting: building the jitter
    wait parses its durations, a measurable share of a call's CPU at 64 requests in flight."""
    return (stop_after_attempt(max_attempts), _WaitAtLeastRetryAfter(initial_s, max_s),
            retry_if_exception(_is_retryable))


class _WaitAtLeastRetryAfter(wait_base):
    """Exponential jitter, raised to the server's Retry-After when it sent one."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._backoff = wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = float(self._backoff(retry_state))
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        failure = classify(exc) if exc is not None else None
        if failure is not None and failure.retry_after_s is not None:
            return max(backoff, failure.retry_after_s + _HINT_MARGIN_S)
        return backoff


def _is_retryable(exc: BaseException) -> bool:
    failure = classify(exc)
    return failure is not None and failure.retryable


def _final_error(failure: Failure, attempts: int) -> ProviderError:
    if failure.retryable and failure.kind != "bad_response":
        message = f"gave up after {attempts} attempt(s); last error: {failure.message}"
        return ProviderError("exhausted", message, status=failure.status, attempts=attempts)
    return ProviderError(failure.kind, failure.message, status=failure.status, attempts=attempts)


def _from_status(
    status: int, message: str, code: str | None, headers: Mapping[str, str], now: float | None
) -> Failure:
    hint = retry_after_seconds(headers, now)
    lowered = message.lower()
    if status == 429 and code == "insufficient_quota":
        return Failure(False, "quota", status, message)
    if status in (408, 409, 429) or status >= 500:
        return Failure(True, "rate_limited" if status == 429 else "server", status, message, hint)
    if code in _REFUSAL_CODES or any(w in lowered for w in _REFUSAL_WORDS):
        return Failure(False, "refused", status, message)
    kind: ErrorKind = "auth" if status in (401, 403) else "not_found" if status == 404 else "bad_request"
    return Failure(False, kind, status, message)


def _server_message(body: Any, fallback: str) -> str:
    """The server's own words: ``body["message"]`` or ``body["error"]["message"]`` when present."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def _code(exc: openai.APIStatusError) -> str | None:
    if exc.code:
        return exc.code
    body = exc.body
    if isinstance(body, Mapping):
        for key in ("code", "type"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
