"""agent/providers/retry.py: classification, Retry-After parsing and the bounded policy (pure, no server)."""

from __future__ import annotations

import email.utils
import json

import httpx2
import openai
import pytest

from agent.providers.retry import BadResponse, ProviderError, call_with_retry, classify, retry_after_seconds

_REQ = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")


def _status_error(status: int, body: dict, headers: dict | None = None) -> openai.APIStatusError:
    cls = {400: openai.BadRequestError, 401: openai.AuthenticationError, 404: openai.NotFoundError,
           429: openai.RateLimitError}.get(status, openai.InternalServerError)
    resp = httpx2.Response(status, headers=headers or {}, request=_REQ)
    return cls(f"Error code: {status}", response=resp, body=body)


def test_retry_after_ms_wins_and_dates_are_understood() -> None:
    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "3"}) == 0.25
    assert retry_after_seconds({"Retry-After": "2.5"}) == 2.5
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=1_000_000.0) == pytest.approx(30.0)
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "86400"}) == 600.0  # clamped: stall, don't hang for a day
    assert retry_after_seconds({"retry-after": "-5"}) == 0.0


@pytest.mark.parametrize(
    ("status", "body", "retryable", "kind"),
    [
        (429, {"message": "slow down", "code": "rate_limit_exceeded"}, True, "rate_limited"),
        (429, {"message": "You exceeded your quota", "code": "insufficient_quota"}, False, "quota"),
        (500, {"message": "oops"}, True, "server"),
        (503, {"message": "overloaded"}, True, "server"),
        (400, {"message": "bad field", "code": None}, False, "bad_request"),
        (400, {"message": "rejected by the safety system", "code": "content_policy_violation"}, False, "refused"),
        (401, {"message": "bad key"}, False, "auth"),
        (404, {"message": "no such model"}, False, "not_found"),
    ],
)
def test_classify_status_errors(status: int, body: dict, retryable: bool, kind: str) -> None:
    failure = classify(_status_error(status, body, {"retry-after": "1"}))
    assert failure is not None
    assert (failure.retryable, failure.kind, failure.status) == (retryable, kind, status)
    assert failure.message == body["message"]  # the server's own words, not the SDK's wrapper
    if retryable:
        assert failure.retry_after_s == 1.0


def test_classify_transport_and_malformed_and_bugs() -> None:
    assert classify(openai.APITimeoutError(request=_REQ)).kind == "timeout"  # type: ignore[union-attr]
    assert classify(openai.APIConnectionError(request=_REQ)).retryable  # type: ignore[union-attr]
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads("{")
    assert classify(info.value).kind == "bad_response"  # type: ignore[union-attr]
    assert classify(TypeError("our bug")) is None


async def test_retries_until_success_and_counts_attempts() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise BadResponse("no choices")
        return "ok"

    seen: list[tuple[str, int]] = []
    result, attempts = await call_with_retry(flaky, max_attempts=5, initial_s=0.001, max_s=0.002,
                                             on_failure=lambda f, n: seen.append((f.kind, n)))
    assert (result, attempts, calls) == ("ok", 3, 3)
    assert seen == [("bad_response", 1), ("bad_response", 2)]


async def test_attempts_are_bounded_and_end_as_exhausted() -> None:
    calls = 0

    async def always_500() -> str:
        nonlocal calls
        calls += 1
        raise _status_error(500, {"message": "down"})

    with pytest.raises(ProviderError) as info:
        await call_with_retry(always_500, max_attempts=4, initial_s=0.001, max_s=0.002)
    assert calls == 4
    assert (info.value.kind, info.value.status, info.value.attempts) == ("exhausted", 500, 4)
    assert "down" in info.value.message


async def test_final_errors_are_not_retried_and_bugs_propagate() -> None:
    calls = 0

    async def refused() -> str:
        nonlocal calls
        calls += 1
        raise _status_error(400, {"message": "policy", "code": "content_policy_violation"})

    with pytest.raises(ProviderError) as info:
        await call_with_retry(refused, max_attempts=5, initial_s=0.001)
    assert (calls, info.value.kind, info.value.attempts, info.value.message) == (1, "refused", 1, "policy")

    async def bug() -> str:
        raise KeyError("ours")

    with pytest.raises(KeyError):
        await call_with_retry(bug, max_attempts=5, initial_s=0.001)
