"""Budget cap and call metering: ``--max-cost USD`` / ``--max-calls N`` for a whole run.

Contract:

- One :class:`Budget` per run, shared by every class (all on one event loop: ``admit`` / ``settle`` are
  synchronous, so no lock is needed). It counts *billable* calls: requests actually sent, not cache hits.
- ``admit(price)`` is asked **at the moment a request is sent** — after it waited at its role's limiter,
  or when a batch holding it is submitted — never earlier: a render queued behind ``max_in_flight`` has
  not been admitted yet. ``price`` is the call's reserved price in USD (an image's list price; a chat
  call's bound from its ``max_tokens``, else an estimate from its prompt: see :meth:`CallMeter.reserve`),
  held as ``reserved_usd`` until :meth:`settle` replaces it with the real cost.
- A call is refused (``ProviderError(kind="budget")``, latching ``stopped``; every later call is refused
  too, so the run winds down) when ``spent + reserved + price > max_cost_usd`` or when ``max_calls``
  requests were admitted. Hence the bound the README states: **spent <= cap + whatever the calls in
  flight cost beyond their reserved price** — with list-priced images, spent <= cap. ``max_calls`` is
  exact: never more than N requests are sent. A call with no price (a model missing from the table)
  cannot count against ``max_cost_usd`` (one warning), only against ``max_calls``.
- The caps count the whole run, across ``--resume``: :meth:`Budget.seeded` starts from the calls and
  spend already in ``traces.sqlite``, so resuming with the same cap stops again at once and resuming
  with a higher cap continues. :meth:`stop_line` suggests a higher value.
- :class:`CallMeter` is what the providers hold: ``reserve(row)`` prices a request before it is sent,
  ``admit(row, price)`` when it is sent, ``record(row)`` before its trace row is written — it prices the
  row (``cost_usd``), settles the reservation and tells listeners (the progress display).
- The run driver checks :attr:`Budget.stopped` after the classes return and exits with
  :data:`EXIT_BUDGET` (3) after printing :meth:`Budget.stop_line` — one line saying how to continue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.providers.retry import ProviderError
from agent.readout.cost import PriceTable
from store.errors import UsageError

__all__ = ["EXIT_BUDGET", "Budget", "BudgetError", "CallMeter", "parse_limits", "was_sent"]

LOG = logging.getLogger(__name__)
EXIT_BUDGET = 3  # documented in `python -m agent.run --help`: 0 ok, 1 class failed, 2 bad input, 3 budget


class BudgetError(UsageError):
    """A bad ``--max-cost`` / ``--max-calls`` value (one line)."""


@dataclass
class Budget:
    """Caps (``None`` = no cap) and what the run has used so far."""

    max_cost_usd: float | None = None
    max_calls: int | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0  # prices of admitted calls not settled yet (in flight)
    calls: int = 0  # requests admitted (sent or in flight), this invocation plus earlier ones
    in_flight: int = 0
    unpriced_calls: int = 0  # calls whose model has no price: they cannot count against max_cost
    stopped: bool = False  # latched by the first refusal
    refused: int = 0
    refusal: str | None = None  # why the first call was refused

    @classmethod
    def seeded(cls, records: Iterable[Any], *, max_cost_usd: float | None, max_calls: int | None,
               prices: PriceTable | None = None) -> Budget:
        """A budget that already counts the billable calls in ``records`` (trace rows of this run)."""
        budget = cls(max_cost_usd=max_cost_usd, max_calls=max_calls)
        budget.seed(records, prices=prices)
        return budget

    def seed_totals(self, calls: int, spent_usd: float) -> None:
        """Count ``calls`` earlier sent calls whose prices add up to ``spent_usd`` (store/traces.py
        ``sent_spend``: the same rows :meth:`seed` would count, summed in SQL)."""
        self.calls += calls
        self.spent_usd += spent_usd

    def seed(self, records: Iterable[Any], *, prices: PriceTable | None = None) -> None:
        """Count the billable calls in ``records`` (earlier trace rows of this run) as already spent."""
        for row in records:
            if not was_sent(row):
                continue
            self.calls += 1
            cost = row.cost_usd if row.cost_usd is not None else (prices.record_cost(row) if prices else None)
            self._charge(cost)

    @property
    def reached(self) -> str | None:
        """Which cap stopped (or would stop) the run (a short phrase), or ``None`` while calls may be sent."""
        if self.refusal is not None:
            return self.refusal
        if self.max_calls is not None and self.calls >= self.max_calls:
            return f"--max-calls {self.max_calls} reached ({self.calls} calls sent)"
        if self.max_cost_usd is not None and self.spent_usd + self.reserved_usd >= self.max_cost_usd:
            return f"--max-cost ${self.max_cost_usd:g} reached (${self.spent_usd:.4f} spent)"
        return None

    def admit(self, price: float | None = None) -> None:
        """Count one request being sent now, reserving ``price``; or refuse it (``kind="budget"``)."""
        reason = self._refusal(price)
        if reason is not None:
            if not self.stopped:
                self.refusal = reason
                LOG.warning("budget: %s; refusing new calls, letting %d in flight finish", reason, self.in_flight)
            self.stopped = True
            self.refused += 1
            raise ProviderError("budget", f"{self.refusal}; no new calls are sent", attempts=0)
        self.calls += 1
        self.in_flight += 1
        self.reserved_usd += price or 0.0

    def hopeless(self, price: float | None = None) -> bool:
        """Whether :meth:`admit` can only refuse a call of ``price``, whatever the calls in flight cost: the
        run already stopped, ``max_calls`` were admitted (never decreases), or what is *spent* plus the price
        passes ``max_cost_usd`` (spent never decreases). Such a call is refused without waiting for a
        rate-limit slot (agent/providers/transport.py).

        >>> b = Budget(max_cost_usd=0.10, spent_usd=0.08)
        >>> b.hopeless(0.01), b.hopeless(0.04), Budget(max_calls=2, calls=2).hopeless()
        (False, True, True)
        """
        if self.stopped:
            return True
        if self.max_calls is not None and self.calls >= self.max_calls:
            return True
        return self.max_cost_usd is not None and self.spent_usd + (price or 0.0) > self.max_cost_usd

    def settle(self, cost_usd: float | None, reserved: float | None = None) -> None:
        """An admitted request ended (answered or failed): release its ``reserved`` price, charge its real
        ``cost_usd`` (``None`` = unknown)."""
        self.in_flight = max(0, self.in_flight - 1)
        self.reserved_usd = max(0.0, self.reserved_usd - (reserved or 0.0))
        self._charge(cost_usd)

    def suggested_cap(self) -> str:
        """A higher cap to resume with: the same flag(s) with a larger value (twice the old cap, rounded
        up to two significant figures, and more than what was spent)."""
        parts = []
        if self.max_cost_usd is not None:
            parts.append(f"--max-cost {_round_up(max(2 * self.max_cost_usd, 1.5 * self.spent_usd))}")
        if self.max_calls is not None:
            parts.append(f"--max-calls {_round_up(max(2 * self.max_calls, self.calls + 1))}")
        return " ".join(parts)

    def stop_line(self, run_dir: str = "RUN_DIR") -> str:
        """The one line printed when the run stops at the cap: what happened and how to continue."""
        higher = self.suggested_cap()
        return (f"budget reached: {self.reached or 'cap'}; {self.calls} calls, ${self.spent_usd:.4f} spent. "
                f"Progress is checkpointed: continue with a higher cap, e.g. `python -m agent.run --out {run_dir} "
                f"--resume{' ' + higher if higher else ''}`.")

    def snapshot(self) -> dict[str, Any]:
        """Counters for ``summary.json`` and progress events."""
        return {"max_cost_usd": self.max_cost_usd, "max_calls": self.max_calls, "calls": self.calls,
                "spent_usd": round(self.spent_usd, 6), "unpriced_calls": self.unpriced_calls,
                "stopped": self.stopped, "refused": self.refused, "reason": self.refusal}

    def _refusal(self, price: float | None) -> str | None:
        if self.stopped:
            return self.refusal or "budget reached"
        if self.max_calls is not None and self.calls >= self.max_calls:
            return f"--max-calls {self.max_calls} reached ({self.calls} calls sent)"
        if self.max_cost_usd is not None:
            committed = self.spent_usd + self.reserved_usd
            if committed + (price or 0.0) > self.max_cost_usd or committed >= self.max_cost_usd:
                nxt = f"the next call (${price:.4f})" if price else "the next call"
                return (f"--max-cost ${self.max_cost_usd:g} reached: {nxt} would pass it "
                        f"(${self.spent_usd:.4f} spent, ${self.reserved_usd:.4f} in flight)")
        return None

    def _charge(self, cost_usd: float | None) -> None:
        if cost_usd is None:
            self.unpriced_calls += 1
            if self.unpriced_calls == 1 and self.max_cost_usd is not None:
                LOG.warning("budget: a call has no price (model missing from the price table); "
                            "--max-cost cannot count it — --max-calls still can")
            return
        self.spent_usd += cost_usd


def was_sent(row: Any) -> bool:
    """Whether a trace row stands for a request that left the process (billable): not a cache hit, and not
    a call refused before sending (``budget``, ``stopped``: ``attempts == 0``)."""
    if row.cache_hit:
        return False
    if row.error_kind in ("budget", "stopped"):
        return False
    return not (row.status != "ok" and row.attempts == 0)


class CallMeter:
    """The providers' hook: a price to reserve, admission when sent, pricing + settlement before tracing."""

    def __init__(self, budget: Budget | None = None, prices: PriceTable | None = None,
                 listeners: Sequence[Callable[[Any], None]] = (), unbilled: frozenset[str] = frozenset()) -> None:
        self.budget = budget if budget is not None else Budget()
        self.prices = prices
        self.listeners = list(listeners)
        self.unbilled = unbilled  # roles served locally: $0, never priced at a cloud model's rates
        self._admitted: dict[str, float | None] = {}

    def reserve(self, row: Any, *, max_tokens: int | None = None) -> float | None:
        """The price to hold for the request of trace row ``row`` (its ``request`` is the body as keyed).

        Images: the list price of the size and quality asked for, times ``n``. Chat: prompt tokens estimated
        at 4 characters each (plus 765 per image, a 768-px image at detail high), and as output either
        ``max_tokens`` (a true bound) or as many tokens as the prompt's text, at least 256 (the prompts ask
        for lists about as long as the list they carry). ``None`` when the model has no price.
        """
        if row.role in self.unbilled:
            return 0.0
        if self.prices is None:
            return None
        request = row.request if isinstance(row.request, dict) else {}
        if row.operation == "image_generation":
            price = self.prices.image_cost(row.model, images=int(request.get("n") or 1),
                                           size=_text(request.get("size")), quality=_text(request.get("quality")),
                                           input_tokens=len(str(request.get("prompt", ""))) // 4)
        else:
            chars, images = _prompt_size(request.get("messages"))
            tokens_in = chars // 4 + 765 * images
            tokens_out = max_tokens if max_tokens is not None else max(256, chars // 4)
            price = self.prices.chat_cost(row.model, input_tokens=tokens_in, output_tokens=tokens_out)
        return self.prices.for_row(row, price)  # a Batch API request reserves its batch price

    def hopeless(self, row: Any, *, max_tokens: int | None = None) -> bool:
        """Whether the budget can only refuse the request of ``row`` (:meth:`Budget.hopeless`)."""
        if row.role in self.unbilled:
            return self.budget.stopped or (self.budget.max_calls is not None
                                           and self.budget.calls >= self.budget.max_calls)
        return self.budget.hopeless(self.reserve(row, max_tokens=max_tokens))

    def admit(self, row: Any, price: float | None = None) -> None:
        """The request of trace row ``row`` is being sent now; raises ``ProviderError(kind="budget")``."""
        self.budget.admit(price)
        self._admitted[row.call_id] = price

    def record(self, row: Any) -> None:
        """Before ``row`` is written to the traces: set its cost, settle the budget, tell the listeners."""
        if row.role in self.unbilled:
            row.cost_usd = 0.0
            row.meta = {**row.meta, "billing": "local"}
        elif self.prices is not None and row.cost_usd is None:
            row.cost_usd = self.prices.record_cost(row)
        if row.call_id in self._admitted:
            self.budget.settle(row.cost_usd, self._admitted.pop(row.call_id))
        for listener in self.listeners:
            try:
                listener(row)
            except Exception as exc:  # a display problem must never fail a paid call
                LOG.warning("progress listener failed: %s", exc)


def _prompt_size(messages: Any) -> tuple[int, int]:
    """``(characters of text, number of images)`` in chat ``messages`` as the cache key holds them."""
    chars = images = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    chars += len(str(part.get("text", "")))
                elif isinstance(part, dict):
                    images += 1
    return chars, images


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _round_up(value: float) -> str:
    """Two significant figures, rounded up: ``_round_up(0.1234) -> '0.13'``, ``_round_up(1234) -> '1300'``."""
    if value <= 0:
        return "1"
    digits = 2 - int(math.floor(math.log10(value))) - 1
    scaled = math.ceil(value * 10 ** digits - 1e-9) / 10 ** digits
    return f"{scaled:.{max(digits, 0)}f}"


def parse_limits(max_cost: float | None, max_calls: int | None) -> tuple[float | None, int | None]:
    """Validate the two CLI caps against their bounds (agent.lifecycle.settings.CapSettings); one-line
    :class:`BudgetError` for a bad value."""
    from agent.lifecycle.settings import SettingsError, resolve_caps

    try:
        caps = resolve_caps({"max_cost": max_cost, "max_calls": max_calls})
    except SettingsError as exc:
        raise BudgetError(str(exc)) from None
    return caps.max_cost, caps.max_calls
