"""Progress: stage mapping, counts, spend, ETA, JSON lines, quiet and live output."""

from __future__ import annotations

import io
import json

from rich.console import Console

from agent.lifecycle.settings import GraphSettings
from agent.readout.cost import load_prices
from agent.readout.plan import expected_by_stage, plan_run
from agent.readout.progress import Progress, stage_of
from store.traces import TraceRecord


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _row(node: str, round: int = 0, **kw: object) -> TraceRecord:
    base: dict[str, object] = {"run_id": "r", "class_name": "fox", "node": node, "round": round,
                               "role": "t2i" if node == "render" else "llm",
                               "operation": "image_generation" if node == "render" else "chat",
                               "model": "m", "cost_usd": 0.01}
    base.update(kw)
    return TraceRecord(**base)  # type: ignore[arg-type]


def test_stage_of_groups_nodes() -> None:
    assert [stage_of(n) for n in ("describe", "extend", "dedupe", "summarize", "render", "evaluate")] == \
        ["describe", "extend", "extend", "extend", "render", "evaluate"]
    assert stage_of("render", 1) == "refine" and stage_of("refine", 2) == "refine"


def test_counts_spend_and_eta() -> None:
    clock = FakeClock()
    progress = Progress(mode="quiet", expected={"describe": 2, "extend": 2, "render": 4}, clock=clock)
    progress.start()
    assert progress.eta_s() is None  # nothing done yet
    clock.now += 10
    progress.on_call(_row("describe", role="lmm"))
    progress.on_call(_row("dedupe", cache_hit=True, cost_usd=0.0))
    progress.on_call(_row("render", status="error", error="x", cost_usd=0.0))
    progress.on_call(_row("render", 1))
    progress.advance("evaluate", "fox", 3)
    snap = progress.snapshot()
    assert snap["stages"]["describe"] == {"done": 1, "cached": 0, "failed": 0, "expected": 2}
    assert snap["stages"]["extend"]["cached"] == 1 and snap["stages"]["render"]["failed"] == 1
    assert snap["stages"]["refine"]["done"] == 1 and snap["stages"]["evaluate"]["done"] == 3
    assert snap["calls"] == 4 and abs(snap["spent_usd"] - 0.02) < 1e-9
    # 4 calls done in 10 s, 8 expected (evaluate is not a call): 4 left -> 10 s.
    assert progress.eta_s() == 10.0


def test_log_json_writes_one_parseable_line_per_event() -> None:
    stream = io.StringIO()
    progress = Progress(mode="log_json", stream=stream)
    with progress:
        progress.event("run_start", run_id="r", classes=2)
        progress.on_call(_row("extend"))
        progress.advance("evaluate", "fox", 2)
        progress.event("budget_reached", line="budget reached")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["run_start", "call", "progress", "budget_reached"]
    call = lines[1]
    assert call["stage"] == "extend" and call["class_name"] == "fox" and call["cost_usd"] == 0.01
    assert lines[-1]["calls"] == 1 and lines[-1]["spent_usd"] == 0.01


def test_quiet_writes_nothing_and_live_draws_every_stage() -> None:
    quiet_stream = io.StringIO()
    with Progress(mode="quiet", stream=quiet_stream) as quiet:
        quiet.on_call(_row("extend"))
    assert quiet_stream.getvalue() == ""
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    with Progress(mode="live", console=console, expected={"extend": 3}) as live:
        live.on_call(_row("extend"))
        live.event("class_done", class_name="fox", status="complete")
    text = out.getvalue()
    for stage in ("describe", "extend", "render", "evaluate", "refine"):
        assert stage in text
    assert "1/3" in text and "$0.0100 spent" in text and "class_done" in text


def test_expected_by_stage_from_plan() -> None:
    plan = plan_run([("fox", 2), ("owl", 1)], GraphSettings(target_per_class=5, max_rounds=1), {"lmm": "gpt-4o",
                    "llm": "gpt-4o-mini", "t2i": "gpt-image-1"}, load_prices())
    assert expected_by_stage(plan) == {"describe": 3, "extend": 6, "render": 7, "evaluate": 7}
