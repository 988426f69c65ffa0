"""The run's dataset outputs, gathered class by class: ``manifest.jsonl``, ``rejected.jsonl``, summary entries.

Contract:

- :class:`Outputs` takes each class's final state the moment the class is done with it (:meth:`Outputs.add`)
  and keeps only what summary.json needs (one entry per class); the class's manifest and rejected rows go to
  a private temporary SQLite database (on disk, deleted on close), so the driver holds no class's state
  after the class finishes: memory grows with classes by one summary entry each, not by items (issue 23).
- :meth:`Outputs.write` streams the rows back: ``manifest.jsonl`` sorted by (label, source, path) — the
  order and bytes :func:`store.manifest.write_manifest` gives — and ``rejected.jsonl`` in class order, both
  atomically; a path listed twice is a :class:`~store.manifest.ManifestError`, as there. It returns
  summary.json's ``classes`` in the inputs' class order.
- Adding a class twice replaces its earlier rows (a class gated for softmax scoring finishes once, but a
  caller may add its state again).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.graph.finalize import class_summary, generated_rows, rejected_rows
from agent.graph.state import ClassState
from agent.lifecycle.folder import RunFolder
from agent.lifecycle.inputs import ClassSpec, Inputs
from store.manifest import SOURCES, ManifestError, ManifestRow, atomic_write_lines
from store.slug import slugify

__all__ = ["Outputs"]

_SCHEMA = """
CREATE TABLE manifest (class INTEGER, label INTEGER, source INTEGER, path TEXT, line TEXT);
CREATE TABLE rejected (class INTEGER, seq INTEGER, line TEXT);
CREATE INDEX manifest_class ON manifest (class);
CREATE INDEX rejected_class ON rejected (class);
"""


class Outputs:
    """Rows and summary entries of one invocation's classes (see the module docstring)."""

    def __init__(self, inputs: Inputs, run_id: str, *, include_originals: bool) -> None:
        self.inputs, self.run_id, self.include_originals = inputs, run_id, include_originals
        self.index = {spec.name: i for i, spec in enumerate(inputs.classes)}
        self.entries: dict[str, dict[str, Any]] = {}
        self.unfinished: dict[str, int] = {}  # class -> N_y of a class added before it was done (none of it written)
        # "" = a private temporary database on disk: SQLite spills it to a temp file past its page cache.
        self.db = sqlite3.connect("")
        self.db.executescript(_SCHEMA)

    def has(self, name: str) -> bool:
        return name in self.entries

    def add(self, spec: ClassSpec, state: ClassState) -> None:
        """Take what the outputs need from ``spec``'s state (final, or wherever the class stopped)."""
        index = self.index[spec.name]
        rows: list[ManifestRow] = []
        rejected: list[dict[str, Any]] = []
        if state.get("done"):
            rows += generated_rows(state, self.run_id)
            rejected += rejected_rows(state, self.run_id)
            self.unfinished.pop(spec.name, None)
        else:
            self.unfinished[spec.name] = max(0, int(state.get("n_y", 0)))
        if self.include_originals:
            rows += [ManifestRow(path=p, label=spec.label, class_name=spec.name, source="original",
                                 sha256=_sha256_file(Path(p))) for p in spec.images]
        with self.db:
            self.db.execute("DELETE FROM manifest WHERE class = ?", (index,))
            self.db.execute("DELETE FROM rejected WHERE class = ?", (index,))
            self.db.executemany("INSERT INTO manifest VALUES (?, ?, ?, ?, ?)",
                                [(index, r.label, SOURCES.index(r.source), r.path, r.to_json()) for r in rows])
            self.db.executemany("INSERT INTO rejected VALUES (?, ?, ?)",
                                [(index, seq, json.dumps(r, ensure_ascii=False)) for seq, r in enumerate(rejected)])
        self.entries[spec.name] = class_summary(state) if state else {"label": spec.label, "slug": slugify(spec.name)}

    def write(self, run: RunFolder) -> dict[str, dict[str, Any]]:
        """Write manifest.jsonl and rejected.jsonl; return summary.json's ``classes`` in class order (a class
        never added gets the entry of a class that never started)."""
        duplicate = self.db.execute("SELECT path FROM manifest GROUP BY path HAVING COUNT(*) > 1 LIMIT 1").fetchone()
        if duplicate:
            raise ManifestError(f"{run.manifest}: duplicate row for image {duplicate[0]!r}")
        atomic_write_lines(run.manifest, self._lines("SELECT line FROM manifest ORDER BY label, source, path"))
        atomic_write_lines(run.rejected, self._lines("SELECT line FROM rejected ORDER BY class, seq"))
        return {spec.name: self.entries.get(spec.name) or {"label": spec.label, "slug": slugify(spec.name)}
                for spec in self.inputs.classes}

    def finished(self, name: str) -> bool:
        """Whether ``name`` was added with a done state (its images are in the manifest)."""
        return name in self.entries and name not in self.unfinished

    def unfinished_n_y(self, name: str) -> int:
        """N_y of a class that was not done (0 for a class never added): what it is missing."""
        return self.unfinished.get(name, 0)

    def generated_paths(self) -> Iterator[str]:
        """Every generated image's path (relative to the run folder), streamed."""
        generated = SOURCES.index("generated")
        for (path,) in self.db.execute("SELECT path FROM manifest WHERE source = ?", (generated,)):
            yield path

    def close(self) -> None:
        self.db.close()

    def _lines(self, sql: str) -> Iterator[str]:
        for (line,) in self.db.execute(sql):
            yield line + "\n"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
