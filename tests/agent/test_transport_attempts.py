"""A trace row's ``attempts`` counts requests a server saw: an attempt that never left this machine (no
connection could be made) is retried under the policy but not counted as sent.

Found by the fault suite under CPU load: a 0.5 s timeout fired while a connection was still being made,
and the traces counted one request more than the simulator had received.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from agent.providers.config import RoleConfig
from agent.providers.limiter import RoleLimiter
from agent.providers.retry import ProviderError, never_sent
from agent.providers.transport import HttpTransport, Outbound
from scripts.sim.server import SimConfig, Simulator
from store.traces import TraceRecord


def outbound(base_url: str, max_attempts: int = 3) -> Outbound:
    cfg = RoleConfig(base_url=base_url, model="sim-llm", max_attempts=max_attempts, backoff_initial_s=0.001,
                     backoff_max_s=0.005, timeout_s=5)
    request = {"model": cfg.model, "messages": [{"role": "user", "content": "say hi"}]}
    row = TraceRecord(run_id="r1", class_name="c", node="n", role="llm", operation="chat", model=cfg.model,
                      request=request)
    return Outbound("llm", request, "key-1", row, cfg)


def transport(base_url: str) -> HttpTransport:
    return HttpTransport("llm", AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0), RoleLimiter(4, 10_000),
                         lambda: False)


def sdk_error(cause: Exception) -> openai.APIError:
    """What the SDK raises for a transport failure: its own exception, *from* the HTTP library's."""
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    wrapper: openai.APIError = (openai.APITimeoutError(request=request) if isinstance(cause, httpx.TimeoutException)
                                else openai.APIConnectionError(request=request))
    wrapper.__cause__ = cause
    return wrapper


def failing_first(cause: Exception, answer: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
    calls = 0

    async def fn() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sdk_error(cause)
        return answer

    return fn


@pytest.mark.parametrize(("cause", "sent"), [
    (httpx.ConnectTimeout("connecting took too long"), 1),
    (httpx.ConnectError("connection refused"), 1),
    (httpx.ReadTimeout("no answer in time"), 2),  # the request was sent: both attempts count
])
def test_an_attempt_that_never_connected_is_retried_but_not_counted_as_sent(cause: Exception, sent: int) -> None:
    assert never_sent(sdk_error(cause)) is (sent == 1)
    call = outbound("http://127.0.0.1:9/v1")
    value = asyncio.run(transport(call.cfg.base_url).retrying(call, failing_first(cause, {"text": "hi"})))
    assert value == {"text": "hi"}
    assert call.row.attempts == sent


def test_a_server_that_refuses_every_connection_is_tried_max_attempts_times_and_nothing_is_counted() -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening: every connect is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    call = outbound(f"http://127.0.0.1:{port}/v1", max_attempts=3)
    with pytest.raises(ProviderError) as info:
        asyncio.run(transport(call.cfg.base_url).send(call))
    assert info.value.kind == "exhausted" and "3 attempt" in info.value.message
    assert call.row.attempts == 0 and info.value.attempts == 0


def test_requests_that_reach_the_simulator_are_each_counted_once() -> None:
    with Simulator(SimConfig(seed=1, rate_500=1.0)) as sim:
        call = outbound(sim.base_url, max_attempts=3)
        with pytest.raises(ProviderError):
            asyncio.run(transport(sim.base_url).send(call))
        seen = sim.stats()["total"]
    assert call.row.attempts == seen == 3
