"""Where each class of a run stands, read from its checkpoints without changing anything.

- :func:`read_class_states` — the latest checkpoint of every class thread (read-only, strict:
  ``agent.lifecycle.checkpoints.read_checkpoints``); :func:`status_rows` — ``agent.traces RUN status`` as data, with
  ``running`` / ``interrupted`` told apart by the folder's lock, and ``awaiting review`` for a class paused at
  the review ``interrupt()`` (``--review``).
- :class:`InspectError` — bad input to the inspector or the report (one line: what, where, how to fix).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agent.lifecycle.folder import CONFIG, RunFolder, read_json
from agent.lifecycle.lock import holder
from store.errors import UsageError

if TYPE_CHECKING:
    from agent.graph.state import ClassState

__all__ = ["ClassStatus", "InspectError", "read_class_states", "status_rows"]


class InspectError(UsageError):
    """Bad input to the inspector (one line: what, where, how to fix)."""


@dataclass
class ClassStatus:
    """A class thread's latest checkpoint: its state values, last node run and next node(s)."""

    values: dict[str, Any]
    last: tuple[str, ...]
    next: tuple[str, ...]
    step: int | None


def read_class_states(run_dir: Path) -> dict[str, ClassStatus]:
    """Latest checkpoint of every class thread of the run, read-only (LangGraph imported here only)."""
    from agent.lifecycle.checkpoints import read_checkpoints

    path = RunFolder(run_dir).checkpoints
    if not path.is_file():
        raise InspectError(f"{path}: no checkpoints (the run has not started a class yet)")
    run_id = _run_id(run_dir)
    try:
        with read_checkpoints(path) as saver:
            return _class_states(saver, run_id)
    except sqlite3.DatabaseError as exc:
        raise InspectError(f"{path}: not a readable checkpoint file ({exc})") from None


def _class_states(saver: Any, run_id: str) -> dict[str, ClassStatus]:
    from agent.graph.graph import compile_graph

    threads = [t for (t,) in saver.conn.execute("SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id")]
    graph = compile_graph(saver)
    out: dict[str, ClassStatus] = {}
    for thread in threads:
        if run_id and not thread.startswith(f"{run_id}/"):
            continue
        config: Any = {"configurable": {"thread_id": thread}}
        history = list(graph.get_state_history(config, limit=2))
        if not history:
            continue
        latest = history[0]
        last = tuple(history[1].next) if len(history) > 1 else ()
        if not last and latest.values.get("done"):
            last = ("finalize",)  # a finished class may keep only its latest checkpoint; finalize ends it
        step = (latest.metadata or {}).get("step")
        name = thread[len(run_id) + 1:] if run_id else thread
        out[name] = ClassStatus(dict(latest.values), last, tuple(latest.next), step)
    return out


def status_rows(run_dir: Path) -> list[dict[str, Any]]:
    """``status`` as data: one row per class of the run (classes not started yet included). A class that is
    not done reads ``running`` while an ``agent.run`` holds the folder's lock, else ``interrupted``."""
    run = RunFolder(run_dir)
    states = read_class_states(run_dir) if run.checkpoints.is_file() else {}
    live = holder(run_dir) is not None
    names = [c.get("name") for c in read_json(run.config, error=InspectError).get("classes", [])]
    names = [n for n in names if isinstance(n, str)] + sorted(set(states) - set(names))
    from agent.graph.finalize import shortfall  # with LangGraph: only once there are classes to show

    rows = []
    for name in names:
        st = states.get(name)
        values = st.values if st else {}
        items = values.get("items") or []
        status = values.get("status") if values.get("done") else (("running" if live else "interrupted") if st
                                                                   else "not started")
        if st and not values.get("done") and "review" in st.next and not live:
            status = "awaiting review"  # paused at the review interrupt (agent/graph/review.py)
        rows.append({"class_name": name, "done": bool(values.get("done")), "status": status,
                     "last": list(st.last) if st else [], "next": list(st.next) if st else ["describe"],
                     "step": st.step if st else None, "items": len(items) if st else None,
                     "accepted": sum(1 for i in items if i.get("status") == "accepted") if st else None,
                     "missing_by_reason": None, "missing": None})
        if values.get("done"):
            missing = shortfall(cast("ClassState", values))
            rows[-1] |= {"missing_by_reason": missing, "missing": sum(missing.values())}
    if not rows:
        raise InspectError(f"{run_dir}: no classes found (no {CONFIG} and no checkpoints)")
    return rows


def _run_id(run_dir: Path) -> str:
    run = RunFolder(run_dir)
    for path in (run.config, run.summary):
        run_id = read_json(path, error=InspectError).get("run_id")
        if isinstance(run_id, str) and run_id:
            return run_id
    return ""
