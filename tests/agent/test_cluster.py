"""``--ray``: diffusers renders and CLIP scoring on a pool of Ray actors (agent/providers/cluster.py), on a local
Ray instance on loopback (2 CPUs, CPU actors: no GPU here) with the tiny random diffusers pipeline and the
tiny CLIP config.

Checked: the same sha256s as in-process; an actor killed mid-batch hands its batch to the other actor
and nothing else is rendered twice; CLIP scores equal the in-process scorer's; the CLI end to end
(subprocess) gives the in-process run's images; ``--dry-run`` shows the cluster; no Ray without the flag.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import ray  # the cluster extra: `dev` pulls it in, so CI runs these

from agent.providers.cluster import RayPool, RayRenderBackend
from agent.providers.cluster_scorer import RayScorer
from agent.providers.config import RoleConfig, load_providers_config
from agent.providers.local_pipeline import RenderOptions
from agent.providers.local_t2i import DiffusersTransport, local_image_body
from agent.providers.scorer import ClipScorer
from agent.providers.transport import Outbound
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from scripts.sim.tiny_diffusers import build
from store.cache import cache_key
from store.manifest import read_manifest
from store.traces import TraceRecord
from tests.agent.run_helpers import TINY_CLIP, agent_argv, make_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One local Ray instance for the module (start-up takes seconds): its GCS address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=80 * 1024 * 1024)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def t2i_config(model: Path, devices: str) -> Any:
    return load_providers_config(env={}, overrides={"t2i": {
        "provider": "diffusers", "model": str(model), "devices": devices, "image_size": "32x32", "steps": "2",
        "guidance": "1.0", "batch_size": "2"}})


def calls(cfg: RoleConfig, n: int) -> list[Outbound]:
    out = []
    for i in range(n):
        body = local_image_body(cfg, f"a photo of the class fox, number {i}")
        key = cache_key(role="t2i", model=cfg.model, body=body, sample_index=0, namespace="")
        row = TraceRecord(run_id="r", class_name="fox", node="render", role="t2i", operation="image_generation",
                          model=cfg.model, request=body)
        out.append(Outbound("t2i", body, key, row, cfg))
    return out


async def render_all(transport: DiffusersTransport, outbound: Sequence[Outbound]) -> list[str]:
    try:
        values = await asyncio.gather(*(transport.send(call) for call in outbound))
    finally:
        await transport.close()
    return [hashlib.sha256(v["data"]).hexdigest() for v in values]


class KillOnce(RayRenderBackend):
    """Kills the first actor while its second batch is on it: the actor dies mid-batch."""

    def __init__(self, pool: RayPool) -> None:
        super().__init__(pool)
        self.calls: dict[str, int] = {}
        self.killed: str | None = None

    def render(self, pipe: Any, prompts: Sequence[str], seeds: Sequence[int], options: RenderOptions,
               pad_to: int) -> list[bytes | None]:
        actor, model = pipe
        self.calls[actor.label] = self.calls.get(actor.label, 0) + 1
        if self.killed is None and actor is self.pool.actors[0] and self.calls[actor.label] == 2:
            self.killed = actor.label
            ref = actor.handle.render.remote(model, list(prompts), list(seeds), options, pad_to)
            ray.kill(actor.handle, no_restart=True)
            try:
                return list(ray.get(ref))
            except Exception:
                actor.lost = True
                raise
        return super().render(pipe, prompts, seeds, options, pad_to)


def test_actors_render_and_score_like_in_process_and_survive_a_killed_actor(cluster: str, tiny_sd: Path,
                                                                            tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    clip, texts = str(data / "tiny-clip.json"), ["red fox", "snow owl", "sea turtle"]
    images = sorted((data / "images").rglob("*.png"))
    reference_cfg = t2i_config(tiny_sd, "cpu").t2i
    expected = asyncio.run(render_all(DiffusersTransport(reference_cfg, log=lambda _: None),
                                      calls(reference_cfg, 10)))
    local = ClipScorer.load(clip, None, device="cpu")
    config = t2i_config(tiny_sd, "cpu:0,cpu:1")
    pool = RayPool.start(cluster, config)  # one pool, both models on each actor: as a run has it
    try:
        scorer = RayScorer.load(pool, clip, None)

        async def scores() -> tuple[list[float], list[float]]:
            return (await scorer.cosine(images, "a photo of a red fox"), await scorer.softmax(images, texts, 1))

        before = asyncio.run(scores())
        backend = KillOnce(pool)
        lines: list[str] = []
        transport = DiffusersTransport(config.t2i, log=lines.append, backend=backend)
        outbound = calls(config.t2i, 10)
        got = asyncio.run(render_all(transport, outbound))
        after = asyncio.run(scores())  # actor 0 is gone: every scoring call goes to actor 1
    finally:
        pool.close()
    assert backend.killed is not None, "the kill never happened"
    assert got == expected  # byte-identical to in-process, whichever actor rendered each image
    assert any("was lost" in line for line in lines)
    twice = [c for c in outbound if c.row.attempts == 2]
    assert len(twice) == 2 and all(c.row.attempts == 1 for c in outbound if c not in twice)  # the lost batch only
    assert {c.row.meta["device"] for c in twice} == {pool.actors[1].label}  # finished on the other actor
    assert transport.stats.images == 10
    # CLIP: the same code on the same device type; only float32 rounding differs (an actor runs fewer threads).
    assert scorer.cache_identity == local.cache_identity  # scores cached alike in-process and on actors
    want = (asyncio.run(local.cosine(images, "a photo of a red fox")), asyncio.run(local.softmax(images, texts, 1)))
    for got_scores in (before, after):
        assert got_scores[0] == pytest.approx(want[0], abs=1e-6) and got_scores[1] == pytest.approx(want[1], abs=1e-6)
    assert scorer.count_tokens("a red fox") == local.count_tokens("a red fox")
    assert json.loads((data / "tiny-clip.json").read_text()) == TINY_CLIP


def test_cli_on_the_cluster_gives_the_in_process_images_through_ctrl_c_and_resume(
        cluster: str, tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    with Simulator(SimConfig(latency_ms=20, seed=0)) as sim:
        def argv(out: Path, *extra: str) -> list[str]:
            return agent_argv(data, out, sim.base_url, "--t2i-provider", "diffusers", "--t2i-model", str(tiny_sd),
                              "--t2i-size", "32x32", "--t2i-steps", "2", "--t2i-guidance", "1.0",
                              "--t2i-batch-size", "2", "--quiet", *extra)

        assert main(argv(tmp_path / "local", "--t2i-devices", "cpu")) == 0
        reference = sim.stats()["total"]
        capsys.readouterr()
        assert main(argv(tmp_path / "plan", "--ray", cluster, "--t2i-devices", "cpu:0,cpu:1", "--dry-run")) == 0
        plan = capsys.readouterr().out
        assert "0 GPU(s)" in plan and "starts 2 actor(s) (0 GPU, 2 CPU)" in plan
        # From outside: a run on the cluster, stopped by Ctrl-C (SIGINT) once it is sending, then resumed.
        out = tmp_path / "ray"
        proc = subprocess.Popen([sys.executable, "-m", "agent.run", *argv(out, "--ray", cluster, "--t2i-devices",
                                 "cpu:0,cpu:1")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while sim.stats()["total"] < reference + 3:
                assert proc.poll() is None, proc.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the run on the cluster never started sending"
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, err[-3000:]
        assert "ray: 2 actor(s)" in err and "--resume" in err
        assert main(argv(out, "--ray", cluster, "--t2i-devices", "cpu:0,cpu:1", "--resume")) == 0
        assert sim.stats()["total"] == 2 * reference  # the stop and the resume repaid nothing

    def hashes(folder: Path) -> list[str]:
        return sorted(r.sha256 for r in read_manifest(folder / "manifest.jsonl"))

    assert hashes(out) == hashes(tmp_path / "local") and hashes(out)
    assert json.loads((out / "config.json").read_text())["run"]["ray"] == cluster


def test_gpu_bench_ray_path_runs_on_a_cpu_actor(cluster: str, tmp_path: Path) -> None:
    """scripts/gpu_bench.sh's Ray part (scripts/bench/gpu_bench_ray.py), its CPU path: same PNGs both ways."""
    from scripts.bench import gpu_bench_ray

    out = tmp_path / "ray.json"
    assert gpu_bench_ray.main(["--dry", "--size", "32", "--steps", "1", "--sizes", "1,2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["identical"] and set(result["by_batch"]) == {"1", "2"}
    for row in result["by_batch"].values():
        assert row["in_process_s_per_batch"] > 0 and row["ray_s_per_batch"] > 0 and row["identical_png"]
    assert result["empty_call_ms"] > 0


def test_without_the_flag_ray_is_never_imported(tmp_path: Path, tiny_sd: Path) -> None:
    data = make_dataset(tmp_path / "data")
    code = ("import sys; from agent.run import main; "
            f"rc = main({agent_argv(data, tmp_path / 'run', 'http://127.0.0.1:9/v1', '--dry-run')!r}); "
            "assert rc == 0, rc; assert 'ray' not in sys.modules, 'ray was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_bad_ray_address_is_one_line(tmp_path: Path) -> None:
    from agent.lifecycle.settings import SettingsError, resolve

    base = {"out": str(tmp_path / "o"), "classes": str(tmp_path / "c.txt")}
    assert resolve({**base, "ray": "none"}, {}).ray is None
    assert resolve({**base, "ray": "10.0.0.5:6379"}, {}).ray == "10.0.0.5:6379"
    with pytest.raises(SettingsError) as info:
        resolve({**base, "ray": "two words"}, {})
    assert str(info.value) == ("--ray: must be local, auto, a cluster address (HOST:6379 or ray://HOST:10001) or "
                               "none, got 'two words'")
