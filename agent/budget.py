"""Budget cap and call metering: ``--max-cost USD`` / ``--max-calls N`` for a whole run.

Contract:

- One :class:`Budget` per run, shared by every class (all on one event loop: ``admit`` / ``settle`` are
  synchronous, so no lock is needed). It counts *billable* calls: requests actually sent, not cache hits.
- ``admit()`` is asked before a new request is sent. Once the spend reaches ``max_cost_usd`` or the sent
  calls reach ``max_calls``, it refuses with ``ProviderError(kind="budget")`` and latches ``stopped``.
  Calls already in flight are never cancelled: they finish and are paid for, so the final spend may
  pass ``max_cost_usd`` by at most the cost of the calls in flight when the cap was reached (the sum
  of the roles' ``max_in_flight``). ``max_calls`` is exact: never more than N requests are admitted.
- The caps count the whole run, across ``--resume``: :meth:`Budget.seeded` starts from the calls and
  spend already in ``traces.sqlite``, so resuming with the same cap stops again at once and resuming
  with a higher cap continues.
- :class:`CallMeter` is what the providers hold: ``admit(row)`` before a request, ``record(row)`` before a
  trace row is written — it prices the row (``cost_usd``), settles the budget and tells listeners
  (the progress display).
- The run driver checks :attr:`Budget.stopped` after the classes return and exits with
  :data:`EXIT_BUDGET` (3) after printing :meth:`Budget.stop_line` — one line saying how to continue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.cost import PriceTable
from agent.retry import ProviderError

__all__ = ["EXIT_BUDGET", "Budget", "BudgetError", "CallMeter", "parse_limits"]

LOG = logging.getLogger(__name__)
EXIT_BUDGET = 3  # documented in `python -m agent.run --help`: 0 ok, 1 class failed, 2 bad input, 3 budget


class BudgetError(ValueError):
    """A bad ``--max-cost`` / ``--max-calls`` value (one line)."""


@dataclass
class Budget:
    """Caps (``None`` = no cap) and what the run has used so far."""

    max_cost_usd: float | None = None
    max_calls: int | None = None
    spent_usd: float = 0.0
    calls: int = 0  # requests admitted (sent or in flight), this invocation plus earlier ones
    in_flight: int = 0
    unpriced_calls: int = 0  # calls whose model has no price: they cannot count against max_cost
    stopped: bool = False  # latched by the first refusal
    refused: int = 0

    @classmethod
    def seeded(cls, records: Iterable[Any], *, max_cost_usd: float | None, max_calls: int | None,
               prices: PriceTable | None = None) -> Budget:
        """A budget that already counts the billable calls in ``records`` (trace rows of this run)."""
        budget = cls(max_cost_usd=max_cost_usd, max_calls=max_calls)
        for row in records:
            if row.cache_hit or row.error_kind == "budget":
                continue  # nothing was sent
            budget.calls += 1
            cost = row.cost_usd if row.cost_usd is not None else (prices.record_cost(row) if prices else None)
            budget._charge(cost)
        return budget

    @property
    def reached(self) -> str | None:
        """Which cap is reached (a short phrase), or ``None`` while calls may still be sent."""
        if self.max_calls is not None and self.calls >= self.max_calls:
            return f"--max-calls {self.max_calls} reached ({self.calls} calls sent)"
        if self.max_cost_usd is not None and self.spent_usd >= self.max_cost_usd:
            return f"--max-cost ${self.max_cost_usd:g} reached (${self.spent_usd:.4f} spent)"
        return None

    def admit(self) -> None:
        """Count one new request, or refuse it with ``ProviderError(kind="budget")``."""
        reason = self.reached
        if reason is not None:
            if not self.stopped:
                LOG.warning("budget: %s; refusing new calls, letting %d in flight finish", reason, self.in_flight)
            self.stopped = True
            self.refused += 1
            raise ProviderError("budget", f"{reason}; no new calls are sent", attempts=0)
        self.calls += 1
        self.in_flight += 1

    def settle(self, cost_usd: float | None) -> None:
        """An admitted request ended (answered or failed) and cost ``cost_usd`` (``None`` = unknown)."""
        self.in_flight = max(0, self.in_flight - 1)
        self._charge(cost_usd)

    def stop_line(self, run_dir: str = "RUN_DIR") -> str:
        """The one line printed when the run stops at the cap: what happened and how to continue."""
        caps = " and ".join(
            part for part in (
                f"--max-cost {self.max_cost_usd:g}" if self.max_cost_usd is not None else "",
                f"--max-calls {self.max_calls}" if self.max_calls is not None else "",
            ) if part
        )
        return (f"budget reached: {self.reached or 'cap'}; {self.calls} calls, ${self.spent_usd:.4f} spent. "
                f"Progress is checkpointed: continue with `python -m agent.run ... --out {run_dir} --resume` "
                f"and a higher {caps or 'cap'}.")

    def snapshot(self) -> dict[str, Any]:
        """Counters for ``summary.json`` and progress events."""
        return {"max_cost_usd": self.max_cost_usd, "max_calls": self.max_calls, "calls": self.calls,
                "spent_usd": round(self.spent_usd, 6), "unpriced_calls": self.unpriced_calls,
                "stopped": self.stopped, "refused": self.refused}

    def _charge(self, cost_usd: float | None) -> None:
        if cost_usd is None:
            self.unpriced_calls += 1
            if self.unpriced_calls == 1 and self.max_cost_usd is not None:
                LOG.warning("budget: a call has no price (model missing from the price table); "
                            "--max-cost cannot count it — --max-calls still can")
            return
        self.spent_usd += cost_usd


class CallMeter:
    """The providers' hook: budget admission before a request, pricing + settlement before tracing."""

    def __init__(self, budget: Budget | None = None, prices: PriceTable | None = None,
                 listeners: Sequence[Callable[[Any], None]] = ()) -> None:
        self.budget = budget if budget is not None else Budget()
        self.prices = prices
        self.listeners = list(listeners)
        self._admitted: set[str] = set()

    def admit(self, row: Any) -> None:
        """Before sending the request of trace row ``row``; raises ``ProviderError(kind="budget")``."""
        self.budget.admit()
        self._admitted.add(row.call_id)

    def record(self, row: Any) -> None:
        """Before ``row`` is written to the traces: set its cost, settle the budget, tell the listeners."""
        if self.prices is not None and row.cost_usd is None:
            row.cost_usd = self.prices.record_cost(row)
        if row.call_id in self._admitted:
            self._admitted.discard(row.call_id)
            self.budget.settle(row.cost_usd)
        for listener in self.listeners:
            try:
                listener(row)
            except Exception as exc:  # a display problem must never fail a paid call
                LOG.warning("progress listener failed: %s", exc)


def parse_limits(max_cost: float | None, max_calls: int | None) -> tuple[float | None, int | None]:
    """Validate the two CLI caps; :class:`BudgetError` with one line for a bad value."""
    if max_cost is not None and (not math.isfinite(max_cost) or max_cost <= 0):
        raise BudgetError(f"--max-cost: must be a number of US dollars > 0, got {max_cost!r}")
    if max_calls is not None and max_calls < 1:
        raise BudgetError(f"--max-calls: must be an integer >= 1, got {max_calls!r}")
    return max_cost, max_calls
