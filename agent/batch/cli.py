"""``python -m agent.traces RUN batches [--cancel] [--json]``: a run's Batch API batches, and cancelling them.

Contract:

- Lists every submission in ``RUN/batches.sqlite`` (read-only): batch id, role, requests, completed / failed
  (the server's counts as last seen by the run), status, local state (store/batches.py), age, run id.
- ``--cancel`` asks the server to cancel the run's live batches (state ``submitted``, status not final),
  with the run's own provider settings (``RUN/config.json``; the API key from its environment variable)
  and prints each batch's new status. The run's next ``--resume`` collects what the batches answered
  before they stopped and sends the rest again.
- A run that used no batch is one ``error:`` line (exit 2) from the caller.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from agent.lifecycle.folder import RunFolder, read_json
from store.batches import Submission, read_submissions
from store.errors import UsageError

__all__ = ["batch_rows", "cancel_live"]

FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class BatchInspectError(UsageError):
    """Bad input to ``batches`` (one line)."""


def batch_rows(run_dir: Path, now: float | None = None) -> list[dict[str, Any]]:
    """One row per submission of the run folder, oldest first."""
    path = RunFolder(run_dir).batch_ledger
    if not path.is_file():
        raise BatchInspectError(f"{run_dir}: no {path.name} (this run sent nothing through the Batch API; "
                                "batch a role with --t2i-batch, --llm-batch or --lmm-batch)")
    now = time.time() if now is None else now
    return [_row(sub, now) for sub in read_submissions(path)]


def live(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["state"] == "submitted" and r["status"] not in FINAL and r["batch_id"]]


def cancel_live(run_dir: Path, rows: list[dict[str, Any]], env: Any = os.environ) -> list[dict[str, Any]]:
    """Cancel the live batches among ``rows``; ``{"batch_id", "role", "status"}`` per batch after the call."""
    from agent.batch.client import BatchClient
    from agent.batch.setup import _client
    from agent.providers.config import ConfigError, load_providers_config
    from agent.providers.retry import ProviderError

    path = RunFolder(run_dir).config
    try:
        saved = read_json(path, missing="missing")
        config = load_providers_config(None, env, None, toml_doc=saved.get("providers") or {})
    except UsageError as exc:  # RunFolderError, ConfigError
        raise BatchInspectError(f"{path}: cannot read the run's provider settings ({exc})") from None

    async def go() -> list[dict[str, Any]]:
        done = []
        for row in live(rows):
            cfg = config.role(row["role"])
            server = BatchClient(_client(row["role"], cfg, env), cfg, role=row["role"], run_id=str(row["run_id"]))
            try:
                batch = await server.cancel(row["batch_id"])
            finally:
                await server.close()
            done.append({"batch_id": row["batch_id"], "role": row["role"], "status": batch.status})
        return done

    try:
        return asyncio.run(go())
    except (ProviderError, ConfigError) as exc:
        raise BatchInspectError(f"cancel: {exc}") from None


def _row(sub: Submission, now: float) -> dict[str, Any]:
    counts = sub.counts or {}
    return {"batch_id": sub.batch_id, "submission_id": sub.submission_id, "role": sub.role, "run_id": sub.run_id,
            "requests": sub.requests, "completed": counts.get("completed"), "failed": counts.get("failed"),
            "status": sub.status, "state": sub.state, "age_s": round(now - sub.created_at, 1), "note": sub.note}


def age_text(seconds: float) -> str:
    """An age for a table.

    >>> age_text(75), age_text(7300)
    ('1m15s', '2h01m')
    """
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
