"""Replicas per role (agent/providers/replicas.py): several base URLs for one role, least-loaded dispatch,
per-replica in-flight limits, a replica that refuses connections skipped then probed, the replica on the
trace row, never in the cache key. End to end: ``python -m agent.run`` against two simulators, one of
which is stopped mid-run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.providers.config import ConfigError, load_providers_config
from agent.providers.replicas import PROBE_INITIAL_S, Replica, ReplicaSet
from agent.providers.retry import ProviderError
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from store.manifest import read_manifest
from store.traces import read_traces
from tests.agent.run_helpers import agent_argv, make_dataset

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ config
def test_base_url_takes_a_comma_list_or_a_toml_list(tmp_path: Path) -> None:
    cfg = load_providers_config(env={"LTGC_LLM_BASE_URL": "http://a:1/v1/, http://b:2/v1"})
    assert cfg.llm.base_urls == ["http://a:1/v1", "http://b:2/v1"]
    toml = tmp_path / "c.toml"
    toml.write_text('[t2i]\nbase_url = ["http://a:1/v1", "http://b:2/v1"]\n', encoding="utf-8")
    assert load_providers_config(toml, env={}).t2i.base_urls == ["http://a:1/v1", "http://b:2/v1"]
    assert load_providers_config(env={}).lmm.base_urls == ["https://api.openai.com/v1"]


@pytest.mark.parametrize(("env", "message"), [
    ({"LTGC_LLM_BASE_URL": "http://a/v1,ftp://b"}, "LTGC_LLM_BASE_URL: must be an http(s):// URL"),
    ({"LTGC_LLM_BASE_URL": "http://a/v1,http://a/v1/"}, "LTGC_LLM_BASE_URL: must be an http(s):// URL"),
    ({"LTGC_LLM_BASE_URL": "http://a/v1,http://b/v1", "LTGC_LLM_BATCH": "true"},
     "LTGC_LLM_BATCH: the Batch API goes to one server"),
])
def test_bad_replica_lists_are_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_providers_config(env=env)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------- dispatch
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_least_loaded_with_per_replica_limits() -> None:
    async def go() -> tuple[list[str], list[int]]:
        replicas = ReplicaSet([Replica("http://a/v1", None), Replica("http://b/v1", None)], max_in_flight=2)
        release = asyncio.Event()
        order: list[str] = []
        peaks = {"http://a/v1": 0, "http://b/v1": 0}

        async def one() -> None:
            async with replicas.acquire() as replica:
                order.append(replica.url)
                peaks[replica.url] = max(peaks[replica.url], replica.in_flight)
                await release.wait()

        tasks = [asyncio.create_task(one()) for _ in range(6)]
        await asyncio.sleep(0.05)
        held = len(order)  # 2 + 2 slots: the other two wait
        release.set()
        await asyncio.gather(*tasks)
        return order[:held], list(peaks.values())

    first, peaks = asyncio.run(go())
    assert first == ["http://a/v1", "http://b/v1", "http://a/v1", "http://b/v1"]  # alternates: least loaded
    assert peaks == [2, 2]  # never more than max_in_flight on one replica


def test_a_refusing_replica_is_skipped_then_probed_again() -> None:
    clock = Clock()
    a, b = Replica("http://a/v1", None), Replica("http://b/v1", None)
    replicas = ReplicaSet([a, b], max_in_flight=4, clock=clock)

    async def attempt(fail_on: str | None = None) -> str:
        async with replicas.acquire() as replica:
            if replica.url == fail_on:
                raise httpx.ConnectError("refused")  # no connection could be made
            return replica.url

    async def go() -> list[str]:
        seen = []
        with pytest.raises(httpx.ConnectError):
            await attempt(fail_on="http://a/v1")  # a refuses: down for PROBE_INITIAL_S
        seen += [await attempt(), await attempt()]  # both to b
        clock.now += PROBE_INITIAL_S
        seen.append(await attempt())  # a probed again, and answers: back in rotation
        seen.append(await attempt())
        return seen

    seen = asyncio.run(go())
    assert seen[:2] == ["http://b/v1", "http://b/v1"]
    assert seen[2] == "http://a/v1" and a.down_until is None
    assert a.failures == 0 and (a.sent, b.sent) == (3, 2)  # ties go to the replica that has sent least


# ---------------------------------------------------------------------- two simulators, one stopped
def test_run_on_two_replicas_one_stopped_mid_run(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    with Simulator(SimConfig(latency_ms=40, seed=0)) as a, Simulator(SimConfig(latency_ms=40, seed=0)) as b:
        url_a, url_b = a.base_url, b.base_url
        urls = f"{url_a},{url_b}"
        argv = agent_argv(data, tmp_path / "run", urls, "--lmm-max-attempts", "4", "--llm-max-attempts", "4",
                          "--t2i-max-attempts", "4", "--lmm-max-in-flight", "2", "--llm-max-in-flight", "2",
                          "--t2i-max-in-flight", "2")
        proc = subprocess.Popen([sys.executable, "-m", "agent.run", *argv], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while sum(a.stats()["requests"].values()) < 6:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the run never reached replica a"
                time.sleep(0.01)
            a.close()  # replica a goes away mid-run: refused connections from now on
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err.decode()[-2000:]
        served_by_b = sum(b.stats()["requests"].values())
    rows = [r for r in read_traces(tmp_path / "run" / "traces.sqlite") if not r.cache_hit]
    assert rows and all(r.status == "ok" for r in rows), [(r.status, r.error) for r in rows if r.status != "ok"]
    by_replica: dict[str, int] = {}
    for row in rows:
        by_replica[row.meta["replica"]] = by_replica.get(row.meta["replica"], 0) + 1
    assert set(by_replica) == {url_a, url_b}  # both served, and each row says which
    assert served_by_b >= by_replica[url_b]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert all(c["status"] == "complete" for c in summary["classes"].values())

    # Replicas never enter the cache key: the same run on one server is all cache hits, same images.
    images = sorted(r.sha256 for r in read_manifest(tmp_path / "run" / "manifest.jsonl"))
    with Simulator(SimConfig(latency_ms=0, seed=0)) as c:
        assert main(agent_argv(data, tmp_path / "run", c.base_url)) == 0  # in-process: no second start-up
        assert sum(c.stats()["requests"].values()) == 0  # every call answered from the cache
    assert sorted(r.sha256 for r in read_manifest(tmp_path / "run" / "manifest.jsonl")) == images


def test_every_replica_down_is_a_final_connection_error() -> None:
    """No replica answers: the retry policy ends the call (it does not hang waiting for one)."""
    from agent.providers.client import _build_client
    from agent.providers.config import RoleConfig
    from agent.providers.limiter import RoleLimiter
    from agent.providers.transport import HttpTransport, Outbound
    from store.traces import TraceRecord

    cfg = RoleConfig(base_url="http://127.0.0.1:9/v1,http://127.0.0.1:7/v1", model="m", max_attempts=3,
                     backoff_initial_s=0.001, backoff_max_s=0.01, timeout_s=2)
    client: Any = _build_client("llm", cfg, {})
    transport = HttpTransport("llm", client, RoleLimiter(4, 10_000), lambda: False)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    row = TraceRecord(run_id="r", class_name="c", node="n", role="llm", operation="chat", model="m", request=body)

    async def go() -> None:
        try:
            await transport.send(Outbound("llm", body, "k", row, cfg))
        finally:
            await transport.close()

    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        asyncio.run(go())
    assert info.value.kind == "exhausted" and row.attempts == 0  # nothing reached a server
    assert time.monotonic() - started < 2 * PROBE_INITIAL_S + 2  # both probed once, then given up


def test_a_probe_refused_before_sending_leaves_the_replica_down() -> None:
    """A stop or budget refusal inside the replica's slot sent nothing: it must not bring a down replica back."""
    clock = Clock()
    a = Replica("http://a/v1", None, down_until=0.5, failures=1)
    replicas = ReplicaSet([a], max_in_flight=2, clock=clock)

    async def refused() -> None:
        async with replicas.acquire():
            raise ProviderError("stopped", "not sent", attempts=0)

    clock.now = 1.0  # the back-off is over: this would be the probe
    with pytest.raises(ProviderError):
        asyncio.run(refused())
    assert a.down_until == 0.5 and a.failures == 1 and not a.probing
