"""The run's report: ``report.html`` (index) + ``report/<slug>.html`` (one page per class) + thumbnails.

Contract:

- :func:`write_report(run_dir, states=None)` reads ``summary.json`` (required) and, class by class, the
  class's final graph state (from ``states`` when the caller passes them, else from ``checkpoints.sqlite``,
  read-only, one class at a time), writes that class's page, then the index pages (``report/index-<n>.html``,
  then ``report.html`` last). A run folder without checkpoints is read from ``manifest.jsonl`` (required
  then) and ``rejected.jsonl``. ``python -m agent.report RUN_DIR`` rebuilds the report of an existing run.
- Memory is one class's state plus one index row per class (name, entry, <= 3 thumbnail names): the report
  of a 10^4-class run is written without holding the run (issue 23).
- Thumbnails (``report/thumbs/<sha256>.webp``, :mod:`agent.readout.thumbs`) are made once per image and
  reused by every later report of the folder; the pages link each one to its full image.
- Every file is written atomically (temp + rename): a killed or failed report leaves every page whole, old or
  new. Pages are not fsynced — they are rebuilt from the run's records at will, and one fsync per class page
  cost ~10 ms a class here (100 s at 10^4 classes) — and a page that already holds the same text is not
  rewritten, so the report at the end of a resumed or repeated run touches only the classes that changed. What the pages contain and how they are escaped:
  :mod:`agent.readout.report_pages`.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("agent.report", "report.html is written atomically: the old one, if any, is intact")

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.errors import entry_point
from agent.lifecycle.folder import MANIFEST, RunFolder, read_json, read_jsonl
from agent.readout.report_pages import (
    INDEX_THUMBS,
    PAGE_CLASSES,
    ClassView,
    IndexRow,
    class_page,
    index_name,
    index_page,
    page_count,
)
from agent.readout.thumbs import Thumbs
from store.blobs import BlobStore, is_sha256
from store.cli import OneLineParser
from store.errors import UsageError
from store.logs import cli_logging
from store.manifest import ManifestError, ManifestRow, file_mode, read_manifest
from store.slug import slugify

__all__ = ["ClassView", "ReportError", "main", "write_page", "write_report"]


class ReportError(UsageError):
    """A run folder the report cannot be built from (one line)."""


def write_report(run_dir: Path | str, states: Mapping[str, Mapping[str, Any]] | None = None, *,
                 summary: Mapping[str, Any] | None = None) -> Path:
    """Build the run's report (see the module docstring); returns the index's path, ``run_dir/report.html``.
    ``summary``: the run's summary.json as the caller holds it (the run itself: not read back, a second
    copy of ~25 MB of JSON at 10^4 classes). :class:`ReportError` for an unusable folder."""
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    if summary is None:
        summary = read_json(run.summary, missing="missing — is this a finished run folder (python -m agent.run "
                            "--out ...)?", error=ReportError)
    run_id = str(summary.get("run_id", run_dir.name))
    entries: dict[str, Any] = summary.get("classes") or {}
    thumbs = Thumbs(run.report_pages / "thumbs")
    blobs = BlobStore(run.blobs)
    rows: list[IndexRow] = []
    counters: dict[str, int] = {}
    with _class_views(run_dir, run_id, states) as view_of:
        for name, entry in entries.items():
            view = view_of(name, dict(entry))
            file = f"{slugify(name)}.html"
            shown = _thumbs_of(run_dir, view, thumbs, blobs)
            blob_paths = _blob_paths(view, blobs)
            write_page(run.report_pages / file, class_page(run_id, view, thumbs=shown, blobs=blob_paths))
            first = tuple(t for t in (shown.get(r.sha256) for r in view.accepted[:INDEX_THUMBS]) if t)
            rows.append(IndexRow(name, file, entry, first))
            for key, value in (entry.get("counters") or {}).items():
                if isinstance(value, int):
                    counters[key] = counters.get(key, 0) + value
    pages = page_count(len(rows))
    totals = dict(summary.get("totals") or {})
    for page in range(pages, 0, -1):  # report.html last: it links to the others
        first_row = (page - 1) * PAGE_CLASSES
        text = index_page(run_id, rows[first_row:first_row + PAGE_CLASSES], page=page, pages=pages,
                          first=first_row, total=len(rows), totals=totals, counters=counters)
        write_page(run_dir / index_name(page), text)
    return run.report


def write_page(path: Path, text: str) -> None:
    """``text`` to ``path`` through a temp file in the same folder and ``os.replace``: whole or not at all.
    A page that already holds ``text`` is left alone (a resumed or rerun report rewrites only what changed)."""
    data = text.encode("utf-8")
    with contextlib.suppress(OSError):
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), file_mode())  # mkstemp made it 0600; pages are read by people
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------- class data
@contextlib.contextmanager
def _class_views(run_dir: Path, run_id: str, states: Mapping[str, Mapping[str, Any]] | None) -> Iterator[Any]:
    """A function ``(name, summary_entry) -> ClassView``, reading what it needs one class at a time."""
    if states is not None:
        yield lambda name, entry: _from_state(name, entry, states.get(name) or {}, run_id)
    elif RunFolder(run_dir).checkpoints.is_file():
        with _checkpoint_states(run_dir, run_id) as state_of:
            yield lambda name, entry: _from_state(name, entry, state_of(name), run_id)
    else:
        yield _from_files(run_dir)


def _from_state(name: str, entry: dict[str, Any], state: Mapping[str, Any], run_id: str) -> ClassView:
    """A class's view from its graph state: the manifest and rejected rows a finished class wrote (the same
    functions: agent/graph/finalize.py), its descriptions and items."""
    from agent.graph.finalize import generated_rows, rejected_rows

    done = bool(state.get("done"))
    return ClassView(name=name, summary=entry,
                     accepted=generated_rows(state, run_id) if done else [],  # type: ignore[arg-type]
                     rejected=rejected_rows(state, run_id) if done else [],  # type: ignore[arg-type]
                     existing=list(state.get("existing", [])), new=list(state.get("new", [])),
                     items=[dict(i) for i in state.get("items", [])])


@contextlib.contextmanager
def _checkpoint_states(run_dir: Path, run_id: str) -> Iterator[Any]:
    """``name -> latest state values`` of the class's thread, read-only (LangGraph imported here only)."""
    from agent.graph.graph import compile_graph
    from agent.lifecycle.checkpoints import read_checkpoints

    path = RunFolder(run_dir).checkpoints
    try:
        with read_checkpoints(path) as saver:
            graph = compile_graph(saver)

            def state_of(name: str) -> Mapping[str, Any]:
                snap = graph.get_state({"configurable": {"thread_id": f"{run_id}/{name}"}})
                return snap.values or {}

            yield state_of
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{path}: not a readable checkpoint file ({exc})") from None


def _from_files(run_dir: Path) -> Any:
    """No checkpoints: every class's rows from manifest.jsonl and rejected.jsonl (held in memory)."""
    run = RunFolder(run_dir)
    try:
        manifest = read_manifest(run.manifest)
    except (ManifestError, OSError) as exc:
        raise ReportError(f"{run_dir}: cannot read {MANIFEST} ({exc})") from None
    accepted: dict[str, list[ManifestRow]] = {}
    for r in manifest:
        if r.source == "generated":
            accepted.setdefault(r.class_name, []).append(r)
    rejected: dict[str, list[dict[str, Any]]] = {}
    for rej in read_jsonl(run.rejected, error=ReportError):
        if isinstance(rej.get("class_name"), str):
            rejected.setdefault(rej["class_name"], []).append(rej)
    return lambda name, entry: ClassView(name=name, summary=entry, accepted=accepted.get(name, []),
                                         rejected=rejected.get(name, []))


def _thumbs_of(run_dir: Path, view: ClassView, thumbs: Thumbs, blobs: BlobStore) -> dict[str, str]:
    """sha256 -> thumbnail file name, for every image the class page shows (made when missing)."""
    out: dict[str, str] = {}
    for row in view.accepted:
        name = thumbs.name(row.sha256, run_dir / row.path)
        if name:
            out[row.sha256] = name
    others = _shown_blobs(view) - set(out)
    found = blobs.find_many(sorted(others))
    for sha in others:
        name = thumbs.name(sha, found.get(sha))
        if name:
            out[sha] = name
    return out


def _blob_paths(view: ClassView, blobs: BlobStore) -> dict[str, str]:
    """Relative paths of the blobs the class page shows that are not accepted images (rejected, before)."""
    found = blobs.find_many(sorted(_shown_blobs(view)))
    # blobs/<shard>/<name>: the store's layout, as strings (relative_to per image cost ~0.3 ms each).
    return {sha: f"blobs/{path.parent.name}/{path.name}" for sha, path in found.items()}


def _shown_blobs(view: ClassView) -> set[str]:
    wanted = {str(r.get("sha256")) for r in view.rejected if r.get("sha256")}
    for item in view.items:
        wanted.update(str(sha) for sha in (item.get("history_images") or []) if sha)
        if item.get("sha256"):
            wanted.add(str(item["sha256"]))
    return {sha for sha in wanted if is_sha256(sha)} - {row.sha256 for row in view.accepted}


@entry_point  # ReportError, a tampered checkpoint, an unreadable trace file: one line, exit 2 (agent/errors.py)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agent.report RUN_DIR``: (re)build the run's report."""
    cli_logging()  # warnings in our words, once; never Python's "WARNING:root:" default
    parser = OneLineParser(prog="python -m agent.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder made by python -m agent.run")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir)
    except OSError as exc:  # a read-only run folder, a full disk: every page, old or new, is whole
        raise ReportError(f"cannot write the report in {args.run_dir} ({exc.strerror or exc}); the old pages, if "
                          "any, are intact — free space or make the folder writable, then run this again") from None
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
