"""End to end with replies written the way chat models write them (issue 14): every answer styled
(``python -m agent.run`` in a subprocess against the loopback simulator), and structured outputs on."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.graph.checks import follows_template1, follows_template2
from agent.graph.summarize import fallback_text
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from store.manifest import read_manifest
from store.traces import read_traces
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.reliability.helpers import REPO, agent_env

K = 12
LABEL = re.compile(r"^\W*(?:template\s*\d|description|summary|refined|c_y|option)\b", re.IGNORECASE)


def _clean(text: str) -> bool:
    """No markdown emphasis, no template braces, no label prefix, no quotes around it."""
    return (not any(mark in text for mark in ("**", "{", "}", "“", '"', "\r"))
            and not LABEL.match(text) and text.startswith("A photo of the class "))


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.run", *argv], cwd=REPO, env=agent_env(),
                          capture_output=True, text=True, timeout=300)


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _counters(summary: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for entry in summary["classes"].values():
        for key, value in entry["counters"].items():
            total[key] = total.get(key, 0) + value
    return total


def test_every_answer_styled_leaves_no_markup_in_the_manifest_or_the_image_prompts(tmp_path):
    data, out, log = make_dataset(tmp_path / "data"), tmp_path / "run", tmp_path / "sim.jsonl"
    with Simulator(SimConfig(reply_style_share=1.0, seed=0, log_path=str(log))) as sim:
        argv = agent_argv(data, out, sim.base_url, "--max-rounds", "2", k=K)
        argv[argv.index("--threshold") + 1] = "0.15"  # about a third of the renders score lower: refine runs
        proc = _run(argv)
        stats = sim.stats()
    assert proc.returncode == 0, proc.stderr[-3000:]
    chat = [e for e in _log(log) if e["endpoint"] == "chat"]
    assert all(e["style"] for e in chat) and stats["styled_replies"] == len(chat) > 0
    assert {"describe", "extend", "dedupe", "summarize", "refine"} <= set(stats["by_kind"])

    summary = json.loads((out / "summary.json").read_text())
    for name, entry in summary["classes"].items():
        assert entry["status"] == "complete"
        template = entry["template"]
        assert template != fallback_text(name) and follows_template2(template, name) and _clean(template)
        assert not any("did not follow Template 2" in w for w in entry["warnings"])
    rows = read_manifest(out / "manifest.jsonl")
    assert rows and all(_clean(r.description or "") and follows_template1(r.description or "", r.class_name)
                        for r in rows)
    drawn = [r.request["prompt"] for r in read_traces(out / "traces.sqlite", role="t2i")]
    assert len(drawn) >= sum(e["N_y"] for e in summary["classes"].values())
    assert all(_clean(prompt) for prompt in drawn), [p for p in drawn if not _clean(p)][:3]

    counters = _counters(summary)
    assert counters["parse_dropped"] <= 0.05 * counters["parse_items"]
    assert counters["parse_drop_other_class"] >= 1  # the simulator's items about another class were counted
    assert counters["parse_repaired"] >= counters["parse_items"] // 3
    report = (out / "report.html").read_text()
    assert "Model replies (all classes)" in report and f"{counters['parse_repaired']} repaired" in report


def test_structured_outputs_end_to_end_and_a_server_that_refuses_them(tmp_path, caplog):
    data = make_dataset(tmp_path / "data")
    with Simulator(SimConfig(reply_style_share=1.0, seed=0)) as sim:
        out = tmp_path / "structured"
        argv = agent_argv(data, out, sim.base_url, "--llm-structured", "--lmm-structured", k=K)
        assert main(argv) == 0  # in-process: the subprocess path is the test above
        first = sim.stats()
        assert first["structured_replies"] == first["requests"]["chat"] > 0  # every chat request asked for JSON
        summary = json.loads((out / "summary.json").read_text())
        assert {e["status"] for e in summary["classes"].values()} == {"complete"}
        counters = _counters(summary)
        assert counters["structured_replies"] == first["requests"]["chat"]
        assert "structured_fallbacks" not in counters and "parse_structured_invalid" not in counters
        assert all(_clean(r.description or "") for r in read_manifest(out / "manifest.jsonl"))
        sim.reset_stats()
        assert main(argv) == 0 and sim.stats()["total"] == 0  # a rerun is all cache hits

        sim.set_config(reject_response_format=True)
        sim.reset_stats()
        out = tmp_path / "refused"
        with caplog.at_level(logging.WARNING, logger="agent.providers.structured"):
            assert main(agent_argv(data, out, sim.base_url, "--llm-structured", "--lmm-structured", k=K)) == 0
        served_structured = sim.stats()["structured_replies"]
    summary = json.loads((out / "summary.json").read_text())
    assert {e["status"] for e in summary["classes"].values()} == {"complete"}
    counters = _counters(summary)
    assert counters["structured_fallbacks"] >= 1 and "structured_replies" not in counters
    assert served_structured == 0  # every structured request got a 400, and each call fell back to text
    warnings = [r.getMessage() for r in caplog.records if "refused structured outputs" in r.getMessage()]
    assert len(warnings) == 2, warnings  # once per endpoint: sim-lmm and sim-llm
