"""The local t2i transport's queue (agent/providers/local_t2i.py) on a fake backend: no torch, milliseconds per test.

What is checked: one batch serves every class's pending renders, padded to the batch size; admission
happens when a batch starts (not when a render is queued); an out-of-memory error halves the batch and
says so; failures end only their own items; seeds and keys follow the settings.
"""

from __future__ import annotations

import asyncio
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.providers.config import ConfigError, RoleConfig, load_providers_config
from agent.providers.local_pipeline import LocalPipelineError
from agent.providers.local_t2i import DiffusersTransport, check_local_role, item_seed, local_image_body
from agent.providers.retry import ProviderError
from agent.providers.transport import Outbound
from store.cache import cache_key
from store.traces import TraceRecord


class FakeOOM(RuntimeError):
    pass


@dataclass
class FakeBackend:
    """Stands in for agent/providers/local_pipeline.py: records every forward pass, PNG bytes = prompt + seed."""

    devices: list[str] = field(default_factory=lambda: ["cpu"])
    oom_above: int | None = None  # a forward pass wider than this raises an out-of-memory error
    fail_with: Exception | None = None
    blank: set[str] = field(default_factory=set)  # prompts the "safety checker" blanks
    delay_s: float = 0.0
    passes: list[dict[str, Any]] = field(default_factory=list)
    loads: list[tuple[str, str]] = field(default_factory=list)
    freed: list[str] = field(default_factory=list)

    def resolve_devices(self, spec: str | None) -> list[str]:
        return list(self.devices)

    def load(self, model: str, device: str) -> str:
        self.loads.append((model, device))
        return f"pipe@{device}"

    def render(self, pipe: str, prompts: list[str], seeds: list[int], options: Any, pad_to: int) -> list[bytes | None]:
        self.passes.append({"pipe": pipe, "prompts": list(prompts), "pad_to": pad_to, "options": options})
        if self.delay_s:
            import time

            time.sleep(self.delay_s)  # runs in a worker thread, like a real forward pass
        if self.oom_above is not None and pad_to > self.oom_above:
            raise FakeOOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.fail_with is not None:
            raise self.fail_with
        return [None if p in self.blank else f"{p}|{s}".encode() for p, s in zip(prompts, seeds, strict=True)]

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, FakeOOM)

    def free_memory(self, device: str) -> None:
        self.freed.append(device)


def role(**fields: Any) -> RoleConfig:
    overrides = {"provider": "diffusers", "model": "tiny", **{k: str(v) for k, v in fields.items()}}
    return load_providers_config(env={}, overrides={"t2i": overrides}).t2i


def outbound(cfg: RoleConfig, prompt: str, *, index: int = 0, admit: Any = None) -> Outbound:
    body = local_image_body(cfg, prompt)
    key = cache_key(role="t2i", model=cfg.model, body=body, sample_index=index)
    row = TraceRecord(run_id="r", class_name="c", node="render", role="t2i", operation="image_generation",
                      model=cfg.model)
    call = Outbound("t2i", body, key, row, cfg)
    if admit is not None:
        call._admit = admit
    return call


async def test_one_forward_pass_takes_renders_of_every_class_and_pads_to_the_batch_size() -> None:
    backend = FakeBackend()
    transport = DiffusersTransport(role(batch_size=4), backend=backend, log=lambda line: None)
    calls = [outbound(transport.cfg, f"class {c} item {i}", index=i) for c in "abc" for i in range(3)]
    results = await asyncio.gather(*(transport.send(call) for call in calls))
    await transport.close()
    assert [len(p["prompts"]) for p in backend.passes] == [4, 4, 1]
    assert {p["pad_to"] for p in backend.passes} == {4}  # always the same shape
    first = backend.passes[0]["prompts"]
    assert {p.split()[1] for p in first} == {"a", "b"}  # one batch mixes classes
    assert [r["data"].split(b"|")[0].decode() for r in results] == [c.body["prompt"] for c in calls]
    assert all(r["ext"] == "png" for r in results)
    row = calls[0].row
    assert row.attempts == 1 and row.server_s >= 0 and row.queue_s >= 0
    assert row.meta["device"] == "cpu" and row.meta["batch"] == 4 and row.meta["padded_to"] == 4
    assert row.meta["seed"] == item_seed(calls[0].key) and row.meta["gpu_s"] >= 0
    assert calls[-1].row.meta["batch"] == 1
    assert backend.loads == [("tiny", "cpu")]  # loaded once, however many calls
    assert transport.stats.images == 9 and transport.stats.forward_passes == 3


async def test_a_call_is_admitted_when_its_batch_starts_not_when_it_is_queued() -> None:
    backend = FakeBackend(delay_s=0.2)
    transport = DiffusersTransport(role(batch_size=1), backend=backend, log=lambda line: None)
    admitted: list[str] = []

    def admit(call: Outbound) -> None:
        admitted.append(call.body["prompt"])

    calls = [outbound(transport.cfg, f"p{i}", index=i, admit=admit) for i in range(3)]
    tasks = [asyncio.create_task(transport.send(call)) for call in calls]
    await asyncio.sleep(0.1)  # the first forward pass is running; the others wait in the queue
    assert admitted == ["p0"]
    await asyncio.gather(*tasks)
    await transport.close()
    assert admitted == ["p0", "p1", "p2"]
    assert calls[2].row.queue_s >= 0.3  # it waited for two forward passes


async def test_a_refused_call_never_reaches_the_pipeline_and_its_batch_mates_go_on() -> None:
    backend = FakeBackend()
    transport = DiffusersTransport(role(batch_size=4), backend=backend, log=lambda line: None)

    def budget(call: Outbound) -> None:
        if call.body["prompt"] == "too much":
            raise ProviderError("budget", "--max-calls 2 reached", attempts=0)

    calls = [outbound(transport.cfg, p, admit=budget) for p in ("ok 1", "too much", "ok 2")]
    results = await asyncio.gather(*(transport.send(c) for c in calls), return_exceptions=True)
    await transport.close()
    assert isinstance(results[1], ProviderError) and results[1].kind == "budget"
    assert [p["prompts"] for p in backend.passes] == [["ok 1", "ok 2"]]
    assert calls[1].row.attempts == 0


async def test_out_of_memory_halves_the_batch_says_so_and_retries() -> None:
    backend = FakeBackend(oom_above=2)
    lines: list[str] = []
    transport = DiffusersTransport(role(batch_size=8), backend=backend, log=lines.append)
    calls = [outbound(transport.cfg, f"p{i}", index=i) for i in range(5)]
    results = await asyncio.gather(*(transport.send(c) for c in calls))
    await transport.close()
    assert [p["pad_to"] for p in backend.passes] == [8, 4, 2, 2, 2]
    assert transport.batch_size == 2 and transport.stats.halvings == 2 and backend.freed == ["cpu", "cpu"]
    oom = [line for line in lines if "out of memory" in line]
    assert oom == ["t2i: out of memory on cpu at batch size 8; retrying at batch size 4 (kept for the rest of "
                   "the run; lower --t2i-batch-size to start there)",
                   "t2i: out of memory on cpu at batch size 4; retrying at batch size 2 (kept for the rest of "
                   "the run; lower --t2i-batch-size to start there)"]
    assert len(results) == 5 and calls[0].row.attempts == 3  # three forward passes held it


async def test_out_of_memory_at_batch_size_one_is_the_items_error() -> None:
    backend = FakeBackend(oom_above=0)
    transport = DiffusersTransport(role(batch_size=2), backend=backend, log=lambda line: None)
    calls = [outbound(transport.cfg, "p", index=i) for i in range(2)]
    results = await asyncio.gather(*(transport.send(c) for c in calls), return_exceptions=True)
    await transport.close()
    assert all(isinstance(r, ProviderError) and r.kind == "bad_request" for r in results)
    assert "out of memory at batch size 1" in str(results[0])


async def test_a_pipeline_error_fails_its_batch_and_a_blanked_image_is_refused() -> None:
    backend = FakeBackend(fail_with=ValueError("`height` and `width` have to be divisible by 8"))
    transport = DiffusersTransport(role(batch_size=2), backend=backend, log=lambda line: None)
    [result] = await asyncio.gather(transport.send(outbound(transport.cfg, "p")), return_exceptions=True)
    assert isinstance(result, ProviderError) and result.kind == "bad_request"
    assert "ValueError: `height` and `width` have to be divisible by 8" in str(result)
    backend.fail_with, backend.blank = None, {"nsfw"}
    results = await asyncio.gather(*(transport.send(outbound(transport.cfg, p)) for p in ("nsfw", "fine")),
                                   return_exceptions=True)
    await transport.close()
    assert isinstance(results[0], ProviderError) and results[0].kind == "refused"
    assert isinstance(results[1], dict)


async def test_one_worker_per_device_shares_the_queue() -> None:
    backend = FakeBackend(devices=["cuda:0", "cuda:1"], delay_s=0.05)
    transport = DiffusersTransport(role(batch_size=2, devices="cuda:0,cuda:1"), backend=backend,
                                   log=lambda line: None)
    await asyncio.gather(*(transport.send(outbound(transport.cfg, f"p{i}", index=i)) for i in range(8)))
    await transport.close()
    assert sorted(backend.loads) == [("tiny", "cuda:0"), ("tiny", "cuda:1")]
    assert {p["pipe"] for p in backend.passes} == {"pipe@cuda:0", "pipe@cuda:1"}


async def test_a_load_failure_is_one_config_error_line() -> None:
    class Broken(FakeBackend):
        def load(self, model: str, device: str) -> str:
            raise LocalPipelineError(f"t2i model {model!r}: cannot load a diffusers pipeline on {device}")

    transport = DiffusersTransport(role(), backend=Broken(), log=lambda line: None)
    with pytest.raises(ConfigError, match="cannot load a diffusers pipeline on cpu"):
        await transport.load()


def test_every_pixel_setting_is_part_of_the_key_and_the_seed_follows_the_key() -> None:
    base = role(steps=2, guidance=1.5, image_size="64x64", seed=3)

    def key(cfg: RoleConfig, prompt: str = "a fox", index: int = 0) -> str:
        return cache_key(role="t2i", model=cfg.model, body=local_image_body(cfg, prompt), sample_index=index)

    variants = [role(steps=3, guidance=1.5, image_size="64x64", seed=3),
                role(steps=2, guidance=2.0, image_size="64x64", seed=3),
                role(steps=2, guidance=1.5, image_size="64x128", seed=3),
                role(steps=2, guidance=1.5, image_size="64x64", seed=4)]
    keys = {key(base), key(base, "a cat"), key(base, index=1), *(key(v) for v in variants)}
    assert len(keys) == 7
    assert key(base) == key(role(steps=2, guidance=1.5, image_size="64x64", seed=3))  # same inputs, same key
    assert item_seed(key(base)) == item_seed(key(base)) and item_seed(key(base)) != item_seed(key(base, index=1))
    body = local_image_body(base, "a fox")
    assert body == {"model": "tiny", "prompt": "a fox", "n": 1, "provider": "diffusers", "size": "64x64",
                    "steps": 2, "guidance": 1.5, "seed": 3}


def test_preflight_names_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    with pytest.raises(ConfigError) as info:
        check_local_role("t2i", role())
    assert str(info.value) == ("t2i: provider 'diffusers' needs the optional packages diffusers; install them "
                               "with: pip install -e \".[local]\" (diffusers, transformers, accelerate)")


def test_preflight_checks_the_model_folder_or_hub_id(tmp_path: Path) -> None:
    check_local_role("t2i", role(model="stabilityai/sdxl-turbo"))  # a hub id: downloaded on first use
    with pytest.raises(ConfigError, match="the folder has no model_index.json"):
        check_local_role("t2i", role(model=str(tmp_path)))
    (tmp_path / "model_index.json").write_text("{}")
    check_local_role("t2i", role(model=str(tmp_path)))
    for bad in (str(tmp_path / "missing"), "./nope", "not a hub id"):
        with pytest.raises(ConfigError, match="no such folder, and not a hub id"):
            check_local_role("t2i", role(model=bad))


async def test_the_closing_line_is_what_the_cpu_benchmark_reads() -> None:
    from scripts.bench.bench_local_t2i import _PASSES

    lines: list[str] = []
    transport = DiffusersTransport(role(batch_size=2), backend=FakeBackend(), log=lines.append)
    await asyncio.gather(*(transport.send(outbound(transport.cfg, f"p{i}", index=i)) for i in range(3)))
    await transport.close()
    match = _PASSES.search(lines[-1])
    assert match is not None and match.groups()[:3] == ("3", "2", "cpu")
