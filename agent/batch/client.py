"""The Batch API calls one role makes, each under the one retry policy: upload, create, find, poll, download.

Contract:

- :meth:`BatchClient.upload` — ``files.create(purpose="batch")``; the file's id.
- :meth:`BatchClient.create` — ``batches.create(completion_window="24h", metadata=...)``. Before it
  *retries* a create (after a timeout the server may have made the batch all the same) it looks for the
  submission id among the listed batches, so one submission never becomes two batches.
- :meth:`BatchClient.find` — ``batches.list`` newest first, back to an hour before ``since``: the batches
  whose metadata names one of ``submission_ids`` (how a restarted run finds a batch it never recorded).
- :meth:`BatchClient.retrieve`, :meth:`BatchClient.cancel`.
- :meth:`BatchClient.download` — a batch's output file then its error file, streamed into one local file,
  written whole or not at all (``.part`` + rename, fsynced).
A final failure is a ``ProviderError`` (agent/providers/retry.py), as for any other request.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import openai

from agent.batch import wire
from agent.providers.config import RoleConfig
from agent.providers.retry import call_with_retry

__all__ = ["BatchClient"]

T = TypeVar("T")
# How far before the oldest unresolved submission a search of batches.list looks: server and local clocks
# differ, and the listing is by the server's creation time.
FIND_SLACK_S = 3600.0
LIST_PAGE = 100  # the API's largest page


class BatchClient:
    """One role's SDK client plus its retry settings."""

    def __init__(self, client: openai.AsyncOpenAI, cfg: RoleConfig, *, role: str, run_id: str) -> None:
        self.client, self.cfg, self.role, self.run_id = client, cfg, role, run_id
        self.endpoint = wire.ENDPOINTS[role]

    async def close(self) -> None:
        await self.client.close()

    async def upload(self, submission_id: str, data: bytes) -> str:
        file = await self._retry(lambda: self.client.files.create(
            file=(f"ltgc-{submission_id}.jsonl", data), purpose="batch"))
        return str(file.id)

    async def create(self, submission_id: str, file_id: str, since: float) -> Any:
        tried = False

        async def attempt() -> Any:
            nonlocal tried
            if tried:  # the last attempt may have made the batch before it failed: never make two
                found = await self.find({submission_id}, since)
                if submission_id in found:
                    return found[submission_id]
            tried = True
            return await self.client.batches.create(
                input_file_id=file_id, endpoint=self.endpoint,  # type: ignore[arg-type]
                completion_window="24h", metadata=wire.metadata(self.run_id, submission_id, self.role))

        return await self._retry(attempt)

    async def find(self, submission_ids: Collection[str], since: float) -> dict[str, Any]:
        """``{submission id: batch}`` for the listed batches that carry one of ``submission_ids``."""

        async def scan() -> dict[str, Any]:
            found: dict[str, Any] = {}
            async for batch in self.client.batches.list(limit=LIST_PAGE):
                sid = wire.submission_of(batch)
                if sid is not None and sid in submission_ids and sid not in found:
                    found[sid] = batch
                if len(found) == len(submission_ids) or batch.created_at < since - FIND_SLACK_S:
                    break
            return found

        return await self._retry(scan)

    async def retrieve(self, batch_id: str) -> Any:
        return await self._retry(lambda: self.client.batches.retrieve(batch_id))

    async def cancel(self, batch_id: str) -> Any:
        return await self._retry(lambda: self.client.batches.cancel(batch_id))

    async def download(self, batch: Any, path: Path) -> None:
        """The batch's output then error lines, streamed to ``path.part``, fsynced, renamed to ``path``."""
        part = path.with_name(path.name + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)

        async def fetch() -> None:
            with part.open("wb") as fh:  # a retried download starts the file again
                for file_id in (batch.output_file_id, batch.error_file_id):
                    if not file_id:
                        continue
                    last = b"\n"
                    async with self.client.files.with_streaming_response.content(file_id) as resp:
                        async for chunk in resp.iter_bytes():
                            fh.write(chunk)
                            last = chunk[-1:] or last
                    if last != b"\n":
                        fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())

        await self._retry(fetch)
        os.replace(part, path)

    async def _retry(self, fn: Callable[[], Awaitable[T]]) -> T:
        value, _ = await call_with_retry(fn, max_attempts=self.cfg.max_attempts, initial_s=self.cfg.backoff_initial_s,
                                         max_s=self.cfg.backoff_max_s)
        return value
