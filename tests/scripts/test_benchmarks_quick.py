"""Each benchmark's --quick / --dry mode runs end to end and reports coherent numbers.

No timing assertions (CI machines are shared and noisy): these check that the benchmarks keep working and
that what they measure behaves as claimed — equal work at every concurrency, the shared limiter's cap
respected, a warm rerun answered with zero requests, batched and one-at-a-time scores agreeing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from scripts.bench import bench_agent, bench_clip, gpu_bench_gen, gpu_bench_train
from scripts.bench.bench_probe import percentile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_percentile_is_nearest_rank() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 95) == 4.0
    assert percentile([7.0], 1) == 7.0
    assert percentile([], 50) == 0.0


def test_bench_agent_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "agent.json"
    assert bench_agent.main(["--quick", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    levels = res["throughput"]
    assert [t["concurrency"] for t in levels] == [1, 8]
    # The simulator is deterministic and threshold -1 accepts every image: every level does the same work.
    assert len({t["requests"] for t in levels}) == 1 and levels[0]["requests"] > 0
    for t in levels:
        assert 1 <= t["peak_in_flight"] <= t["concurrency"]  # one shared limiter of c slots
        assert t["wall_s"] > 0 and t["bound_s"] > 0 and t["sdk_floor_s"] > 0 and t["httpx_floor_s"] > 0
        assert t["sdk_cpu_ms_per_request"] > 0 and t["httpx_cpu_ms_per_request"] > 0
    assert levels[0]["peak_in_flight"] == 1  # c = 1 really is sequential
    over = res["overhead"]
    calls = over["provider"]
    assert calls["chat_miss_ms"]["n"] == calls["chat_hit_ms"]["n"] == 10 + 5  # llm + lmm, cold then warm
    assert calls["image_miss_ms"]["n"] == calls["image_hit_ms"]["n"] == 5
    assert set(over["graph"]) == {"sync", "async"}  # both checkpoint modes, side by side
    for graph in over["graph"].values():
        assert graph["graph_requests"] == graph["graph_calls"] > 0  # fresh folder: one request per call
        assert graph["checkpoint_write_ms"]["writes_per_call"] > 0
    warm = res["warm"]
    assert warm["cold_requests"] > 0 and warm["warm_requests"] == 0  # no rerun of either mode sent one
    assert {m: len(w) for m, w in warm["warm_walls_s"].items()} == {"sync": 2, "async": 2}
    assert warm["checkpoint_db_bytes"] > 0 and res["peak_rss_mib"] > 0
    printed = capsys.readouterr().out
    assert "## throughput" in printed and "## warm rerun" in printed


def test_bench_clip_quick(tmp_path: Path) -> None:
    out = tmp_path / "clip.json"
    assert bench_clip.main(["--quick", "--json", str(out)]) == 0  # raises if the two modes' scores differ
    rows = json.loads(out.read_text())
    assert {r["mode"].split(" ")[0] for r in rows} == {"batched", "one-at-a-time"}
    assert all(r["model"] == "tiny" and r["images"] == 16 and r["images_per_s"] > 0 for r in rows)


def test_gpu_bench_dry_runs_every_path_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    assert gpu_bench_train.main(["--dry", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    assert info["device"] == "cpu" and info["dry"] is True
    assert [r["path"] for r in info["results"]] == ["decoded", "jpeg-load", "jpeg"]
    assert all(r["images_per_s"] > 0 for r in info["results"])
    assert info["trainable_params"] > 0  # LoRA adapters were injected and left trainable


def test_gpu_bench_gen_dry_times_every_batch_and_step_count_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gen.json"
    assert gpu_bench_gen.main(["--dry", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    assert info["device"] == "cpu" and info["dry"] is True
    rows = info["generate"]["rows"]
    assert [(r["batch"], r["steps"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["images_per_s"] > 0 for r in rows) and info["generate"]["unet_params"] > 0
    paths = [r["path"].split(" (")[0] for r in info["score"]["rows"]]
    assert paths == ["ClipScorer", "model only", "model only"] and info["score"]["images"] == 8
    assert all(r["images_per_s"] > 0 for r in info["score"]["rows"])


def test_gpu_bench_sdxl_config_is_sdxl_sized() -> None:
    """The generation benchmark's UNet is SDXL's (2.57 B parameters), built without weights on the meta device."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**gpu_bench_gen.SDXL_UNET)
    assert round(sum(p.numel() for p in unet.parameters()) / 1e9, 2) == 2.57


def test_gpu_bench_sh_rejects_an_unknown_verb() -> None:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh"), "bogus"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("usage: bash scripts/gpu_bench.sh fetch|run|dry")


def test_bench_loader_ab_measures_every_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.bench import bench_loader_ab

    assert bench_loader_ab.main(["--rounds", "1", "--steps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rates = {line.split()[0]: float(line.split()[2]) for line in lines[1:]}
    assert set(rates) == {"torchvision", "torch-normalize", "trainer.data"} and all(r > 0 for r in rates.values())
    import trainer.data
    import trainer.driver
    from trainer.data import build_transforms

    assert trainer.driver.build_transforms is build_transforms  # the swaps are undone
    assert trainer.data.ToNormalizedTensor is not bench_loader_ab.TorchOpsNormalize


def test_numpy_normalisation_equals_the_torch_ops_it_replaced() -> None:
    import numpy as np
    from PIL import Image

    from scripts.bench.bench_loader_ab import TorchOpsNormalize
    from trainer.data import ToNormalizedTensor

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    rng = np.random.default_rng(3)
    for side, mode in ((28, "RGB"), (31, "L")):
        image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).convert(mode)
        assert ToNormalizedTensor(mean, std)(image).equal(TorchOpsNormalize(mean, std)(image))


def test_bench_loop_overhead_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.bench import bench_loop_overhead
    from tests.scripts.test_lt_tools import fake_fashion_mnist

    data_dir = fake_fashion_mnist(tmp_path / "fm", train_per_class=60, test_per_class=10)
    out = tmp_path / "loop.json"
    assert bench_loop_overhead.main(["--quick", "--rounds", "1", "--data-dir", str(data_dir),
                                     "--work", str(tmp_path / "w"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["summary"]) == {"plain", "balancemix"} and res["steps"] == 3
    for s in res["summary"].values():
        for key in ("trainer", "bare", "data"):
            assert s[f"{key}_wall"] > 0 and s[f"{key}_cpu"] > 0
        assert s["ratio_cpu"] == pytest.approx(s["trainer_cpu"] / s["bare_cpu"], rel=1e-2)
    assert "| balancemix |" in capsys.readouterr().out


def test_bench_parse_scores_the_corpus_and_a_past_parser(capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.bench import bench_parse

    assert bench_parse.main(["--baseline", "852c5fb", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    now, before = res["current"]["total"], res["baseline"]["total"]
    assert res["corpus"]["replies"] >= 80 and now["expected"] == before["expected"] > 0
    assert now["clean"] == now["expected"] and before["clean"] < before["expected"]  # the old parser lost some
    assert bench_parse.main(["--baseline", "no-such-ref"]) == 2


def test_bench_replies_tiny(tmp_path: Path) -> None:
    from scripts.bench import bench_replies

    out = tmp_path / "replies.json"
    assert bench_replies.main(["--classes", "2", "--k", "5", "--modes", "text", "refused",
                               "--json", str(out)]) == 0
    text, refused = json.loads(out.read_text())["results"]
    for res in (text, refused):
        assert res["complete"] == res["classes"] == 2 and res["c_y_fallbacks"] == 0
        assert res["manifest_marked"] == res["image_prompts_marked"] == res["c_y_marked"] == 0
        assert res["styled_replies"] > 0 and res["dropped_share"] <= 0.05
    assert refused["chat_400"] >= 1 and refused["structured_warnings"] == 2
    assert refused["counters"]["structured_fallbacks"] >= 1
