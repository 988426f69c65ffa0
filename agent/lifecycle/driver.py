"""The run driver: every tail class through the class graph, concurrently, resumably, into one run folder.

Contract:

- ``await execute(settings, providers_config, inputs)`` opens the run's stores (``cache.sqlite``,
  ``traces.sqlite``, ``blobs/``, ``checkpoints.sqlite`` through one ``AsyncSqliteSaver`` connection built
  inside the running loop), loads the CLIP scorer once, runs each class as its own LangGraph thread
  ``"<run_id>/<class>"`` (``max_classes_in_flight`` workers, all sharing the per-role limiters), hands each
  finished state to :class:`~agent.lifecycle.outputs.Outputs` at once and keeps none (memory grows by one
  summary entry per class, not by items: issue 23), then rebuilds ``manifest.jsonl``, ``rejected.jsonl`` and
  ``summary.json`` for all classes (classes it did not finish are read back one at a time), and returns a
  ``RunOutcome`` (exit code 0 all complete, 1 some class failed or fell short, 3 budget spent, 4 every class
  finished or awaiting review). A class that fell short (``short``: items missing because calls failed or were
  refused, agent/graph/finalize.py) is counted per reason in summary.json and the final line.
- ``--review``: a class whose thread paused at the review ``interrupt()`` (agent/graph/review.py) is
  ``review``. On ``--resume`` it continues with ``Command(resume=decisions)`` when ``review.sqlite`` holds
  decisions for its round (agent/review/decisions.py), and is left waiting — not invoked, nothing sent —
  when it does not. ``--resume --no-review`` approves the waiting classes as they are.
- A fresh run (no ``--resume``) takes a class that finished ``complete`` with nothing it depends on changed
  as it is (agent/lifecycle/reuse.py: no call, no trace row; ``--replay``, ``--review`` turn this off); it
  deletes the checkpoints of every other class and starts it from ``describe``; the call cache and blobs
  of the folder are reused, so repeating a finished run sends no request. ``--resume`` skips complete classes, continues interrupted ones where they stopped
  (``ainvoke(None, ...)``) and restarts failed and short ones from ``describe``: every call that
  succeeded is a cache hit (same prompt, same sample index), every call that failed is asked again.
- One class raising never cancels another: each class task catches its own exception into its outcome.
- ``softmax`` scoring needs every class's C_y before any class is scored, so a softmax run pauses every
  class before ``render`` (``interrupt_before``), builds the class-text table, then continues them all.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Durability, RunnableConfig

from agent.batch.setup import BatchRun, open_batch
from agent.errors import EXIT_REVIEW
from agent.graph.finalize import REASONS, accepted_items, image_relpath, missing_reason
from agent.graph.graph import RENDER_GATE, compile_graph
from agent.graph.state import ClassState, GraphDeps, ScorerLike, initial_state
from agent.graph.summarize import fallback_text
from agent.lifecycle.checkpoints import keep_latest_checkpoint, open_checkpoints, verify_checkpoints
from agent.lifecycle.controls import RunControls, attach, finish, plan_for, watch_scorer
from agent.lifecycle.folder import IMAGES, MANIFEST, RunFolder
from agent.lifecycle.inputs import ClassSpec, Inputs
from agent.lifecycle.outputs import Outputs
from agent.lifecycle.resume import config_doc
from agent.lifecycle.reuse import class_key, run_key
from agent.lifecycle.settings import RunSettings
from agent.providers.client import ProviderError, Providers
from agent.providers.config import ProvidersConfig
from agent.providers.local_t2i import open_local_transports
from agent.providers.score_cache import CachedScorer
from agent.providers.scorer import ClipScorer
from agent.providers.transport import Transport
from agent.review.decisions import read_decisions
from store.blobs import BlobStore
from store.cache import CallCache
from store.errors import is_disk_full
from store.slug import slugify
from store.trace_schema import sum_counts
from store.traces import TraceStore

__all__ = ["ClassOutcome", "RunOutcome", "execute", "missing_line", "thread_id"]

EXIT_OK, EXIT_FAILED, EXIT_BUDGET = 0, 1, 3
REVIEW_NODE = "review"
# Each step's checkpoint is committed before the next step starts ("sync"), so a resume restarts a class at
# the node it was in. "async" (written while the next step runs) measured no faster, side by side, in a
# sequential run or a warm rerun (scripts/bench/bench_agent.py --durability sync async).
DURABILITY: Durability = "sync"


@dataclass
class ClassOutcome:
    name: str
    status: str  # complete | short | failed | stopped (budget) | review (awaits a reviewer) | running (never reached the end)
    error: str | None = None
    reused: bool = False  # a fresh run took the class's unchanged final state (agent/lifecycle/reuse.py)


@dataclass
class RunOutcome:
    run_id: str
    exit_code: int
    classes: list[ClassOutcome] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def final_line(self) -> str:
        """The run's last line: results, and the counts of this session and of the whole run (one
        definition: store.trace_schema.counts_sql, the same numbers as summary.json and agent.traces)."""
        totals = self.summary.get("totals", {})
        session, run = totals.get("session") or {}, totals.get("run") or {}
        unsent = "".join(f", {session[k]} {k}" for k in ("refused", "stopped") if session.get(k))
        reused = self.summary.get("reused_classes") or 0
        unsent += f", {reused} unchanged class(es) reused (--replay runs them again)" if reused else ""
        line = (f"run {self.run_id}: {totals.get('accepted', 0)} image(s) accepted, {totals.get('rejected', 0)} "
                f"rejected; this session {session.get('requests', 0)} request(s) sent, "
                f"{session.get('cache_hits', 0)} cache hit(s){unsent}; whole run {run.get('requests', 0)} "
                f"request(s); {self.summary.get('manifest', MANIFEST)}")
        short = missing_line(totals)
        return f"{line}\n{short}" if short else line


def thread_id(run_id: str, class_name: str) -> str:
    """LangGraph thread of one class: ``thread_id("r1", "red fox") -> "r1/red fox"``."""
    return f"{run_id}/{class_name}"


async def execute(
    settings: RunSettings,
    providers_config: ProvidersConfig,
    inputs: Inputs,
    *,
    scorer: ScorerLike | None = None,
    log: Callable[[str], None] = print,
    controls: RunControls | None = None,
    notes: dict[str, Any] | None = None,
    local: Mapping[str, Transport] | None = None,
) -> RunOutcome:
    """Run (or resume) every class; write the run folder's outputs; see the module docstring."""
    started = time.monotonic()
    session_start = time.time()  # trace rows from here on are this session's (counts)
    out = settings.out
    run = RunFolder(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = config_doc(settings, providers_config, inputs)  # once: config.json and the reuse key both read it
    run.write_config({**doc, **(notes or {})})
    if scorer is None:
        scorer = await asyncio.to_thread(ClipScorer.load, settings.clip_model, settings.pretrained_arg())
    blobs = BlobStore(run.blobs)
    cache = await CallCache.open(run.cache)
    traces = await TraceStore.open(run.traces)
    providers: Providers | None = None
    batch: BatchRun | None = None
    outputs = Outputs(inputs, settings.run_id, include_originals=settings.include_originals)
    try:
        # A local t2i pipeline loads now, off the loop: a bad model or device stops the run before any call.
        # (``local``: the caller's, e.g. on a Ray cluster's actors: agent/providers/cluster.py)
        local = dict(local) if local is not None else await open_local_transports(providers_config, log=log)
        batch = await open_batch(providers_config, settings)  # None unless a role runs through the Batch API
        meter = None
        if controls is not None:  # budget metering, progress display (agent/lifecycle/controls.py)
            meter = await attach(controls, providers_config=providers_config, traces=traces, run_id=settings.run_id,
                                 plan=plan_for(settings, providers_config, inputs, controls.prices))
            if batch is not None and controls.progress is not None:
                batch.set_notify(controls.progress.batches)
        providers = await Providers.open(providers_config, cache=cache, traces=traces, blobs=blobs, meter=meter,
                                         transports={**local, **(batch.plugged() if batch else {})})
        if getattr(scorer, "cache_identity", None):  # scores of a known model: cached (agent/providers/score_cache.py)
            scorer = CachedScorer(scorer, cache)
        deps = GraphDeps(providers=providers, scorer=watch_scorer(controls, scorer), blobs=blobs,
                         settings=settings.graph_settings(), run_id=settings.run_id, out_dir=out, traces=traces)
        async with open_checkpoints(run.checkpoints) as saver:
            if settings.resume:  # a tampered checkpoint stops the run before anything is sent
                await verify_checkpoints(saver, settings.run_id)
            graph = compile_graph(saver)
            driver = _Driver(graph, saver, deps, settings, inputs, log, outputs,
                             run_key(doc, settings.score, await cache.epoch()))
            outcomes = await driver.run_all()
            for spec in inputs.classes:  # classes this invocation did not finish: read where they stand, one by one
                if not outputs.has(spec.name):
                    outputs.add(spec, await driver.state_of(spec))
            disk_full = driver.disk_full
        costs = await traces.cost_by_class(settings.run_id) if controls is not None else {}
        counts = (await traces.counts(settings.run_id), await traces.counts(settings.run_id, since=session_start))
    except BaseException:
        outputs.close()
        raise
    finally:
        if providers is not None:
            await providers.close()
        if batch is not None:
            await batch.close()
        await traces.close()
        await cache.close()
    try:
        summary = write_outputs(settings, inputs, outputs, outcomes, wall_s=time.monotonic() - started)
    finally:
        outputs.close()
    add_trace_counts(summary, *counts)
    code = _exit_code(outcomes)
    if disk_full is not None:  # mid-run: exit 1 with one line (agent/run.py), never mistaken for a budget stop
        code = EXIT_FAILED
        summary["disk_full"] = disk_full
    if controls is not None:  # adds cost, writes summary.json and report.html, says why a budget stop happened
        # The report reads each class's state from the checkpoints, one at a time (agent/readout/report.py).
        summary = finish(controls, out=out, summary=summary, traces_costs=costs)
        if disk_full is None and controls.budget.refused:  # anything refused: exit 3, whatever finished
            code = EXIT_BUDGET
    else:
        run.write_summary(summary)
    return RunOutcome(settings.run_id, code, outcomes, summary)


class _Driver:
    """Holds what every class task shares; one method per phase of a class."""

    def __init__(self, graph: CompiledStateGraph[Any, Any, Any, Any], saver: AsyncSqliteSaver, deps: GraphDeps,
                 settings: RunSettings, inputs: Inputs, log: Callable[[str], None], outputs: Outputs,
                 run_key: str) -> None:
        self.graph, self.saver, self.deps, self.settings, self.inputs, self.log = (
            graph, saver, deps, settings, inputs, log)
        self.outputs = outputs  # takes each finished class's state at once: no state is kept after its class
        self.run_key = run_key
        # a fresh run may take an unchanged finished class as it is; --replay, --review and softmax gates do not
        self.may_reuse = not (settings.resume or settings.replay or settings.review)
        self.disk_full: str | None = None  # set when a class stopped because a write found the disk full

    def config(self, spec: ClassSpec) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id(self.settings.run_id, spec.name)}}

    async def state_of(self, spec: ClassSpec) -> ClassState:
        snap = await self.graph.aget_state(self.config(spec))
        return cast(ClassState, dict(snap.values or {}))

    async def run_all(self) -> list[ClassOutcome]:
        gated = self.settings.score == "softmax"
        first = await self._pool(self.inputs.classes, gate=gated, resume=self.settings.resume)
        if not gated:
            return first
        # Every class now waits at the render gate (or is done / failed): all C_y are known.
        self.deps.class_texts = await self._class_texts()
        pending = [spec for spec, out in zip(self.inputs.classes, first, strict=True) if out.status == "running"]
        # Continue each class from the gate (resume=True even on a fresh run: the first pass was this run's).
        second = {out.name: out for out in await self._pool(pending, gate=False, resume=True)}
        return [second.get(out.name, out) for out in first]

    async def _pool(self, specs: Sequence[ClassSpec], *, gate: bool, resume: bool) -> list[ClassOutcome]:
        """Every class of ``specs`` through ``max_classes_in_flight`` workers; outcomes in ``specs`` order.
        Workers, not one task per class: 10^4 waiting tasks would each hold a coroutine frame for the run."""
        outcomes: list[ClassOutcome | None] = [None] * len(specs)
        queue = iter(enumerate(specs))

        async def worker() -> None:
            for i, spec in queue:  # one shared iterator: each class is taken by exactly one worker
                outcomes[i] = await self._guarded(spec, gate=gate, resume=resume)

        await asyncio.gather(*(worker() for _ in range(min(self.settings.max_classes_in_flight, len(specs)))))
        return [o for o in outcomes if o is not None]

    async def _guarded(self, spec: ClassSpec, *, gate: bool, resume: bool) -> ClassOutcome:
        try:
            outcome = await self._run_class(spec, gate=gate, resume=resume)
        except ProviderError as exc:
            if not exc.stops_class:
                return self._failed(spec, exc)
            return ClassOutcome(spec.name, "stopped", str(exc))  # resumable: the thread keeps its checkpoint
        except Exception as exc:  # one class's bug or outage must not take the other classes down
            if is_disk_full(exc):  # not the class's fault: stopped where it was, --resume continues it
                self.disk_full = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                self.log(f"[{spec.name}] stopped: disk full ({self.disk_full})")
                return ClassOutcome(spec.name, "stopped", f"disk full: {self.disk_full}")
            return self._failed(spec, exc)
        if outcome.status != "running":
            self.log(f"[{spec.name}] {outcome.status}" + (f": {outcome.error}" if outcome.error else "")
                     + (" (unchanged: reused)" if outcome.reused else ""))
        return outcome

    def _failed(self, spec: ClassSpec, exc: BaseException) -> ClassOutcome:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        self.log(f"[{spec.name}] failed: {message}")
        return ClassOutcome(spec.name, "failed", message)

    async def _run_class(self, spec: ClassSpec, *, gate: bool, resume: bool) -> ClassOutcome:
        config = self.config(spec)
        thread = config["configurable"]["thread_id"]
        fresh = True
        payload: Any = None
        if resume:  # read the class's checkpoint: skip it when complete, else continue where it stopped
            snap = await self.graph.aget_state(config)
            values: dict[str, Any] = dict(snap.values or {})
            if values.get("done") and values.get("status") == "complete":
                self.outputs.add(spec, cast(ClassState, values))  # read once: not again at the end
                return ClassOutcome(spec.name, "complete")
            # A failed or short class starts over: what succeeded is a cache hit, what failed is asked again.
            fresh = not values or bool(values.get("done") and values.get("status") in ("failed", "short"))
            if gate and not fresh and RENDER_GATE in snap.next:
                return ClassOutcome(spec.name, "running")  # already waiting at the gate from an earlier invocation
            if fresh and values:
                await self.saver.adelete_thread(thread)
            if not fresh and REVIEW_NODE in snap.next:
                payload = await self._review_resume(spec, values)
                if payload is None:  # nothing decided yet: keeps waiting, costs nothing
                    return ClassOutcome(spec.name, "review")
        else:  # a fresh run: every class restarts at describe, its completed calls cache hits
            if self.may_reuse and await self._reused(spec, config):
                return ClassOutcome(spec.name, "complete", reused=True)
            await self.saver.adelete_thread(thread)
        payload = self._initial(spec) if fresh else payload
        # ainvoke returns the state it stopped with (at the end, the render gate or the review): no read-back.
        state = await self.graph.ainvoke(payload, config, context=self.deps, durability=DURABILITY,
                                         interrupt_before=[RENDER_GATE] if gate else None)
        if any(_is_review(i) for i in state.get("__interrupt__") or ()):  # not the render gate: a review pause
            return ClassOutcome(spec.name, "review")
        if not state.get("done"):
            return ClassOutcome(spec.name, "running")
        self.outputs.add(spec, cast(ClassState, state))
        await keep_latest_checkpoint(self.saver, thread)
        return ClassOutcome(spec.name, state.get("status", "failed"), state.get("error"))

    async def _review_resume(self, spec: ClassSpec, values: dict[str, Any]) -> Command[Any] | None:
        """``Command(resume=decisions)`` for a class waiting at the review, or None while nothing is decided.
        ``--resume --no-review`` approves the class as it is (the user gave review up)."""
        if not self.settings.review:
            return Command(resume={"approve": True})
        decisions = await asyncio.to_thread(read_decisions, self.settings.out, spec.name,
                                            int(values.get("review_round", 0)))
        return None if decisions is None else Command(resume=decisions)

    def _initial(self, spec: ClassSpec) -> ClassState:
        return initial_state(class_name=spec.name, label=spec.label, slug=slugify(spec.name),
                             images=list(spec.images), k_y=self.settings.target_per_class,
                             reuse_key=self._class_key(spec))

    def _class_key(self, spec: ClassSpec) -> str:
        return class_key(self.run_key, name=spec.name, label=spec.label, slug=slugify(spec.name),
                         k_y=self.settings.target_per_class, images=list(spec.images))

    async def _reused(self, spec: ClassSpec, config: RunnableConfig) -> bool:
        """Take the class's kept final state when nothing it depends on changed (agent/lifecycle/reuse.py):
        complete, the same key, and every accepted image still in the folder."""
        snap = await self.graph.aget_state(config)
        values = cast(ClassState, dict(snap.values or {}))
        if not (values.get("done") and values.get("status") == "complete"
                and values.get("reuse_key") == self._class_key(spec)):
            return False
        out = str(self.settings.out)  # os.path, not pathlib: ~10x cheaper, 300 images a class at K = 300
        if not all(os.path.isfile(os.path.join(out, image_relpath(values, item))) for item in accepted_items(values)):
            return False
        self.outputs.add(spec, values)
        return True

    async def _class_texts(self) -> dict[int, str]:
        texts = {label: fallback_text(name) for label, name in self.inputs.class_names.items()}
        for spec in self.inputs.classes:
            state = await self.state_of(spec)
            texts[spec.label] = state.get("template") or fallback_text(spec.name)
        return texts


def _is_review(pending: Any) -> bool:
    """Whether an interrupt is the review node's (agent/graph/review.py ``review_payload``)."""
    value = getattr(pending, "value", None)
    return isinstance(value, dict) and value.get("kind") == "ltgc-review"


def write_outputs(settings: RunSettings, inputs: Inputs, outputs: Outputs, outcomes: Iterable[ClassOutcome], *,
                  wall_s: float) -> dict[str, Any]:
    """Write manifest.jsonl and rejected.jsonl from the classes' gathered rows (idempotent); return
    summary.json's data (written once, by the caller, after counts and costs are added)."""
    run, run_id = RunFolder(settings.out), settings.run_id
    classes = outputs.write(run)
    by_name = {o.name: o for o in outcomes}
    for name, entry in classes.items():
        outcome = by_name.get(name)
        if outcome is not None and outcome.status != entry.get("status"):
            entry["status"], entry["error"] = outcome.status, outcome.error
        if outcome is not None and outcome.reused:
            entry["reused"] = True
        if not outputs.finished(name):  # stopped (budget, signal, quota, disk) or never finished: no image written
            n_y = outputs.unfinished_n_y(name)
            reason = missing_reason((entry.get("error") or "").split(":")[0].split(" ")[0])
            entry["missing"] = n_y
            entry["missing_by_reason"] = {reason if reason in ("budget", "stopped") else "stopped": n_y} if n_y else {}
    _prune_images(run, set(outputs.generated_paths()))
    return {
        "run_id": run_id, "wall_s": round(wall_s, 3), "manifest": str(run.manifest), "classes": classes,
        "totals": _totals(classes), "warnings": list(inputs.warnings),
        "reused_classes": sum(1 for o in by_name.values() if o.reused),
    }


def add_trace_counts(summary: dict[str, Any], run: dict[str, dict[str, dict[str, int]]],
               session: dict[str, dict[str, dict[str, int]]]) -> None:
    """Calls, requests, hits, refused, stopped and tokens from the traces (store.trace_schema.counts_sql):
    per class for the whole run, and in ``totals`` for the whole run and for this session, named as such."""
    for name, entry in summary["classes"].items():
        by_role = run.get(name, {})
        flat = sum_counts(by_role.values())
        entry["counts"] = flat
        entry["tokens"] = tokens_of(flat)
        entry["calls_by_role"] = by_role
    totals = summary["totals"]
    for label, counts in (("run", run), ("session", session)):
        flat = sum_counts(c for roles in counts.values() for c in roles.values())
        totals[label] = {**flat, "tokens": tokens_of(flat)}


def tokens_of(counts: dict[str, int]) -> dict[str, int]:
    """Tokens billed (sent calls only), chat and image usage together: one definition everywhere."""
    return {"input": counts["chat_input_tokens"] + counts["image_input_tokens"],
            "output": counts["chat_output_tokens"] + counts["image_output_tokens"]}


def missing_line(totals: dict[str, Any]) -> str | None:
    """The final line's second line when images are missing, or ``None``.

    >>> missing_line({"N_y": 40, "missing": 12, "classes_short": 4, "missing_by_reason": {"server_errors": 12}})
    '12 of 40 images missing in 4 classes: 12 server error(s) — rerun with --resume to retry them'
    """
    missing = int(totals.get("missing") or 0)
    if not missing:
        return None
    reasons = ", ".join(f"{n} {REASONS.get(k, k)}" for k, n in sorted(
        (totals.get("missing_by_reason") or {}).items(), key=lambda kv: (-kv[1], kv[0])))
    where = totals.get("classes_short", 0)
    return (f"{missing} of {totals.get('N_y', 0)} images missing in {where} class{'es' if where != 1 else ''}: "
            f"{reasons} — rerun with --resume to retry them")


def _totals(classes: dict[str, Any]) -> dict[str, Any]:
    keys = ("M_y", "N_y", "accepted", "rejected", "failed", "missing")
    totals: dict[str, Any] = {k: sum(int(c.get(k) or 0) for c in classes.values()) for k in keys}
    statuses = [c.get("status") for c in classes.values()]
    totals["status"] = {s: statuses.count(s) for s in sorted({str(s) for s in statuses})}
    by_reason: dict[str, int] = {}
    for entry in classes.values():
        for reason, n in (entry.get("missing_by_reason") or {}).items():
            by_reason[reason] = by_reason.get(reason, 0) + int(n)
    totals["missing_by_reason"] = dict(sorted(by_reason.items()))
    totals["classes_short"] = sum(1 for c in classes.values() if c.get("missing"))
    return totals


def _exit_code(outcomes: list[ClassOutcome]) -> int:
    if any(o.status == "stopped" for o in outcomes):
        return EXIT_BUDGET
    if any(o.status == "review" for o in outcomes) and all(o.status in ("complete", "review") for o in outcomes):
        return EXIT_REVIEW
    return EXIT_OK if all(o.status == "complete" for o in outcomes) else EXIT_FAILED


def _prune_images(run: RunFolder, keep: set[str]) -> None:
    """Drop images of an earlier run in this folder that the new manifest no longer lists."""
    root = run.images
    if not root.is_dir():
        return
    # os.scandir, not Path.glob + relative_to: a 100-class warm rerun checks ~4,000 files here.
    for folder in os.scandir(root):
        if not folder.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(folder.path):
            if entry.is_file(follow_symlinks=False) and f"{IMAGES}/{folder.name}/{entry.name}" not in keep:
                os.unlink(entry.path)
