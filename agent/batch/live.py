"""One role's batches that exist server-side: settled after a restart, polled, collected; and the stop signal.

Contract (used by agent/batch/transport.py's transport):

- ``await start()`` (first call of each process, retried after a failure): reads the ledger's requests
  (``latest``: custom_id -> its latest submission), settles submissions an earlier process left ``intent``
  / ``uploaded`` by looking for their submission id in the server's batches (``submitted`` if found,
  ``void`` if not), and polls every ``submitted`` batch again.
- ``watch(sid, batch_id)`` starts one poller: ``batches.retrieve`` with back-off (``poll_s`` growing 1.5x to
  ``poll_max_s``; a failed poll is retried, a batch gone from the server (404) ends with no answers), each
  change of status / counts / times recorded (ledger ``seen``); at a final status the output and error
  files are saved under ``results_dir`` and indexed (ledger ``collected``), then ``ended(sid)`` resolves.
- ``await until(fut)`` waits for ``fut`` or a stop request, whichever comes first (False on a stop): one
  task reads the stop flag every ``STOP_CHECK_S``, however many calls wait. On a stop, pollers end; the
  batches run on server-side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.batch import wire
from agent.batch.client import BatchClient
from agent.providers.retry import ProviderError
from agent.providers.transport import stopped_error
from store.batches import UNRESOLVED, BatchLedger

__all__ = ["LiveBatches"]

LOG = logging.getLogger(__name__)
STOP_CHECK_S = 0.1
POLL_GROWTH = 1.5


@dataclass
class _Watch:
    batch_id: str
    ended: asyncio.Future[None]  # set once the batch's lines are on disk and indexed


class LiveBatches:
    """See the module docstring."""

    def __init__(self, role: str, server: BatchClient, ledger: BatchLedger, *, poll_s: float, poll_max_s: float,
                 results_dir: Path, stop_requested: Callable[[], bool], on_change: Callable[[], None]) -> None:
        self.role, self.server, self.ledger = role, server, ledger
        self.poll_s, self.poll_max_s, self.results_dir = poll_s, poll_max_s, results_dir
        self._stop, self._on_change = stop_requested, on_change
        self.latest: dict[str, str] = {}  # custom_id -> the latest submission holding it
        self._watches: dict[str, _Watch] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready: asyncio.Task[None] | None = None
        self._stopping: asyncio.Future[None] | None = None

    async def start(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_future()
            self.spawn(self._watch_stop())
        if self._ready is None or (self._ready.done() and (self._ready.cancelled() or self._ready.exception())):
            self._ready = asyncio.ensure_future(self._recover())
        await asyncio.shield(self._ready)

    def watch(self, sid: str, batch_id: str) -> None:
        watch = _Watch(batch_id, asyncio.get_running_loop().create_future())
        watch.ended.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "never retrieved"
        self._watches[sid] = watch
        self.spawn(self._poll(sid, watch))

    def batch_id(self, sid: str) -> str:
        return self._watches[sid].batch_id

    def ended(self, sid: str) -> asyncio.Future[None]:
        return self._watches[sid].ended

    def live(self) -> int:
        return sum(1 for w in self._watches.values() if not w.ended.done())

    @property
    def stopping(self) -> bool:
        return self._stopping is not None and self._stopping.done()

    async def until(self, fut: asyncio.Future[Any]) -> bool:
        """Wait for ``fut``; False when a stop was asked for first."""
        assert self._stopping is not None, "start() first"
        if not fut.done() and not self._stopping.done():
            await asyncio.wait({fut, self._stopping}, return_when=asyncio.FIRST_COMPLETED)
        return fut.done()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def close(self) -> None:
        """End every poller and the stop monitor (the batches stay on the server)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled, or already logged by _done
                pass

    # ------------------------------------------------------------------------------------- helpers
    async def _recover(self) -> None:
        for key, sid in await self.ledger.members(role=self.role):
            self.latest[key] = sid
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
                self.watch(sub.submission_id, sub.batch_id)

    async def _poll(self, sid: str, watch: _Watch) -> None:
        delay, last = self.poll_s, None
        try:
            while not self.stopping:
                try:
                    batch = await self.server.retrieve(watch.batch_id)
                except ProviderError as exc:  # keep watching: the batch runs whatever our network does
                    if exc.kind == "not_found":  # gone server-side: none of its requests will be answered
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
                    self._on_change()
                    return
                await self._sleep(delay)
                delay = min(delay * POLL_GROWTH, self.poll_max_s)
        except BaseException as exc:  # a bug or a cancel: waiting calls must not wait forever
            if not watch.ended.done():
                watch.ended.set_exception(exc if isinstance(exc, Exception) else stopped_error())
            raise

    async def _collect(self, sid: str, batch: Any) -> None:
        """Save the ended batch's lines and index them in the ledger (a kill after this loses nothing)."""
        name = f"{batch.id}.jsonl"
        path = self.results_dir / name
        await self.server.download(batch, path)
        index = await asyncio.to_thread(_index_file, path)
        await self.ledger.collected(sid, wire.snapshot(batch), name, index)
        if batch.status != "completed":
            LOG.warning("%s: %d line(s) answered; the rest go to the next batch", wire.batch_problem(batch),
                        sum(1 for _, ok, _, _ in index if ok))

    async def _watch_stop(self) -> None:
        assert self._stopping is not None
        while not self._stop():
            await asyncio.sleep(STOP_CHECK_S)
        self._stopping.set_result(None)
        self._on_change()

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        await asyncio.wait({self._stopping}, timeout=seconds)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.debug("batch task ended with %r", task.exception())


def _index_file(path: Path) -> list[tuple[str, bool, int, int]]:
    with path.open("rb") as fh:
        return list(wire.index_lines(fh))
