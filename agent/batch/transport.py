"""The Batch API transport: one role's cache misses, from every class, sent as OpenAI batches — crash-safe.

Contract (a :class:`agent.providers.transport.Transport`; the graph and the providers do not change):

- ``await send(call)`` queues the request; the queue becomes one batch input file (``custom_id`` = the call's
  cache key) when it holds ``max_requests`` requests or would pass ``max_bytes`` (the API's 50,000 / 200 MB),
  or ``window_s`` after its first request. Then, per request, :meth:`Outbound.admit` (stop check + budget:
  the price is reserved now; a refused call is left out and gets the refusal), and for the batch: ledger
  ``intent`` -> upload -> ledger ``uploaded`` -> ``batches.create`` -> ledger ``submitted`` (store/batches.py:
  every step recorded before the next one talks to the server). One poller per live batch retrieves it with
  back-off (``poll_s`` growing 1.5x to ``poll_max_s``); at its end the output and error files are saved in
  ``batches/`` and indexed (ledger ``collected``) before any waiting call gets its line (agent/batch/live.py).
  Two identical requests in flight at once (same cache key) share one line.
- ``send`` returns what the synchronous transport would: the line's body read by the same functions
  (``chat_value`` / ``image_value``; images decoded here, a broken one retried like any failed line).
- **Never twice.** On its first call the transport reads the ledger: a submission left ``intent`` or
  ``uploaded`` by a killed process is looked up among the server's batches by the submission id in their
  metadata (adopted if found, ``void`` if not); live batches are polled again. A request whose key is in a
  live batch waits for it, one whose answer is in a collected batch takes it from disk; only a request in
  no batch, or whose batch ended without answering it, is queued. Such a request, sent by an earlier
  process, is admitted (counted in the budget) when this process takes it over, but never refused for
  money: it is paid for already.
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
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.batch import wire
from agent.batch.client import BatchClient
from agent.batch.live import LiveBatches
from agent.lifecycle.settings import default
from agent.providers.images import decode_b64_image
from agent.providers.retry import Failure, ProviderError
from agent.providers.transport import Outbound, Transport, stopped_error
from store.batches import UNRESOLVED, BatchLedger

__all__ = ["BatchSettings", "BatchTransport"]

LOG = logging.getLogger(__name__)
Notify = Callable[[str, dict[str, int]], None]


@dataclass(frozen=True)
class BatchSettings:
    """When a batch closes and how it is watched (``--batch-*`` flags; defaults suit a real run)."""

    max_requests: int = default("batch_max_requests")
    max_bytes: int = wire.MAX_FILE_BYTES
    window_s: float = default("batch_window_s")
    poll_s: float = default("batch_poll_s")
    poll_max_s: float = default("batch_poll_max_s")
    fallback: Literal["none", "sync"] = default("batch_fallback")


@dataclass
class _Queued:
    call: Outbound
    line: bytes
    placed: asyncio.Future[str]  # the submission id, once the batch holding the request exists
    queued_at: float


class BatchTransport:
    """See the module docstring. Built by agent/batch/setup.py; closed by the providers."""

    def __init__(self, role: str, server: BatchClient, ledger: BatchLedger, settings: BatchSettings, *,
                 results_dir: Path, stop_requested: Callable[[], bool], fallback: Transport | None = None,
                 notify: Notify | None = None) -> None:
        self.role, self.server, self.ledger, self.settings = role, server, ledger, settings
        self.results_dir, self.fallback, self.notify = results_dir, fallback, notify
        self.live = LiveBatches(role, server, ledger, poll_s=settings.poll_s, poll_max_s=settings.poll_max_s,
                                results_dir=results_dir, stop_requested=stop_requested, on_change=self._notify)
        self._queue: list[_Queued] = []
        self._queue_bytes = 0
        self._window: asyncio.TimerHandle | None = None
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}  # same key twice at once: one request
        self._waiting = 0  # calls whose request is in a live batch

    # ------------------------------------------------------------------------------------ Transport
    async def send(self, call: Outbound) -> dict[str, Any]:
        await self.live.start()
        shared = self._inflight.get(call.key)
        if shared is not None:  # an identical request of another class is on its way: share its answer
            call.row.meta.update(transport="batch", custom_id=call.key, shared=True)
            call.row.cost_usd = 0.0  # billed once, on the row of the call that sent it
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
        await self.live.close()
        await self.server.close()
        if self.fallback is not None:
            await self.fallback.close()

    def counts(self) -> dict[str, int]:
        """For the progress display: requests queued, calls waiting in live batches, live batches."""
        return {"queued": len(self._queue), "waiting": self._waiting, "batches": self.live.live()}

    # ------------------------------------------------------------------------------------ one call
    async def _send(self, call: Outbound) -> dict[str, Any]:
        cfg = call.cfg
        call.row.meta.update(transport="batch", custom_id=call.key)  # priced at the batch price (agent/readout/cost.py)
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
        sid = self.live.latest.get(call.key)
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
        if not await self.live.until(item.placed) and item in self._queue:
            self._queue.remove(item)  # stopping before its batch was made: never sent
            self._queue_bytes -= len(item.line)
            raise stopped_error()
        sid = await item.placed  # a submission under way finishes quickly; a refusal raises here
        call.row.queue_s += time.perf_counter() - item.queued_at
        return await self._await_batch(call, sid)

    async def _await_batch(self, call: Outbound, sid: str) -> wire.LineOutcome:
        batch_id, ended = self.live.batch_id(sid), self.live.ended(sid)
        call.row.meta.update(submission_id=sid, batch_id=batch_id)
        on_wire = time.perf_counter()
        self._waiting += 1
        self._notify()
        try:
            done = await self.live.until(ended)
        finally:
            self._waiting -= 1
            call.row.server_s += time.perf_counter() - on_wire
        if not done:
            raise ProviderError("stopped", f"left running server-side in batch {batch_id}; --resume collects it",
                                attempts=1)
        await ended  # re-raises a poller failure (a bug) instead of waiting forever
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
            self.live.spawn(self._submit(items))

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
                self.live.latest[item.call.key] = sid
            batch = await self._upload_and_create(sid, b"".join(i.line for i in admitted), since)
        except BaseException as exc:
            for item in admitted:
                if not item.placed.done():
                    item.placed.set_exception(_per_call(exc))
            raise
        self.live.watch(sid, batch.id)
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
