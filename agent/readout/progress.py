"""Live progress of a run per stage (describe, extend, render, evaluate, refine): counts, ETA, spend.

Contract:

- :class:`Progress` is fed by the run: ``on_call(record)`` for every provider call (a ``CallMeter``
  listener, so it sees each trace row with its cost), ``advance(stage, class_name, n)`` for work that is not
  a model call (images scored by CLIP in ``evaluate``), and ``event(kind, **fields)`` for run milestones
  (run start/end, class finished, budget reached).
- Stages group the graph's nodes (:func:`stage_of`): ``extend`` covers the text steps extend, dedupe and
  summarize; a re-render after a refinement (render, round >= 1) counts under ``refine``.
- Modes: ``live`` draws rich progress bars on stderr (stdout stays clean for pipes); ``quiet`` draws
  nothing; ``log_json`` writes one JSON object per event and line to the given stream (stderr by default)
  and draws no bars, so batch-job logs stay machine-readable.
- ``batches(role, counts)`` is fed by the Batch API transports (agent/batch/transport.py): requests queued for the
  next batch, calls waiting in live batches, live batches — shown after the spend line, and in ``log_json``
  mode one ``batches`` event each time a role's number of live batches changes.
- ETA = elapsed x (expected calls left / calls done), from the plan's expected calls; ``None`` before the
  first call or without a plan. It is a rough guide: cache hits are fast, images are slow.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal

__all__ = ["STAGES", "Progress", "StageCount", "stage_of"]

STAGES = ("describe", "extend", "render", "evaluate", "refine")
REFRESH_S = 0.1  # rich's own redraw period (refresh_per_second=10)
Mode = Literal["live", "quiet", "log_json"]
_TEXT_STEPS = {"extend", "dedupe", "summarize"}


def stage_of(node: str, round: int = 0) -> str:
    """The progress stage of a call made by graph ``node`` in refinement ``round``.

    >>> [stage_of("dedupe"), stage_of("render"), stage_of("render", 2), stage_of("refine", 1)]
    ['extend', 'render', 'refine', 'refine']
    """
    if node in _TEXT_STEPS:
        return "extend"
    if node == "render" and round > 0:
        return "refine"
    return node


@dataclass
class StageCount:
    """Counts of one stage: calls (or scored images) done, of which cache hits and failures."""

    done: int = 0
    cached: int = 0
    failed: int = 0
    expected: int | None = None


class Progress:
    """Per-stage counters plus one of three outputs (live bars, nothing, JSON lines)."""

    def __init__(self, *, mode: Mode = "live", expected: Mapping[str, int] | None = None,
                 stream: IO[str] | None = None, console: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mode = mode
        self.stages = {name: StageCount(expected=(expected or {}).get(name)) for name in STAGES}
        self.spent_usd = 0.0
        self.calls = 0
        self._stream = stream if stream is not None else sys.stderr
        self._console = console
        self._clock = clock
        self._started = clock()
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}
        self._refreshed_at = -math.inf
        self.batch_counts: dict[str, dict[str, int]] = {}  # role -> queued / waiting / batches

    # ------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> Progress:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the clock (and the live display in ``live`` mode)."""
        self._started = self._clock()
        if self.mode == "live":
            self._start_bars()

    def stop(self) -> None:
        """Stop the live display, leaving its last frame on screen."""
        if self._bars is not None:
            self._refresh_bars()
            self._bars.stop()
            self._bars = None

    # ---------------------------------------------------------------------------------- inputs
    def on_call(self, record: Any) -> None:
        """One provider call ended (a ``store.traces.TraceRecord``, already priced)."""
        stage = stage_of(record.node, record.round)
        count = self.stages.setdefault(stage, StageCount())
        count.done += 1
        count.cached += int(bool(record.cache_hit))
        count.failed += int(record.status != "ok")
        self.calls += 1
        self.spent_usd += record.cost_usd or 0.0
        self._emit("call", stage=stage, class_name=record.class_name, node=record.node, round=record.round,
                   role=record.role, model=record.model, status=record.status, cache_hit=record.cache_hit,
                   cost_usd=record.cost_usd, call_id=record.call_id, error_kind=record.error_kind)

    def batches(self, role: str, counts: Mapping[str, int]) -> None:
        """A batched role's queue and live batches changed (see the module docstring)."""
        before = self.batch_counts.get(role, {}).get("batches")
        self.batch_counts[role] = dict(counts)
        if self.mode == "log_json" and before != counts.get("batches"):
            self._emit("batches", role=role, **counts)
        elif self.mode == "live":
            self._emit("batches")

    def waiting_in_batches(self) -> int:
        """Calls waiting for a batch, all roles: queued for the next one or in a live one."""
        return sum(c.get("queued", 0) + c.get("waiting", 0) for c in self.batch_counts.values())

    def advance(self, stage: str, class_name: str, n: int = 1, **fields: Any) -> None:
        """Work of ``stage`` that is not a model call (e.g. ``n`` images scored in evaluate)."""
        self.stages.setdefault(stage, StageCount()).done += n
        self._emit("progress", stage=stage, class_name=class_name, n=n, **fields)

    def event(self, kind: str, **fields: Any) -> None:
        """A run milestone: a JSON line in ``log_json`` mode, a printed line in ``live`` mode."""
        self._emit(kind, **fields)
        if self._bars is not None and kind in ("class_done", "budget_reached", "run_done"):
            details = " ".join(f"{k}={v}" for k, v in fields.items())
            self._bars.console.print(f"[bold]{kind}[/bold] {details}")

    # --------------------------------------------------------------------------------- derived
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def eta_s(self) -> float | None:
        """Seconds left by the calls-done rate, or ``None`` when it cannot be told yet."""
        expected = sum(c.expected or 0 for name, c in self.stages.items() if name != "evaluate")
        done = sum(c.done for name, c in self.stages.items() if name != "evaluate")
        if done == 0 or expected == 0:
            return None
        return max(0.0, self.elapsed_s() * (expected - done) / done)

    def snapshot(self) -> dict[str, Any]:
        """Counts, spend and ETA as JSON-able data (also the payload of every JSON line)."""
        eta = self.eta_s()
        return {
            "stages": {n: {"done": c.done, "cached": c.cached, "failed": c.failed, "expected": c.expected}
                       for n, c in self.stages.items()},
            "calls": self.calls, "spent_usd": round(self.spent_usd, 6),
            "elapsed_s": round(self.elapsed_s(), 3), "eta_s": None if eta is None else round(eta, 1),
            **({"batches": {r: dict(c) for r, c in self.batch_counts.items()}} if self.batch_counts else {}),
        }

    # ------------------------------------------------------------------------------- outputs
    def _emit(self, kind: str, **fields: Any) -> None:
        if self.mode == "log_json":
            line = {"ts": round(time.time(), 3), "event": kind, **fields,
                    "calls": self.calls, "spent_usd": round(self.spent_usd, 6), "eta_s": self.eta_s()}
            self._stream.write(json.dumps(line, default=str) + "\n")
            self._stream.flush()
        elif self._bars is not None:
            # rich redraws the bars REFRESH_S apart on its own thread; updating them more often than that
            # only costs CPU (a warm rerun makes thousands of calls a second). stop() always refreshes.
            now = self._clock()
            if now - self._refreshed_at >= REFRESH_S:
                self._refreshed_at = now
                self._refresh_bars()

    def _start_bars(self) -> None:
        # Imported here: rich's progress machinery is only needed for a live display.
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bars

        console = self._console if self._console is not None else Console(stderr=True)
        self._bars = Bars(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[note]}"), TimeRemainingColumn(), console=console,
                          transient=False, refresh_per_second=round(1 / REFRESH_S))
        for name in STAGES:
            self._tasks[name] = self._bars.add_task(name, total=self.stages[name].expected, note="")
        self._tasks["_total"] = self._bars.add_task("spend", total=None, note="")
        self._bars.start()

    def _refresh_bars(self) -> None:
        for name in STAGES:
            c = self.stages[name]
            note = f"cached {c.cached}" + (f" · failed {c.failed}" if c.failed else "")
            total = max(c.expected, c.done) if c.expected is not None else None
            self._bars.update(self._tasks[name], completed=c.done, total=total, note=note)
        eta = self.eta_s()
        eta_text = "" if eta is None else f" · ETA {int(eta // 60)}:{int(eta % 60):02d}"
        live = sum(c.get("batches", 0) for c in self.batch_counts.values())
        batch_text = (f" · {self.waiting_in_batches()} waiting in batches ({live} live)"
                      if self.batch_counts else "")
        self._bars.update(self._tasks["_total"], completed=self.calls,
                          note=f"${self.spent_usd:.4f} spent · {self.calls} calls{eta_text}{batch_text}")
