"""What the review app shows, read from the run folder without writing to it.

Contract:

- :func:`review_view(run_dir)` gives one :class:`ClassView` per class of the run (every class by name, in
  the run's order): its status — ``awaiting review`` for a thread paused at the review ``interrupt()`` —
  and, for a waiting class, the interrupt's payload (agent/graph/review.py ``review_payload``) read from its
  checkpoint through LangGraph's ``StateSnapshot.interrupts``, plus the decisions already saved for that
  round (agent/review/decisions.py).
- Checkpoints are opened read-only and strict (agent/lifecycle/checkpoints.py ``read_checkpoints``).
- :func:`blob_relpath` is where an item's image lives, relative to the run folder (the app's ``/img/`` URLs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.lifecycle.folder import CHECKPOINTS, CONFIG, read_json
from agent.readout.status import status_rows
from agent.review.decisions import read_decisions
from store.blobs import BlobError, BlobStore

__all__ = ["AWAITING", "ClassView", "blob_relpath", "review_view"]

AWAITING = "awaiting review"


@dataclass
class ClassView:
    name: str
    status: str
    payload: dict[str, Any] | None = None  # the interrupt's payload while the class awaits review
    decisions: dict[str, Any] = field(default_factory=dict)  # saved for the payload's round

    @property
    def waiting(self) -> bool:
        return self.payload is not None

    def rejected_indices(self) -> dict[int, str]:
        return {int(r["index"]): str(r["note"]) for r in self.decisions.get("reject", [])}


def review_view(run_dir: Path) -> list[ClassView]:
    """Every class of the run with its status; the payload and saved decisions of the waiting ones."""
    payloads = _payloads(run_dir)
    out = []
    for row in status_rows(run_dir):
        name = row["class_name"]
        payload = payloads.get(name)
        status = AWAITING if payload is not None else str(row["status"])
        decisions = read_decisions(run_dir, name, int(payload["round"])) if payload else None
        out.append(ClassView(name, status, payload, decisions or {}))
    return out


def blob_relpath(sha256: str | None, ext: str | None) -> str | None:
    """``blobs/ab/ab....png`` for an item's image; ``None`` for an item without a (valid) image.

    >>> blob_relpath("ab" * 32, "png")[:12], blob_relpath(None, None), blob_relpath("../x", "png")
    ('blobs/ab/aba', None, None)
    """
    if not sha256 or not ext:
        return None
    try:
        return BlobStore(Path("blobs")).path(sha256, ext).as_posix()
    except BlobError:
        return None


def _payloads(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Class name -> the payload of its pending review interrupt (LangGraph's own record of the pause)."""
    from agent.graph.graph import compile_graph  # LangGraph: imported only when a page is read
    from agent.lifecycle.checkpoints import read_checkpoints

    path = run_dir / CHECKPOINTS
    run_id = str(read_json(run_dir / CONFIG).get("run_id") or "")
    if not path.is_file() or not run_id:
        return {}
    out: dict[str, dict[str, Any]] = {}
    with read_checkpoints(path) as saver:
        graph = compile_graph(saver)
        threads = [t for (t,) in saver.conn.execute("SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id LIKE ?",
                                                    (f"{run_id}/%",))]
        for thread in threads:
            snap = graph.get_state({"configurable": {"thread_id": thread}})
            for pending in snap.interrupts:
                value = pending.value
                if isinstance(value, dict) and value.get("kind") == "ltgc-review":
                    out[thread[len(run_id) + 1:]] = value
    return out
