"""The dry-run planner (pure part): bounds follow the graph's loops; cost follows the price table."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from agent.lifecycle.settings import GraphSettings
from agent.readout.cost import load_prices
from agent.readout.plan import (
    Span,
    plan_class,
    plan_json,
    plan_run,
    prompt_overheads,
    render_plan,
)

MODELS = {"lmm": "gpt-4o", "llm": "gpt-4o-mini", "t2i": "gpt-image-1"}


def test_calls_per_role_follow_the_loop_limits() -> None:
    s = GraphSettings(target_per_class=10, max_rounds=2, max_describe=3, max_extend_rounds=4, max_dedupe_passes=3)
    plan = plan_class("fox", 4, s, MODELS, load_prices(), prompt_overheads("fox"), {})
    assert (plan.m_y, plan.n_y) == (4, 6)
    assert plan.calls["lmm"] == Span(3, 6)  # --max-describe 3, each re-asked at most once
    # llm: extend 1 .. 2 + 2 x 1 (a weak model: half of each reply usable, two passes refilling 2 items),
    # dedupe 1..3, summarize 1, refine 0..6*2
    assert plan.calls["llm"] == Span(1 + 1 + 1, 4 + 3 + 1 + 12)
    assert plan.calls["t2i"] == Span(6, 6 + 12)  # N_y renders, + R re-renders each at worst
    assert plan.total_calls == Span(3 + 3 + 6, 6 + 20 + 18)
    assert plan.input_tokens.low < plan.input_tokens.high
    assert plan.cost_usd is not None and 0 < plan.cost_usd.low < plan.cost_usd.high


def test_extend_rounds_follow_the_graph_loop() -> None:
    """The planner and the graph read one per-round batch rule (agent/graph/constants.py)."""
    from agent.graph import extend
    from agent.graph.constants import EXTEND_BATCH, ask_count
    from agent.readout.plan import extend_round_span

    assert extend.ask_count is ask_count and ask_count(10_000) == EXTEND_BATCH
    span = extend_round_span(800, GraphSettings(max_extend_rounds=50))
    assert span.low == 16 and span.low < span.high <= 150  # 800 / 50 per round at best; far below 50 x 3


def test_class_with_enough_images_plans_nothing() -> None:
    plan = plan_class("fox", 12, GraphSettings(target_per_class=10), MODELS, load_prices(), prompt_overheads("fox"), {})
    assert plan.n_y == 0 and plan.total_calls == Span(0, 0) and plan.cost_usd == Span(0, 0)


def test_image_cost_dominates_and_tracks_quality() -> None:
    s = GraphSettings(target_per_class=20, max_rounds=0)
    prices = load_prices()
    low = plan_class("fox", 2, s, MODELS, prices, prompt_overheads("fox"), {"quality": "low"})
    high = plan_class("fox", 2, s, MODELS, prices, prompt_overheads("fox"), {"quality": "high"})
    assert low.cost_usd is not None and high.cost_usd is not None
    # 18 images at $0.01088 vs $0.1664 (1024x1024): the difference is exactly the image prices.
    assert high.cost_usd.low - low.cost_usd.low == pytest.approx(18 * (0.1664 - 0.01088))


def test_unknown_model_makes_cost_unknown_not_a_crash() -> None:
    plan = plan_run([("fox", 1)], GraphSettings(target_per_class=5), {**MODELS, "llm": "llama-local"}, load_prices())
    assert plan.classes[0].cost_usd is None and plan.total("cost_usd") is None
    assert plan_json(plan)["total"]["cost_usd"] is None


def test_run_totals_json_and_table() -> None:
    plan = plan_run([("red fox", 2), ("axolotl", 0), ("owl", 30)], GraphSettings(target_per_class=8), MODELS, load_prices())
    data = plan_json(plan)
    assert [c["N_y"] for c in data["classes"]] == [6, 8, 0]
    total = data["total"]["calls"]
    assert total == [sum(c["total_calls"][0] for c in data["classes"]),
                     sum(c["total_calls"][1] for c in data["classes"])]
    assert data["total"]["t2i_calls"][0] == 14
    out = io.StringIO()
    render_plan(plan, Console(file=out, width=200))
    text = out.getvalue()
    assert "red fox" in text and "axolotl" in text and "no model was called" in text and "total" in text


def test_longer_prompts_raise_the_token_estimate() -> None:
    s = GraphSettings(target_per_class=10)
    short = plan_class("fox", 2, s, MODELS, None, prompt_overheads("fox"), {})
    longer = plan_class("fox", 2, s, MODELS, None, {k: v + 100 for k, v in prompt_overheads("fox").items()}, {})
    assert longer.input_tokens.low > short.input_tokens.low and short.cost_usd is None
