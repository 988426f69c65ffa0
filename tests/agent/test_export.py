"""``python -m agent.export``: a simulator run -> imagefolder / parquet / webdataset -> datasets / webdataset load them
-> the trainer trains on each exactly as on the run's manifest. Also the card, atomicity, idempotence, errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from agent.export import writers
from agent.export.cli import main as export_main
from agent.run import main as agent_main
from scripts.sim.server import SimConfig, Simulator
from store.manifest import read_manifest
from tests.agent.run_helpers import agent_argv, make_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "trainer" / "model_configs" / "ltgc-tiny-vit.json"
FORMATS = ("imagefolder", "parquet", "webdataset")
SECRET = "sk-export-test-never-written"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished simulator run with its originals in the manifest (3 classes, K = 6)."""
    root = tmp_path_factory.mktemp("export")
    data = make_dataset(root / "data")
    os.environ["OPENAI_API_KEY"] = SECRET
    try:
        with Simulator(SimConfig(latency_ms=0, seed=0)) as sim:
            assert agent_main(agent_argv(data, root / "run", sim.base_url, "--include-originals", "--quiet")) == 0
    finally:
        os.environ.pop("OPENAI_API_KEY", None)
    return root / "run"


@pytest.fixture(scope="module")
def exports(run: Path) -> dict[str, Path]:
    out = {}
    for fmt in FORMATS:
        out[fmt] = run.parent / "ex" / fmt
        assert export_main([str(run), "--format", fmt, "--out", str(out[fmt]), "--include-originals"]) == 0
    return out


def _names(run: Path) -> list[str]:
    classes = json.loads((run / "config.json").read_text())["classes"]
    return [c["name"] for c in sorted(classes, key=lambda c: c["label"])]


def test_datasets_and_webdataset_load_every_format_with_the_runs_classes(run: Path, exports: dict[str, Path]) -> None:
    import datasets
    import webdataset as wds

    rows = read_manifest(run / "manifest.jsonl")
    names = _names(run)
    cache = str(run.parent / "hf-cache")
    for fmt in ("imagefolder", "parquet"):  # the folder itself: its card's configs give label a ClassLabel
        ds = datasets.load_dataset(str(exports[fmt]), cache_dir=cache)["train"]
        assert ds.features["label"].names == names
        assert len(ds) == len(rows)
        assert [ds.features["label"].int2str(x) for x in ds["label"]] == [r.class_name for r in rows]
        assert ds["sha256"] == [r.sha256 for r in rows]
        assert ds[0]["image"].size == (24, 24)
    plain = datasets.load_dataset("imagefolder", data_dir=str(exports["imagefolder"]), cache_dir=cache)["train"]
    assert plain["label"] == [r.label for r in rows] and plain["class_name"] == [r.class_name for r in rows]
    by_parquet = datasets.load_dataset("parquet", data_dir=str(exports["parquet"] / "data"), cache_dir=cache)["train"]
    assert by_parquet.features["label"].names == names  # the parquet schema carries the features too
    shards = sorted(str(p) for p in exports["webdataset"].glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert [s["json"]["class_name"] for s in samples] == [r.class_name for r in rows]
    assert [int(s["cls"]) for s in samples] == [r.label for r in rows]
    assert all(s["png"].mode == "RGB" for s in samples)
    raw = list(wds.WebDataset(shards, shardshuffle=False))  # undecoded: the very bytes the run accepted
    assert [hashlib.sha256(s["png"]).hexdigest() for s in raw] == [r.sha256 for r in rows]
    generated = next(s["json"] for s in samples if s["json"]["source"] == "generated")
    assert generated["model_t2i"] == "sim-t2i" and generated["c_y"] and generated["clip_score"] is not None


def _train(spec: str, names: Path, out: Path) -> dict[str, object]:
    from trainer.train import main as train_main

    argv = ["--train", spec, "--generated", spec, "--test", spec, "--class-names", str(names), "--out", str(out),
            "--mode", "balancemix", "--model", str(TINY), "--pretrained", "none", "--epochs", "1",
            "--batch-size", "4", "--workers", "0", "--threads", "1", "--device", "cpu", "--many", "10", "--few", "4",
            "--seed", "0"]
    assert train_main(argv) == 0
    metrics = {k: v for k, v in json.loads((out / "metrics.json").read_text()).items()
               if k not in ("images_per_s", "train_seconds")}  # wall-clock numbers; everything else must match
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {"metrics": metrics, "losses": [e.get("loss") for e in log], "per_class": (out / "per_class.csv").read_text()}


def test_the_trainer_gets_identical_metrics_from_every_format(run: Path, exports: dict[str, Path]) -> None:
    names = run.parent / "names.txt"
    names.write_text("\n".join(_names(run)) + "\n")
    want = _train(str(run / "manifest.jsonl"), names, run.parent / "tr-manifest")
    for fmt, folder in exports.items():
        got = _train(str(folder), names, run.parent / f"tr-{fmt}")
        assert got == want, fmt


def test_an_export_folder_is_its_own_class_list(run: Path, exports: dict[str, Path]) -> None:
    from trainer.samples import load_classes, read_listing

    for folder in exports.values():
        classes = load_classes(None, str(folder))
        assert list(classes.names) == _names(run)
        assert len(read_listing(folder, classes).samples) == len(read_manifest(run / "manifest.jsonl"))


def test_the_card_has_the_hub_header_and_the_provenance_but_no_key(run: Path, exports: dict[str, Path]) -> None:
    for fmt, folder in exports.items():
        text = (folder / "README.md").read_text()
        header = yaml.safe_load(text.split("---\n")[1])
        assert header["tags"] == ["synthetic"] and header["task_categories"] == ["image-classification"]
        assert header["size_categories"] == ["n<1K"] and "license" not in header
        assert header["configs"][0]["data_files"][0]["split"] == "train"
        body = text.split("---\n", 2)[2]
        for needed in ("arXiv:2403.05854", "`sim-lmm`", "127.0.0.1", "K (images per class): 6", "prompt2_extend.txt",
                       "| 0 | red fox | 1 | 5 | 0 | 6 |", "Cost:", "Dates:", "commit", "Synthetic", "CLIP-filtered",
                       "licence", "hf upload --repo-type dataset", "License:** not set", "The run was finished"):
            assert needed in body, (fmt, needed)
        base_url = json.loads((run / "config.json").read_text())["providers"]["llm"]["base_url"]
        assert base_url not in text  # the host only, never the URL's path
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path


def test_filters_keep_the_runs_numbering(run: Path, tmp_path: Path) -> None:
    rows = read_manifest(run / "manifest.jsonl")
    keep = tmp_path / "keep.txt"
    keep.write_text("# only one\nsnow owl\n")
    out = tmp_path / "owl"
    assert export_main([str(run), "--format", "imagefolder", "--out", str(out), "--classes", str(keep),
                        "--min-score", "0.1"]) == 0
    meta = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    want = [r for r in rows if r.class_name == "snow owl" and r.source == "generated" and (r.score or 0) >= 0.1]
    assert [m["sha256"] for m in meta] == [r.sha256 for r in want] and want
    assert {m["label"] for m in meta} == {want[0].label}
    assert json.loads((out / "ltgc-export.json").read_text())["classes"] == _names(run)


def test_exports_are_idempotent_and_atomic(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wds"
    args = [str(run), "--format", "webdataset", "--out", str(out), "--shard-mb", "0.002"]
    assert export_main(args) == 0
    shards = sorted(out.glob("*.tar"))
    assert len(shards) > 2 and all(p.name == f"{i:06d}.tar" for i, p in enumerate(shards))
    for shard in shards:  # bounded: a new shard starts once one holds --shard-mb, so all but its last sample fit
        with tarfile.open(shard) as tar:
            sizes: dict[str, int] = {}
            for m in tar.getmembers():
                sizes[m.name.split(".")[0]] = sizes.get(m.name.split(".")[0], 0) + m.size
        assert sum(list(sizes.values())[:-1]) < 0.002 * 1024 * 1024, shard
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert export_main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before

    def crash(*a: object, **k: object) -> list[str]:
        (a[3] / "000000.tar").write_bytes(b"half")  # type: ignore[operator]
        raise KeyboardInterrupt

    monkeypatch.setattr(writers, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        export_main([*args[:-1], "0.5"])  # other options: a new export, killed half way
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wds"]  # no staging folder left behind
    with pytest.raises(KeyboardInterrupt):
        export_main([str(run), "--format", "webdataset", "--out", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


def test_an_interrupted_run_exports_what_it_has_and_says_so(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    with Simulator(SimConfig(latency_ms=0, seed=0)) as sim:
        assert agent_main(agent_argv(data, tmp_path / "run", sim.base_url, "--max-calls", "24", "--quiet")) == 3
        out = tmp_path / "ex"
        assert export_main([str(tmp_path / "run"), "--format", "parquet", "--out", str(out)]) == 0
        doc = json.loads((out / "ltgc-export.json").read_text())
        assert doc["run_finished"] is False and doc["run_state"] == "interrupted"
        assert 0 < doc["rows"] < 12
        assert "**not finished** (interrupted" in (out / "README.md").read_text()
        assert agent_main(agent_argv(data, tmp_path / "run", sim.base_url, "--resume", "--quiet")) == 0
    assert export_main([str(tmp_path / "run"), "--format", "parquet", "--out", str(out)]) == 0
    doc = json.loads((out / "ltgc-export.json").read_text())
    assert doc["run_finished"] is True and doc["rows"] == len(read_manifest(tmp_path / "run" / "manifest.jsonl"))


def test_bad_input_is_one_line_and_exit_2(run: Path, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    unknown = tmp_path / "classes.txt"
    unknown.write_text("red fox\nunicorn\n")
    cases = [([str(tmp_path), "--format", "parquet", "--out", str(tmp_path / "o")], "not a run folder"),
             ([str(run), "--format", "parquet", "--out", str(tmp_path / "full")], "not an earlier export"),
             ([str(run), "--format", "parquet", "--out", str(tmp_path / "o"), "--classes", str(unknown)],
              f"{unknown}:2: class 'unicorn' is not a class"),
             ([str(run), "--format", "csv", "--out", str(tmp_path / "o")], "invalid choice")]
    for argv, expected in cases:
        proc = subprocess.run([sys.executable, "-m", "agent.export", *argv], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_the_trainer_reads_an_hf_metadata_file_and_says_which_row_is_bad(tmp_path: Path) -> None:
    from trainer.samples import DataError, read_listing

    (tmp_path / "a.png").write_bytes(b"x")
    meta = tmp_path / "metadata.jsonl"
    meta.write_text('{"file_name": "a.png", "label": "owl"}\n')
    assert read_listing(meta, ["fox", "owl"]).samples[0].label == 1
    meta.write_text('{"file_name": "a.png", "label": 0}\n{"label": 1}\n')
    with pytest.raises(DataError, match=r"metadata.jsonl:2: an HF ImageFolder row needs 'file_name'"):
        read_listing(meta, ["fox", "owl"])


def test_ltgc_lt_runs_outside_the_checkout(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("ltgc-lt")
    if not exe.is_file():
        pytest.fail(f"{exe}: not installed; run pip install -e '.[dev]'")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 0 and "make-lt" in proc.stdout


def test_an_unfinalized_class_is_exported_from_its_blobs(tmp_path: Path) -> None:
    """Accepted in the checkpoint but not yet copied to images/: the bytes come from the run's blob store."""
    from agent.export.source import _state_rows
    from store.blobs import BlobStore

    sha = BlobStore(tmp_path / "blobs").put(b"png bytes", "png")
    item = {"status": "accepted", "sha256": sha, "ext": "png", "description": "A photo of the class fox.",
            "scores": [0.1, 0.3], "round": 1}
    gone = {**item, "sha256": "0" * 64}  # accepted, but its bytes are nowhere: not exported
    state = {"slug": "fox", "label": 4, "items": [item, gone, {**item, "status": "rejected", "sha256": "1" * 64}]}
    rows = _state_rows(tmp_path, {"fox": state}, "r1")
    assert [(r.file, r.label, r.score, r.round, r.source) for r in rows] == \
        [(BlobStore(tmp_path / "blobs").path(sha, "png"), 4, 0.3, 1, "generated")]
