"""The reviewer's decisions, saved at once in the run folder's ``review.sqlite``.

Contract:

- :class:`DecisionStore` is the only code that writes ``review.sqlite``; each method is one committed
  transaction (closing the tab or killing the server loses nothing already clicked). Decisions are keyed by
  class and *review round* (the ``round`` of the class's interrupt payload, agent/graph/review.py), so a
  round's decisions are applied once: after a resume the class waits at the next round, with none yet.
- :func:`read_decisions` (read-only; the run driver on ``--resume``) gives the resume value of one class
  and round, or ``None`` when nothing was decided yet — such a class keeps waiting and costs nothing.
- Class names are data (bound parameters), never part of a path or a statement.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from agent.lifecycle.folder import REVIEW_DB

__all__ = ["DecisionStore", "read_decisions"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS rejects (
    class_name TEXT NOT NULL, round INTEGER NOT NULL, item INTEGER NOT NULL, note TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL, PRIMARY KEY (class_name, round, item));
CREATE TABLE IF NOT EXISTS classes (
    class_name TEXT NOT NULL, round INTEGER NOT NULL, template TEXT, approved INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL, PRIMARY KEY (class_name, round));
"""


class DecisionStore:
    """Read-write access to ``<run>/review.sqlite`` (WAL, one statement per decision, committed at once)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / REVIEW_DB
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=10000"):
            self.conn.execute(pragma)
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def reject(self, class_name: str, round_: int, item: int, note: str = "") -> None:
        self.conn.execute("INSERT OR REPLACE INTO rejects VALUES (?, ?, ?, ?, ?)",
                          (class_name, round_, item, note.strip(), time.time()))

    def unreject(self, class_name: str, round_: int, item: int) -> None:
        self.conn.execute("DELETE FROM rejects WHERE class_name = ? AND round = ? AND item = ?",
                          (class_name, round_, item))

    def set_class(self, class_name: str, round_: int, *, template: str | None = None,
                  approved: bool | None = None) -> None:
        """Save an edited template and/or the approval; a field left ``None`` keeps its saved value."""
        self.conn.execute(
            "INSERT INTO classes (class_name, round, template, approved, at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (class_name, round) DO UPDATE SET template = COALESCE(excluded.template, template), "
            "approved = CASE WHEN ? IS NULL THEN approved ELSE excluded.approved END, at = excluded.at",
            (class_name, round_, template, int(bool(approved)), time.time(), approved))

    def decisions(self, class_name: str, round_: int) -> dict[str, Any] | None:
        return _decisions(self.conn, class_name, round_)


def read_decisions(run_dir: Path, class_name: str, round_: int) -> dict[str, Any] | None:
    """The saved decisions of one class's review round, read-only; ``None`` when there are none (or no file).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     print(read_decisions(Path(d), "fox", 0))
    ...     s = DecisionStore(Path(d)); s.reject("fox", 0, 3, "wrong animal"); s.set_class("fox", 0, approved=True)
    ...     s.close(); print(read_decisions(Path(d), "fox", 0))
    None
    {'round': 0, 'reject': [{'index': 3, 'note': 'wrong animal'}], 'template': None, 'approve': True}
    """
    path = Path(run_dir) / REVIEW_DB
    if not path.is_file():
        return None
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return _decisions(conn, class_name, round_)
    finally:
        conn.close()


def _decisions(conn: sqlite3.Connection, class_name: str, round_: int) -> dict[str, Any] | None:
    rejects = conn.execute("SELECT item, note FROM rejects WHERE class_name = ? AND round = ? ORDER BY item",
                           (class_name, round_)).fetchall()
    row = conn.execute("SELECT template, approved FROM classes WHERE class_name = ? AND round = ?",
                       (class_name, round_)).fetchone()
    template, approved = row if row else (None, 0)
    if not rejects and not template and not approved:
        return None
    return {"round": round_, "reject": [{"index": int(i), "note": str(n)} for i, n in rejects],
            "template": template, "approve": bool(approved)}
