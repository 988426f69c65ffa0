"""The Batch API transport: one role's cache misses, from every class, sent as OpenAI batches — crash-safe.

Contract (a :class:`agent.transport.Transport`; the graph and the providers do not change):

- ``await send(call)`` queues the request; the queue becomes one batch input file (``custom_id`` = the call's
  cache key) when it holds ``max_requests`` requests or would pass ``max_bytes`` (the API's 50,000 / 200 MB),
  or ``window_s`` after its first request. Then, per request, :meth:`Outbound.admit` (stop check + budget:
  the price is reserved now; a refused call is left out and gets the refusal), and for the batch: ledger
  ``intent`` -> upload -> ledger ``uploaded`` -> ``batches.create`` -> ledger ``submitted`` (store/batches.py:
  every step recorded before the next one talks to the server). One poller per live batch retrieves it with
  back-off (``poll_s`` growing 1.5x to ``poll_max_s``); at its end the output and error files are saved in
  ``batches/`` and indexed (ledger ``collected``) before any waiting call gets its line.
- ``send`` returns what the synchronous transport would: the line's body read by the same functions
  (``chat_value`` / ``image_value``; images decoded here, a broken one retried like any failed line).
- **Never twice.** On its first call the transport reads the ledger: a submission left ``intent`` or
  ``uploaded`` by a killed process is looked up among the server's batches by the submission id in their
  metadata (adopted if found, ``void`` if not); live batches are polled again. A request whose key is in a
  live batch waits for it, one whose answer is in a collected batch takes it from disk; only a request in
  no batch, or whose batch ended without answering it, is queued.
- **Failures.** An error line or a request its batch did not answer (failed, expired, cancelled batch) is
  queued for the next batch while it has attempts left (``max_attempts``, counting batches it was in); a
  non-retryable line (400, refusal) fails the call at once. With ``fallback="sync"`` the leftovers are sent
  synchronously instead (``HttpTransport``, priced at the sync price).
- **Stop.** Once a stop is asked for (SIGINT / SIGTERM), queued requests are not sent (``stopped``), and calls
  waiting on a live batch return ``stopped`` at once; the batches run on server-side and ``--resume``
  collects them. Trace rows carry ``meta``: ``transport``, ``custom_id``, ``submission_id``, ``batch_id``,
  ``batch_status``, ``batch_times`` (the batch's ``*_at`` stamps) and ``batch_tries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent import batch_wire as wire
from agent.batch_client import BatchClient
from agent.images import decode_b64_image
from agent.retry import Failure, ProviderError
from agent.transport import Outbound, Transport, stopped_error
from store.batches import UNRESOLVED, BatchLedger

__all__ = ["BatchSettings", "BatchTransport"]

LOG = logging.getLogger(__name__)
STOP_CHECK_S = 0.1  # how often the stop flag is read (one task per transport, not one per waiting call)
POLL_GROWTH = 1.5
Notify = Callable[[str, dict[str, int]], None]


@dataclass(frozen=True)
class BatchSettings:
    """When a batch closes and how it is watched (``--batch-*`` flags; defaults suit a real run)."""

    max_requests: int = wire.MAX_REQUESTS
    max_bytes: int = wire.MAX_FILE_BYTES
    window_s: float = 60.0
    poll_s: float = 15.0
    poll_max_s: float = 300.0
    fallback: Literal["none", "sync"] = "none"


@dataclass
class _Queued:
    call: Outbound
    line: bytes
    placed: asyncio.Future[str]  # the submission id, once the batch holding the request exists
    queued_at: float


@dataclass
class _Watch:
    batch_id: str
    ended: asyncio.Future[None]  # set once the batch's lines are on disk and indexed
    task: asyncio.Task[None] | None = None


class BatchTransport:
    """See the module docstring. Built by agent/batch_setup.py; closed by the providers."""

    def __init__(self, role: str, server: BatchClient, ledger: BatchLedger, settings: BatchSettings, *,
                 results_dir: Path, stop_requested: Callable[[], bool], fallback: Transport | None = None,
                 notify: Notify | None = None) -> None:
        self.role, self.server, self.ledger, self.settings = role, server, ledger, settings
        self.results_dir, self._stop, self.fallback, self.notify = results_dir, stop_requested, fallback, notify
        self._queue: list[_Queued] = []
        self._queue_bytes = 0
        self._window: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watches: dict[str, _Watch] = {}  # submission id -> its live (or just ended) batch
        self._latest: dict[str, str] = {}  # custom_id -> the latest submission holding it
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}  # same key twice at once: one request
        self._waiting = 0  # calls whose request is in a live batch
        self._ready: asyncio.Task[None] | None = None
        self._stopping: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------------------------ Transport
    async def send(self, call: Outbound) -> dict[str, Any]:
        await self._start()
        shared = self._inflight.get(call.key)
        if shared is not None:  # an identical request of another class is on its way: share its answer
            call.row.meta.update(transport="batch", custom_id=call.key, shared=True)
            return dict(await asyncio.shield(shared))
        mine: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        mine.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception not retrieved"
        self._inflight[call.key] = mine
        try:
            value = await self._send(call)
        except BaseException as exc:
            mine.set_exception(exc if isinstance(exc, Exception) else ProviderError("stopped", "cancelled"))
            raise
        finally:
            self._inflight.pop(call.key, None)
        mine.set_result(value)
        return value

    async def close(self) -> None:
        """Stop polling (live batches run on server-side; ``--resume`` collects them) and close clients."""
        if self._window is not None:
            self._window.cancel()
        for item in self._queue:
            if not item.placed.done():
                item.placed.set_exception(stopped_error())
        self._queue.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.server.close()
        if self.fallback is not None:
            await self.fallback.close()

    def counts(self) -> dict[str, int]:
        """For the progress display: requests queued, calls waiting in live batches, live batches."""
        live = sum(1 for w in self._watches.values() if not w.ended.done())
        return {"queued": len(self._queue), "waiting": self._waiting, "batches": live}

    # ------------------------------------------------------------------------------------ one call
    async def _send(self, call: Outbound) -> dict[str, Any]:
        cfg = call.cfg
        call.row.meta.update(transport="batch", custom_id=call.key)  # priced at the batch price (agent/cost.py)
        outcome, tries = await self._earlier(call)
        while outcome is None or (outcome.failure is not None and outcome.failure.retryable):
            if outcome is not None and tries >= cfg.max_attempts:
                assert outcome.failure is not None
                raise ProviderError("exhausted", f"gave up after {tries} batch(es); last error: "
                                    f"{outcome.failure.message}", status=outcome.failure.status, attempts=tries)
            if outcome is not None and self.settings.fallback == "sync" and self.fallback is not None:
                return await self._sync(call, tries)
            try:
                outcome = await self._through_batch(call)
            except ProviderError as exc:
                exc.attempts += tries
                raise
            tries += 1
            call.row.attempts = call.row.meta["batch_tries"] = tries
        call.row.attempts = tries
        if outcome.failure is not None:
            f = outcome.failure
            raise ProviderError(f.kind, f.message, status=f.status, attempts=tries)
        assert outcome.value is not None
        return outcome.value

    async def _earlier(self, call: Outbound) -> tuple[wire.LineOutcome | None, int]:
        """The request's fate in a batch of an earlier process (or an earlier attempt's still-live batch)."""
        sid = self._latest.get(call.key)
        sub = await self.ledger.get(sid) if sid is not None else None
        if sub is None or sub.state == "void":
            return None, 0
        if sub.state in UNRESOLVED:  # its submission could not be settled with the server: never resend it
            raise ProviderError("server", f"submission {sid} of an earlier run could not be checked against the "
                                "server's batches; try again later", attempts=0)
        if sub.state == "collected":
            ref = await self.ledger.result(sub.submission_id, call.key)
            if ref is None or not ref.ok:
                return None, 0  # failed lines are not cached: this process tries them afresh, as when synchronous
            self._admit_paid(call)
            return await self._read(call, sub.submission_id), 1
        self._admit_paid(call)  # a live batch of an earlier process: wait for it
        return await self._await_batch(call, sub.submission_id), 1

    def _admit_paid(self, call: Outbound) -> None:
        """Admission for a request an earlier process already sent: counted now, never refused for money
        (its price is spent whatever this process decides)."""
        try:
            call.admit()
        except ProviderError as exc:
            if exc.kind == "stopped":
                raise
            call.admitted = True

    async def _through_batch(self, call: Outbound) -> wire.LineOutcome:
        line = wire.input_line(call.key, self.server.endpoint, call.body)
        if len(line) > self.settings.max_bytes:
            raise ProviderError("bad_request", f"request of {len(line)} bytes is larger than a batch file may be "
                                f"({self.settings.max_bytes})", attempts=0)
        item = _Queued(call, line, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._enqueue(item)
        if not await self._until(item.placed) and item in self._queue:
            self._queue.remove(item)  # stopping before its batch was made: never sent
            self._queue_bytes -= len(item.line)
            raise stopped_error()
        sid = await item.placed  # a submission under way finishes quickly; a refusal raises here
        call.row.queue_s += time.perf_counter() - item.queued_at
        return await self._await_batch(call, sid)

    async def _await_batch(self, call: Outbound, sid: str) -> wire.LineOutcome:
        watch = self._watches[sid]
        call.row.meta.update(submission_id=sid, batch_id=watch.batch_id)
        on_wire = time.perf_counter()
        self._waiting += 1
        self._notify()
        try:
            ended = await self._until(watch.ended)
        finally:
            self._waiting -= 1
            call.row.server_s += time.perf_counter() - on_wire
        if not ended:
            raise ProviderError("stopped", f"left running server-side in batch {watch.batch_id}; --resume collects "
                                "it", attempts=1)
        await watch.ended  # re-raises a poller failure (a bug) instead of waiting forever
        return await self._read(call, sid)

    async def _read(self, call: Outbound, sid: str) -> wire.LineOutcome:
        """The call's line in its collected batch, as an outcome; trace meta from the ledger."""
        sub = await self.ledger.get(sid)
        assert sub is not None
        call.row.meta.update(submission_id=sid, batch_id=sub.batch_id, batch_status=sub.status,
                             batch_times={k: v for k, v in sub.times.items() if v is not None})
        ref = await self.ledger.result(sid, call.key)
        path = self.results_dir / (sub.results_path or "")
        if ref is None or not sub.results_path or not path.is_file():
            return wire.missing(f"batch {sub.batch_id} ended {sub.status}")
        raw = await asyncio.to_thread(_read_at, path, ref.offset, ref.length)
        outcome = wire.line_outcome(self.role, json.loads(raw))
        value = outcome.value
        if value is not None and "b64" in value:
            try:
                value["data"], value["ext"] = await asyncio.to_thread(decode_b64_image, value.pop("b64"))
            except Exception as exc:  # noqa: BLE001 - a broken image is the answer's fault: retried
                return wire.LineOutcome(failure=Failure(True, "bad_response", 200, f"image does not decode: {exc}"))
        return outcome

    async def _sync(self, call: Outbound, tries: int) -> dict[str, Any]:
        """``--batch-fallback sync``: the leftover goes as one synchronous request (sync price)."""
        assert self.fallback is not None
        call.row.meta.update(transport="sync", batch_fallback=True)
        try:
            value = await self.fallback.send(call)
        except ProviderError as exc:
            exc.attempts += tries
            call.row.attempts = exc.attempts
            raise
        call.row.attempts += tries
        return value

    # ------------------------------------------------------------------------------- the queue
    def _enqueue(self, item: _Queued) -> None:
        if self._queue and self._queue_bytes + len(item.line) > self.settings.max_bytes:
            self._flush()
        self._queue.append(item)
        self._queue_bytes += len(item.line)
        if len(self._queue) >= self.settings.max_requests:
            self._flush()
        elif self._window is None:
            self._window = asyncio.get_running_loop().call_later(self.settings.window_s, self._flush)
        self._notify()

    def _flush(self) -> None:
        """Close the current batch: its submission runs as a task of its own."""
        if self._window is not None:
            self._window.cancel()
            self._window = None
        items, self._queue, self._queue_bytes = self._queue, [], 0
        if items:
            self._spawn(self._submit(items))

    async def _submit(self, items: list[_Queued]) -> None:
        admitted = [item for item in items if self._admit(item)]
        if not admitted:
            return
        sid = uuid.uuid4().hex
        since = time.time()
        try:
            await self.ledger.intent(sid, run_id=self.server.run_id, role=self.role, endpoint=self.server.endpoint,
                                     custom_ids=[i.call.key for i in admitted])
            for item in admitted:
                self._latest[item.call.key] = sid
            batch = await self._upload_and_create(sid, b"".join(i.line for i in admitted), since)
        except BaseException as exc:
            for item in admitted:
                if not item.placed.done():
                    item.placed.set_exception(_per_call(exc))
            raise
        self._watch(sid, batch.id)
        for item in admitted:
            item.placed.set_result(sid)
        LOG.info("batch %s (%s): %d request(s) submitted", batch.id, self.role, len(admitted))

    def _admit(self, item: _Queued) -> bool:
        try:
            item.call.admit()
        except ProviderError as exc:  # refused (budget, stop): left out of the batch, never sent
            item.placed.set_exception(exc)
            return False
        return True

    async def _upload_and_create(self, sid: str, data: bytes, since: float) -> Any:
        try:
            file_id = await self.server.upload(sid, data)
        except ProviderError as exc:
            await self.ledger.void(sid, f"upload failed: {exc}")
            raise
        await self.ledger.uploaded(sid, file_id)
        try:
            batch = await self.server.create(sid, file_id, since)
        except ProviderError as exc:  # did the last try make it after all? Only the listing can tell
            batch = await self._settle(sid, since, exc)
        await self.ledger.submitted(sid, batch.id, wire.snapshot(batch))
        return batch

    async def _settle(self, sid: str, since: float, failure: ProviderError) -> Any:
        try:
            found = await self.server.find({sid}, since)
        except ProviderError:
            raise failure from None  # left unresolved: the next process settles it before sending anything
        if sid in found:
            return found[sid]
        await self.ledger.void(sid, f"batches.create failed: {failure}")
        raise failure

    # ---------------------------------------------------------------------------- live batches
    def _watch(self, sid: str, batch_id: str) -> None:
        watch = _Watch(batch_id, asyncio.get_running_loop().create_future())
        watch.ended.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._watches[sid] = watch
        watch.task = self._spawn(self._poll(sid, watch))

    async def _poll(self, sid: str, watch: _Watch) -> None:
        delay, last = self.settings.poll_s, None
        try:
            while not self._stopping_now():
                try:
                    batch = await self.server.retrieve(watch.batch_id)
                except ProviderError as exc:  # keep watching: the batch runs on whatever our network does
                    if exc.kind == "not_found":  # deleted server-side: none of its requests will be answered
                        await self.ledger.collected(sid, {"status": "not_found"}, "", [])
                        watch.ended.set_result(None)
                        return
                    LOG.warning("batch %s: poll failed (%s); retrying in %.0f s", watch.batch_id, exc, delay)
                    await self._sleep(delay)
                    continue
                snap = wire.snapshot(batch)
                if snap != last:
                    await self.ledger.seen(sid, snap)
                    last = snap
                if batch.status in wire.TERMINAL:
                    await self._collect(sid, batch)
                    watch.ended.set_result(None)
                    self._notify()
                    return
                await self._sleep(delay)
                delay = min(delay * POLL_GROWTH, self.settings.poll_max_s)
        except BaseException as exc:
            if not watch.ended.done():
                watch.ended.set_exception(exc if isinstance(exc, Exception) else stopped_error())
            raise

    async def _collect(self, sid: str, batch: Any) -> None:
        """Save the ended batch's lines, index them in the ledger (a kill after this loses nothing)."""
        name = f"{batch.id}.jsonl"
        path = self.results_dir / name
        await self.server.download(batch, path)
        index = await asyncio.to_thread(_index_file, path)
        await self.ledger.collected(sid, wire.snapshot(batch), name, index)
        if batch.status != "completed":
            LOG.warning("%s: %d line(s) answered; the rest go to the next batch", wire.batch_problem(batch),
                        sum(1 for _, ok, _, _ in index if ok))

    # ------------------------------------------------------------------------- start and stop
    async def _start(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_future()
            self._spawn(self._watch_stop())
        if self._ready is None or (self._ready.done() and (self._ready.cancelled() or self._ready.exception())):
            self._ready = asyncio.ensure_future(self._recover())
        await asyncio.shield(self._ready)

    async def _recover(self) -> None:
        """Settle what an earlier process left (see the module docstring); once per process."""
        for key, sid in await self.ledger.members(role=self.role):
            self._latest[key] = sid
        subs = await self.ledger.submissions(role=self.role)
        unresolved = [s for s in subs if s.state in UNRESOLVED and s.submission_id not in self._watches]
        if unresolved:
            found = await self.server.find({s.submission_id for s in unresolved},
                                           min(s.created_at for s in unresolved))
            for sub in unresolved:
                batch = found.get(sub.submission_id)
                if batch is None:
                    await self.ledger.void(sub.submission_id, "no batch with this submission id on the server")
                    continue
                await self.ledger.submitted(sub.submission_id, batch.id, wire.snapshot(batch))
                LOG.info("batch %s (%s): found by its submission id after a restart", batch.id, self.role)
        for sub in await self.ledger.submissions(role=self.role, states=("submitted",)):
            if sub.submission_id not in self._watches and sub.batch_id:
                self._watch(sub.submission_id, sub.batch_id)

    async def _watch_stop(self) -> None:
        assert self._stopping is not None
        while not self._stop():
            await asyncio.sleep(STOP_CHECK_S)
        self._stopping.set_result(None)
        self._notify()

    def _stopping_now(self) -> bool:
        return self._stopping is not None and self._stopping.done()

    async def _until(self, fut: asyncio.Future[Any]) -> bool:
        """Wait for ``fut``; False when a stop was asked for first."""
        assert self._stopping is not None
        if not fut.done() and not self._stopping.done():
            await asyncio.wait({fut, self._stopping}, return_when=asyncio.FIRST_COMPLETED)
        return fut.done()

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        await asyncio.wait({self._stopping}, timeout=seconds)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.debug("batch task ended with %r", task.exception())

    def _notify(self) -> None:
        if self.notify is not None:
            self.notify(self.role, self.counts())


def _per_call(exc: BaseException) -> BaseException:
    """A failed submission's error for one of its calls: nothing was sent (attempts 0); calls mutate their own."""
    if isinstance(exc, ProviderError):
        return ProviderError(exc.kind, f"batch submission failed: {exc.message}", status=exc.status, attempts=0)
    return exc if isinstance(exc, Exception) else stopped_error()


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(length)


def _index_file(path: Path) -> list[tuple[str, bool, int, int]]:
    with path.open("rb") as fh:
        return list(wire.index_lines(fh))
