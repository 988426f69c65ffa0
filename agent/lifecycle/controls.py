"""Seeing and controlling a run from ``python -m agent.run``: flags, dry run, metering, cost totals, report.

Contract (the glue between the run driver and agent/cost, budget, plan, progress, report):

- :func:`add_control_arguments` adds ``--dry-run``, ``--max-cost USD``, ``--max-calls N``, ``--prices FILE``,
  ``--quiet`` and ``--log-json``; :func:`controls_from_args` turns them, with the caps resolved in the settings
  tree (``[run] max_cost`` / ``max_calls`` too, agent/lifecycle/settings.py), into :class:`RunControls`
  (a one-line ``UsageError`` — ``BudgetError`` / ``PricesError`` — for a bad value or price file).
- :func:`dry_run` prints the plan (table, or JSON with ``--log-json``) for the resolved inputs and settings
  and returns 0; it builds no client and sends nothing.
- :func:`attach` runs once the run's stores exist and before the providers are built: it seeds the budget
  from this run's earlier trace rows (so caps hold across ``--resume``), starts the progress display and
  returns the :class:`CallMeter` the providers are opened with (``Providers.open(meter=...)``).
- :func:`finish` stops the display, adds ``cost`` (per class and in total) to ``summary.json``'s data,
  writes ``report.html`` (a report failure is a warning, never a failed run) and, when the budget stopped
  the run, prints :meth:`Budget.stop_line` — the caller then exits with :data:`EXIT_BUDGET` (3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.lifecycle.budget import EXIT_BUDGET, Budget, CallMeter, parse_limits
from agent.lifecycle.folder import RunFolder
from agent.lifecycle.settings import CapSettings
from agent.providers.config import ROLES
from agent.providers.endpoints import unbilled_roles
from agent.readout.cost import PriceTable, load_prices
from agent.readout.plan import expected_by_stage, plan_json, plan_run, render_plan
from agent.readout.progress import Mode, Progress

__all__ = ["EXIT_BUDGET", "RunControls", "ScoringWatch", "add_control_arguments", "attach",
           "controls_from_args", "log_function", "watch_scorer",
           "dry_run", "finish"]

LOG = logging.getLogger(__name__)


@dataclass
class RunControls:
    prices: PriceTable
    max_cost_usd: float | None = None
    max_calls: int | None = None
    dry_run: bool = False
    mode: Mode = "live"
    budget: Budget = field(default_factory=Budget)
    progress: Progress | None = None
    meter: CallMeter | None = None
    unbilled: frozenset[str] = frozenset()  # roles on local endpoints (agent.providers.config.unbilled_roles)


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cost and control")
    group.add_argument("--dry-run", action="store_true",
                       help="print the plan per class (calls, tokens, cost as a range) and exit; calls no model")
    group.add_argument("--max-cost", type=float, metavar="USD",
                       help="spending cap for the whole run, across --resume: each request reserves its price when "
                            "it is sent and is refused if it would pass the cap, so spent <= cap + whatever the "
                            "calls in flight cost beyond their reserved price (list-priced images: spent <= cap); "
                            "exit 3, resume with a higher cap")
    group.add_argument("--max-calls", type=int, metavar="N",
                       help="send at most N model requests (whole run, across --resume); exit 3 when reached")
    group.add_argument("--prices", type=Path, metavar="FILE",
                       help="price table TOML (default: the packaged agent/prices.toml)")
    group.add_argument("--quiet", action="store_true", help="no live progress display")
    group.add_argument("--log-json", action="store_true",
                       help="one JSON line per event on stderr instead of the live display (batch jobs)")


def controls_from_args(args: argparse.Namespace, caps: CapSettings | None = None) -> RunControls:
    """Validated controls; a bad cap or price file raises its own one-line ``UsageError``. ``caps``: the
    run's resolved settings (flags > ``[run] max_cost`` / ``max_calls``); without them, the flags alone."""
    max_cost, max_calls = (caps.max_cost, caps.max_calls) if caps is not None else parse_limits(
        args.max_cost, args.max_calls)
    prices = load_prices(args.prices)
    mode: Mode = "log_json" if args.log_json else ("quiet" if args.quiet else "live")
    return RunControls(prices=prices, max_cost_usd=max_cost, max_calls=max_calls, dry_run=bool(args.dry_run),
                       mode=mode)


def plan_for(settings: Any, providers_config: Any, inputs: Any, prices: PriceTable) -> Any:
    """The run's plan from the resolved settings (``RunSettings``), providers config and inputs."""
    models = {role: providers_config.role(role).model for role in ROLES}
    image = {"size": providers_config.t2i.image_size, "quality": providers_config.t2i.image_quality}
    batched = [role for role in ROLES if providers_config.role(role).batch]
    plan = plan_run([(c.name, len(c.images)) for c in inputs.classes], settings.graph_settings(), models, prices,
                    image, unbilled_roles(providers_config), batched)
    # max_in_flight is per replica (agent/providers/replicas.py): a fleet of N servers has N times the slots.
    limits = {role: (providers_config.role(role).per_minute,
                     providers_config.role(role).max_in_flight * len(providers_config.role(role).base_urls))
              for role in ROLES}
    return dataclasses.replace(plan, limits=limits)


def dry_run(settings: Any, providers_config: Any, inputs: Any, controls: RunControls) -> int:
    """Print the plan and return 0; nothing is opened, nothing is sent."""
    plan = plan_for(settings, providers_config, inputs, controls.prices)
    if controls.mode == "log_json":
        print(json.dumps({"event": "plan", **plan_json(plan)}))
        return 0
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped or captured: keep rows on one line each
    render_plan(plan, console)
    return 0


async def attach(controls: RunControls, *, providers_config: Any, traces: Any, run_id: str,
                 plan: Any = None) -> CallMeter:
    """Seed the budget from earlier trace rows of ``run_id``, start the display; the meter for the providers."""
    controls.unbilled = unbilled_roles(providers_config)
    # Cache hits are never billable (Budget.seeded skips them): not reading them keeps a run folder's
    # start-up cost flat however many warm reruns its traces hold (scripts/bench/bench_agent.py).
    controls.budget = Budget(max_cost_usd=controls.max_cost_usd, max_calls=controls.max_calls)
    # Priced rows: one SQL aggregate. Rows without a price are priced here, one chunk in memory at a time.
    controls.budget.seed_totals(*await traces.sent_spend(run_id))
    async for chunk in traces.query_chunks(run_id=run_id, cache_hit=False, unpriced=True):
        controls.budget.seed(chunk, prices=controls.prices)
    controls.progress = Progress(mode=controls.mode, expected=expected_by_stage(plan) if plan else None)
    controls.meter = CallMeter(controls.budget, controls.prices, listeners=[controls.progress.on_call],
                               unbilled=controls.unbilled)
    controls.progress.start()
    controls.progress.event("run_start", run_id=run_id, earlier_calls=controls.budget.calls,
                            earlier_spent_usd=round(controls.budget.spent_usd, 6))
    return controls.meter


def finish(controls: RunControls, *, out: Path, summary: dict[str, Any], traces_costs: Mapping[str, float | None],
           states: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Stop the display, add costs to ``summary`` (returned), write summary.json and the report, say why a
    stop happened."""
    summary["cost"] = cost_section(controls, traces_costs)
    for name, entry in (summary.get("classes") or {}).items():
        entry["cost_usd"] = traces_costs.get(name, 0.0)
    summary.setdefault("totals", {})["cost_usd"] = summary["cost"]["total_usd"]
    progress = controls.progress
    if progress is not None:
        if controls.budget.stopped:
            progress.event("budget_reached", line=controls.budget.stop_line(str(out)))
        progress.event("run_done", calls=controls.budget.calls, spent_usd=round(controls.budget.spent_usd, 6))
        progress.stop()
    RunFolder(out).write_summary(summary)  # the run's record: a failure here (a full disk) is the run's failure
    try:
        from agent.readout.report import write_report

        write_report(out, states, summary=summary)
    except Exception as exc:  # the run's results are on disk already: a report problem must not fail it
        LOG.warning("report.html not written: %s", exc)
    if controls.budget.stopped:
        print(controls.budget.stop_line(str(out)), file=sys.stderr)
    return summary


def cost_section(controls: RunControls, traces_costs: Mapping[str, float | None]) -> dict[str, Any]:
    """``summary.json``'s ``cost``: whole-run spend from the traces, and what the budget saw."""
    known = [c for c in traces_costs.values() if c is not None]
    return {"total_usd": None if len(known) < len(traces_costs) else round(sum(known), 6),
            "priced_from": controls.prices.source, "prices_as_of": controls.prices.as_of,
            "not_billed": {role: "local endpoint" for role in sorted(controls.unbilled)},
            "budget": controls.budget.snapshot()}


class ScoringWatch:
    """A scorer proxy that reports each batch of scored images to the progress display (stage evaluate).

    It forwards the ``ScorerLike`` surface the graph uses (agent/graph/state.py) unchanged.
    """

    def __init__(self, scorer: Any, progress: Progress) -> None:
        self._scorer = scorer
        self._progress = progress
        self.context_length: int = scorer.context_length

    def count_tokens(self, text: str) -> int:
        return int(self._scorer.count_tokens(text))

    async def cosine(self, images: Any, text: str) -> list[float]:
        scores: list[float] = await self._scorer.cosine(images, text)
        self._progress.advance("evaluate", "", len(scores))
        return scores

    async def softmax(self, images: Any, texts: Any, target: int) -> list[float]:
        scores: list[float] = await self._scorer.softmax(images, texts, target)
        self._progress.advance("evaluate", "", len(scores))
        return scores

    def __getattr__(self, name: str) -> Any:  # anything else the scorer offers (e.g. close)
        return getattr(self._scorer, name)


def watch_scorer(controls: RunControls | None, scorer: Any) -> Any:
    """``scorer`` wrapped so scored images show in the progress display (unchanged without controls)."""
    if controls is None or controls.progress is None:
        return scorer
    return ScoringWatch(scorer, controls.progress)


def log_function(controls: RunControls | None, default: Callable[[str], None]) -> Callable[[str], None]:
    """The run driver's line logger: in ``--log-json`` mode each line becomes a JSON ``log`` event, so
    stderr stays one JSON object per line; otherwise ``default``."""
    if controls is None or controls.mode != "log_json":
        return default

    def log(message: str) -> None:
        if controls.progress is not None:
            controls.progress.event("log", message=message)
        else:
            default(message)

    return log
