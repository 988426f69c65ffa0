"""``python -m agent.run`` end to end: simulator + real providers + tiny random CLIP, 3 classes, K = 6."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from string import Template

import pytest

import prompts
from agent.graph.checks import follows_template1
from agent.run import main
from scripts.sim import content as sim_content
from scripts.sim.server import SimConfig, Simulator
from store.manifest import read_manifest
from store.traces import read_traces
from tests.agent.run_helpers import CLASSES, agent_argv, make_dataset

K = 6


@pytest.fixture
def sim():
    with Simulator(SimConfig(latency_ms=0, seed=0)) as server:
        yield server


@pytest.fixture
def data(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def received(monkeypatch) -> list[str]:
    """Every chat prompt text exactly as the simulator decoded it from the HTTP request."""
    texts: list[str] = []
    original = sim_content.chat_answer

    def spy(text, images, **kw):
        texts.append(text)
        return original(text, images, **kw)

    monkeypatch.setattr(sim_content, "chat_answer", spy)
    return texts


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_full_run_manifest_prompts_number_check_and_warm_rerun(tmp_path, data, sim, received):
    out = tmp_path / "run"
    assert main(agent_argv(data, out, sim.base_url, k=K)) == 0
    first = sim.stats()
    rows = read_manifest(out / "manifest.jsonl")
    summary = summary_of(out)
    for name, m_y in CLASSES.items():
        entry = summary["classes"][name]
        assert (entry["M_y"], entry["N_y"], entry["status"]) == (m_y, K - m_y, "complete")
        assert entry["described"] + entry["new_descriptions"] == K  # the number check reached K_y
        assert entry["accepted"] == K - m_y == sum(r.class_name == name for r in rows)  # μ = -1 accepts all
    assert first["by_kind"]["image"] == sum(K - m for m in CLASSES.values())  # N_y renders, no more
    for row in rows:
        image = row.resolve(out)
        assert row.source == "generated" and row.run_id == "t1" and row.round == 0
        assert row.path.startswith("images/") and image.is_file()
        assert hashlib.sha256(image.read_bytes()).hexdigest() == row.sha256
        assert follows_template1(row.description, row.class_name) and -1.0 <= row.score <= 1.0
    assert {r.label for r in rows} == {0, 1, 2}  # ImageFolder order: red fox, sea turtle, snow owl
    assert_prompts_match_files(received)
    assert {"describe", "extend", "dedupe", "summarize"} <= {sim_content.classify(t) for t in received}

    sim.reset_stats()
    manifest_bytes = (out / "manifest.jsonl").read_bytes()
    assert main(agent_argv(data, out, sim.base_url, k=K)) == 0  # same inputs, same folder
    assert sim.stats()["total"] == 0  # every call answered by the cache
    assert (out / "manifest.jsonl").read_bytes() == manifest_bytes
    assert summary_of(out)["totals"]["session"]["requests"] == 0


def test_repetition_check_rejects_the_item_the_model_invents(tmp_path, data, sim):
    sim.set_config(dedupe_invent=True)
    out = tmp_path / "run"
    assert main(agent_argv(data, out, sim.base_url, k=K)) == 0
    summary = summary_of(out)
    invented = set()
    for call in read_traces(out / "traces.sqlite", node="dedupe"):
        asked = set(_listed(call.request["messages"][-1]["content"]))
        invented |= {item for item in _listed(call.response_text or "") if item not in asked}
    assert invented  # the simulator did invent
    final = {r.description for r in read_manifest(out / "manifest.jsonl")}
    assert not invented & final
    assert all(c["counters"]["dedupe_invented"] >= 1 for c in summary["classes"].values())


def test_refinement_happens_and_stops_at_r_rounds(tmp_path, data, sim):
    out = tmp_path / "run"
    argv = agent_argv(data, out, sim.base_url, "--max-rounds", "2", k=4)
    argv[argv.index("--threshold") + 1] = "1"  # no cosine of distinct vectors reaches it: every image is refined, then rejected
    assert main(argv) == 0
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    n_total = sum(max(0, 4 - m) for m in CLASSES.values())
    assert len(rejected) == n_total and read_manifest(out / "manifest.jsonl") == []
    for row in rejected:
        assert row["status"] == "rejected" and row["round"] == 2
        assert len(row["scores"]) == 3 and len(row["history"]) == 2  # every round's score and text
    stats = sim.stats()["by_kind"]
    assert stats["refine"] == 2 * n_total and stats["image"] == 3 * n_total


def test_softmax_scores_are_probabilities_over_all_classes(tmp_path, data, sim):
    out = tmp_path / "run"
    argv = agent_argv(data, out, sim.base_url, "--score", "softmax", "--include-originals", k=4)
    argv[argv.index("--threshold") + 1] = "0"  # every probability reaches it (a μ < 0 is refused for softmax)
    assert main(argv) == 0
    everything = read_manifest(out / "manifest.jsonl")
    rows = [r for r in everything if r.source == "generated"]
    assert rows and all(0.0 < r.score < 1.0 for r in rows)
    originals = [r for r in everything if r.source == "original"]
    assert len(originals) == sum(CLASSES.values()) and all(Path(r.path).is_absolute() for r in originals)
    assert all(hashlib.sha256(Path(r.path).read_bytes()).hexdigest() == r.sha256 for r in originals)
    assert all(c["status"] == "complete" for c in summary_of(out)["classes"].values())


def test_a_failing_class_is_reported_and_the_others_finish(tmp_path, data, sim):
    out = tmp_path / "run"
    sim.inject("refusal", count=K - 1, endpoint="images")  # every render of the first class (red fox)
    # R = 0: a refused render has no refinement round left, so it is lost (with R > 0 refine rewrites it).
    argv = agent_argv(data, out, sim.base_url, "--max-classes-in-flight", "1", "--max-rounds", "0", k=K)
    assert main(argv) == 1
    classes = summary_of(out)["classes"]
    assert classes["red fox"]["status"] == "failed" and "every render failed" in classes["red fox"]["error"]
    assert classes["snow owl"]["status"] == classes["sea turtle"]["status"] == "complete"
    assert {r.class_name for r in read_manifest(out / "manifest.jsonl")} == {"snow owl", "sea turtle"}


def test_refused_renders_are_refined_and_drawn_again(tmp_path, data, sim):
    out = tmp_path / "run"
    sim.inject("refusal", count=K - 1, endpoint="images")  # the first class's first renders: content policy
    argv = agent_argv(data, out, sim.base_url, "--max-classes-in-flight", "1", "--max-rounds", "2", k=K)
    assert main(argv) == 0
    fox = summary_of(out)["classes"]["red fox"]
    assert fox["status"] == "complete" and fox["accepted"] == K - 1 and fox["refined"] == K - 1
    assert fox["counters"]["render_refused"] == K - 1 and fox["missing"] == 0


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a.__setitem__(a.index("--target-per-class") + 1, "many"), "--target-per-class: must be an integer"),
    (lambda a: a.__setitem__(a.index("--classes") + 1, "/nope/tail.txt"), "--classes /nope/tail.txt: file not found"),
    (lambda a: a.append("--resume"), "does not exist; give the --out folder of an earlier run"),
    (lambda a: a.extend(["--llm-timeout-s", "abc"]), "--llm-timeout-s"),
    (lambda a: a.__setitem__(a.index("--out") + 1, a[a.index("--classes") + 1]), "exists and is not a folder"),
    (lambda a: a.__setitem__(a.index("--images") + 1, "/nope"), "--images /nope: not a folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, data, capsys, change, message):
    argv = agent_argv(data, tmp_path / "run", "http://127.0.0.1:9/v1")
    change(argv)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def assert_prompts_match_files(texts: list[str]) -> None:
    """Every prompt is its ``prompts/*.txt`` file with only the ``${...}`` values filled in."""
    files = {"describe": "prompt1_describe", "extend": "prompt2_extend", "dedupe": "prompt3_dedupe",
             "summarize": "prompt4_summarize", "refine": "prompt5_refine"}
    for text in texts:
        kind = sim_content.classify(text)
        name = sim_content.class_name_of(text, kind)
        pattern = _file_pattern(files[kind], name)
        assert re.fullmatch(pattern, text, flags=re.S), f"{kind} prompt differs from prompts/{files[kind]}.txt"


def _file_pattern(prompt_name: str, class_name: str) -> str:
    raw = prompts.load(prompt_name)
    fixed = {"class_name": class_name,
             "template1": Template(prompts.load("template1")).substitute(class_name=class_name),
             "template2": Template(prompts.load("template2")).substitute(class_name=class_name)}
    parts = re.split(r"(\$\{\w+\})", raw)
    out = []
    for part in parts:
        key = part[2:-1] if part.startswith("${") else None
        if key in fixed:
            out.append(re.escape(fixed[key]))
        elif key is not None:
            out.append(r"\d+" if key == "count" else ".+?")
        else:
            out.append(re.escape(part))
    return "".join(out)


def _listed(prompt: str) -> list[str]:
    return re.findall(r"^\d+\. (.+)$", prompt, flags=re.M)


def test_a_class_that_raises_is_isolated_by_the_driver(tmp_path, data, sim):
    """A bug inside one class's graph (here: the scorer raising on its C_y) fails that class only."""
    import asyncio

    from agent.lifecycle import driver as runner
    from agent.lifecycle.inputs import load_inputs
    from agent.lifecycle.settings import resolve
    from agent.providers.config import load_providers_config
    from agent.providers.scorer import ClipScorer

    out = tmp_path / "run"
    settings = resolve({"classes": data / "tail.txt", "images": data / "images", "out": out, "run_id": "x",
                        "target_per_class": 4, "threshold": -1, "clip_model": str(data / "tiny-clip.json"),
                        "clip_pretrained": "none"}, {})
    roles = {role: {"base_url": sim.base_url, "per_minute": 100000} for role in ("lmm", "llm", "t2i")}
    real = ClipScorer.load(settings.clip_model, None)

    class Broken:
        context_length = real.context_length
        count_tokens = real.count_tokens
        softmax = real.softmax

        async def cosine(self, images, text):
            if "snow owl" in text:
                raise RuntimeError("scorer exploded")
            return await real.cosine(images, text)

    outcome = asyncio.run(runner.execute(settings, load_providers_config(overrides=roles),
                                         load_inputs(settings.classes, images_dir=settings.images),
                                         scorer=Broken(), log=lambda line: None))  # type: ignore[arg-type]
    assert outcome.exit_code == 1
    classes = summary_of(out)["classes"]
    assert classes["snow owl"]["status"] == "failed" and "scorer exploded" in classes["snow owl"]["error"]
    assert classes["red fox"]["status"] == classes["sea turtle"]["status"] == "complete"
    assert {r.class_name for r in read_manifest(out / "manifest.jsonl")} == {"red fox", "sea turtle"}
