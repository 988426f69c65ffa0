"""Budget cap and call metering (unit level; the end-to-end stop/resume test is in test_budget_run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.lifecycle.budget import EXIT_BUDGET, Budget, BudgetError, CallMeter, parse_limits
from agent.providers.retry import ProviderError
from agent.readout.cost import load_prices
from store.traces import TraceRecord, TraceStore


def _row(**kw: object) -> TraceRecord:
    base: dict[str, object] = {"run_id": "r", "class_name": "fox", "node": "extend", "role": "llm",
                               "operation": "chat", "model": "gpt-4o-mini", "input_tokens": 1000,
                               "output_tokens": 1000}
    base.update(kw)
    return TraceRecord(**base)  # type: ignore[arg-type]


def test_max_calls_is_exact_and_latches_stopped() -> None:
    budget = Budget(max_calls=3)
    for _ in range(3):
        budget.admit()
    assert budget.calls == 3 and budget.in_flight == 3 and not budget.stopped
    with pytest.raises(ProviderError) as info:
        budget.admit()
    assert info.value.kind == "budget" and "--max-calls 3" in info.value.message
    assert budget.stopped and budget.calls == 3 and budget.refused == 1
    # In-flight calls still settle after the stop; they are paid for.
    for _ in range(3):
        budget.settle(0.01)
    assert budget.in_flight == 0 and budget.spent_usd == pytest.approx(0.03)


def test_max_cost_reserves_each_price_and_refuses_the_call_that_would_pass_the_cap() -> None:
    budget = Budget(max_cost_usd=0.05)
    budget.admit(0.02)
    budget.admit(0.02)  # two in flight: $0.04 reserved, nothing spent yet
    assert budget.reserved_usd == pytest.approx(0.04)
    with pytest.raises(ProviderError, match="max-cost") as info:
        budget.admit(0.02)  # 0.04 reserved + 0.02 > 0.05: refused although nothing is spent yet
    assert info.value.kind == "budget" and budget.stopped and budget.calls == 2
    budget.settle(0.021, reserved=0.02)  # the real cost replaces the reservation
    budget.settle(0.0, reserved=0.02)  # a failed request is not billed
    assert budget.reserved_usd == pytest.approx(0.0) and budget.spent_usd == pytest.approx(0.021)
    with pytest.raises(ProviderError):  # latched: a cheap call is refused too once the run is stopping
        budget.admit(0.001)
    line = budget.stop_line("runs/x")
    assert "\n" not in line and "--resume" in line and "runs/x" in line
    # The hint suggests a *higher* cap than the one that stopped the run.
    assert "--max-cost 0.10" in line and "--max-cost 0.05`" not in line


def test_spent_never_passes_the_cap_when_prices_are_reserved() -> None:
    """Property: whatever the order of admissions and settlements, spent <= cap when each real cost is at
    most its reserved price (list-priced images)."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        budget = Budget(max_cost_usd=rng.uniform(0.01, 1.0))
        in_flight: list[float] = []
        for _ in range(60):
            if in_flight and rng.random() < 0.5:
                price = in_flight.pop(rng.randrange(len(in_flight)))
                budget.settle(price * rng.choice((1.0, 1.0, 0.0)), reserved=price)
            else:
                price = rng.choice((0.011, 0.042, 0.167, 0.0004))
                try:
                    budget.admit(price)
                    in_flight.append(price)
                except ProviderError:
                    pass
        for price in in_flight:
            budget.settle(price, reserved=price)
        assert budget.spent_usd <= budget.max_cost_usd + 1e-12


def test_no_caps_never_refuse() -> None:
    budget = Budget()
    for _ in range(1000):
        budget.admit()
    assert budget.reached is None and not budget.stopped


def test_seeded_counts_only_billable_rows_of_earlier_invocations() -> None:
    prices = load_prices()
    rows = [
        _row(),  # billable, priced from the table (cost_usd None)
        _row(cost_usd=0.5),  # already priced
        _row(cache_hit=True),  # a hit: nothing sent
        _row(status="error", error="refused", error_kind="budget", attempts=0),  # never sent
        _row(status="error", error="HTTP 500", error_kind="exhausted", attempts=3),  # sent, not billed
    ]
    budget = Budget.seeded(rows, max_cost_usd=1.0, max_calls=3, prices=prices)
    assert budget.calls == 3
    assert budget.spent_usd == pytest.approx(0.5 + (1000 * 0.15 + 1000 * 0.60) / 1e6)
    with pytest.raises(ProviderError):  # same cap on resume: stops at once
        budget.admit()
    assert "--max-calls 6" in budget.stop_line()  # and suggests a higher one
    assert Budget.seeded(rows, max_cost_usd=None, max_calls=10, prices=prices).reached is None


def test_meter_prices_rows_settles_admitted_ones_and_calls_listeners() -> None:
    seen: list[TraceRecord] = []

    def broken(_row: TraceRecord) -> None:
        raise RuntimeError("display gone")

    meter = CallMeter(Budget(max_calls=1), load_prices(), listeners=[broken, seen.append])
    sent = _row()
    meter.admit(sent)
    assert meter.budget.in_flight == 1
    meter.record(sent)  # the broken listener is logged, never raised
    assert sent.cost_usd == pytest.approx((1000 * 0.15 + 1000 * 0.60) / 1e6)
    assert meter.budget.in_flight == 0 and meter.budget.spent_usd == sent.cost_usd
    hit = _row(cache_hit=True)
    meter.record(hit)  # never admitted: does not touch the budget
    assert hit.cost_usd == 0.0 and meter.budget.calls == 1
    with pytest.raises(ProviderError):
        meter.admit(_row())
    assert seen == [sent, hit]


def test_unpriced_calls_are_counted_not_charged() -> None:
    meter = CallMeter(Budget(max_cost_usd=1.0), load_prices())
    row = _row(model="my-local-model")
    meter.admit(row)
    meter.record(row)
    assert row.cost_usd is None and meter.budget.unpriced_calls == 1 and meter.budget.spent_usd == 0.0


@pytest.mark.parametrize(("cost", "calls", "needle"),
                         [(0.0, None, "--max-cost"), (float("nan"), None, "--max-cost"), (None, 0, "--max-calls")])
def test_parse_limits_rejects_bad_caps(cost: float | None, calls: int | None, needle: str) -> None:
    with pytest.raises(BudgetError, match=needle):
        parse_limits(cost, calls)
    assert parse_limits(2.5, 10) == (2.5, 10)
    assert EXIT_BUDGET == 3



def test_a_local_pipeline_role_is_never_billed_but_counts_as_a_call() -> None:
    from agent.providers.config import load_providers_config
    from agent.providers.endpoints import unbilled_roles

    config = load_providers_config(env={}, overrides={"t2i": {"provider": "diffusers", "model": "m",
                                                              "billing": "priced"}})
    assert unbilled_roles(config) == frozenset({"t2i"})  # whatever billing says: nothing to bill
    meter = CallMeter(Budget(max_cost_usd=0.01, max_calls=2), load_prices(), unbilled=unbilled_roles(config))
    row = TraceRecord(run_id="r", class_name="c", node="render", role="t2i", operation="image_generation",
                      model="m", images=1, request={"model": "m", "prompt": "a fox", "n": 1, "provider": "diffusers"})
    price = meter.reserve(row)
    meter.admit(row, price)
    meter.record(row)
    assert price == 0.0 and row.cost_usd == 0.0 and meter.budget.spent_usd == 0.0 and meter.budget.calls == 1


async def test_seeding_from_the_trace_store_equals_seeding_from_its_rows(tmp_path: Path) -> None:
    """attach() seeds with one SQL aggregate for priced rows and prices the others in Python: the same
    budget as :meth:`Budget.seeded` over every row (agent/lifecycle/budget.py ``was_sent``)."""
    prices = load_prices()
    rows = [
        _row(), _row(cost_usd=0.5), _row(cost_usd=0.25, status="error", attempts=2),  # sent
        _row(cache_hit=True, cost_usd=0.0), _row(cache_hit=True),  # hits
        _row(status="error", error="refused", error_kind="budget", attempts=0, cost_usd=0.0),  # never sent
        _row(status="stopped", error_kind="stopped", attempts=0),
        _row(status="error", error="bad image", attempts=0, cost_usd=0.0),  # failed before it was sent
        _row(status="ok", attempts=0, cost_usd=0.125),  # answered without a request (a local pipeline)
        _row(model="a-model-with-no-price"),  # sent, unpriced
        _row(run_id="other", cost_usd=9.0),  # another run
    ]
    expected = Budget.seeded([r for r in rows if r.run_id == "r"], max_cost_usd=None, max_calls=None,
                             prices=prices)
    store = await TraceStore.open(tmp_path / "traces.sqlite")
    try:
        for row in rows:
            store.add(row)
        budget = Budget.seeded((), max_cost_usd=None, max_calls=None, prices=prices)
        budget.seed_totals(*await store.sent_spend("r"))
        async for chunk in store.query_chunks(run_id="r", cache_hit=False, unpriced=True, size=2):
            budget.seed(chunk, prices=prices)
    finally:
        await store.close()
    assert (budget.calls, budget.unpriced_calls) == (expected.calls, expected.unpriced_calls) == (5, 1)
    assert budget.spent_usd == pytest.approx(expected.spent_usd)
