"""The run folder of ``python -m agent.run --out RUN``: its file names, and the one reader and writers of its JSON.

Contract:

- The layout, owned here (every other module names a file through :class:`RunFolder` or these constants)::

      RUN/
        config.json         what this invocation used (written at start-up; --resume, status, batches read it)
        summary.json        per class: status, counts, tokens, cost; totals (written once, at the end)
        manifest.jsonl      the accepted images (store.manifest)
        rejected.jsonl      the items the run rejected, with every round's score
        report.html         the report's index, page 1 (agent/readout/report.py)
        report/             its other pages: index-<n>.html, <slug>.html per class, thumbs/<sha256>.webp
        cache.sqlite        the call cache (store.cache)
        traces.sqlite       one row per call (store.traces)
        checkpoints.sqlite  LangGraph checkpoints (opened only by agent/lifecycle/checkpoints.py)
        batches.sqlite      the Batch API ledger (store.batches), and batches/ its results files
        blobs/              content-addressed bytes (store.blobs)
        images/<slug>/      the accepted images, the manifest's paths
        run.lock            held while an agent.run works here (agent/lifecycle/lock.py)
        review.sqlite       a reviewer's decisions, per class and review round (--review; agent/review/decisions.py)
        review-apply.log    the output of the review page's Apply button (agent/review/app.py)

- :func:`read_json` is the one reader of the folder's JSON documents: a JSON object, ``{}`` for a missing
  file unless the caller says why it must be there, and otherwise one line (``<path>: <what>``) as the
  caller's :class:`store.errors.UsageError` subclass (default :class:`RunFolderError`).
- :func:`write_json` writes one document atomically (indent 2, UTF-8, trailing newline):
  :meth:`RunFolder.write_config` and :meth:`RunFolder.write_summary` are the only writers of
  ``config.json`` and ``summary.json``.
- Standard library and ``store`` only: cheap to import from any CLI, the graph included.

>>> run = RunFolder(Path("runs/r1"))
>>> run.summary.as_posix(), run.checkpoints.name, accepted_image_path("red-fox", "ab12", "png")
('runs/r1/summary.json', 'checkpoints.sqlite', 'images/red-fox/ab12.png')
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.errors import UsageError
from store.manifest import atomic_write_lines, atomic_write_text

__all__ = ["BATCH_LEDGER", "BATCH_RESULTS", "BLOBS", "CACHE", "CHECKPOINTS", "CONFIG", "IMAGES", "LOCK", "MANIFEST",
           "REJECTED", "REPORT", "REPORT_PAGES", "REVIEW_DB", "REVIEW_LOG", "SUMMARY", "TRACES", "RunFolder",
           "RunFolderError", "accepted_image_path",
           "read_json", "read_jsonl", "write_json"]

CONFIG, SUMMARY = "config.json", "summary.json"
MANIFEST, REJECTED, REPORT, REPORT_PAGES = "manifest.jsonl", "rejected.jsonl", "report.html", "report"
CACHE, TRACES, CHECKPOINTS = "cache.sqlite", "traces.sqlite", "checkpoints.sqlite"
BATCH_LEDGER, BATCH_RESULTS = "batches.sqlite", "batches"
BLOBS, IMAGES, LOCK = "blobs", "images", "run.lock"
REVIEW_DB, REVIEW_LOG = "review.sqlite", "review-apply.log"


class RunFolderError(UsageError):
    """A run folder file that cannot be read (one line: the path, what is wrong)."""


@dataclass(frozen=True)
class RunFolder:
    """Typed paths of one run folder (see the module docstring for what each holds)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def rejected(self) -> Path:
        return self.root / REJECTED

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def report_pages(self) -> Path:
        return self.root / REPORT_PAGES

    @property
    def cache(self) -> Path:
        return self.root / CACHE

    @property
    def traces(self) -> Path:
        return self.root / TRACES

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def batch_ledger(self) -> Path:
        return self.root / BATCH_LEDGER

    @property
    def batch_results(self) -> Path:
        return self.root / BATCH_RESULTS

    @property
    def blobs(self) -> Path:
        return self.root / BLOBS

    @property
    def images(self) -> Path:
        return self.root / IMAGES

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    def write_config(self, doc: Mapping[str, Any]) -> None:
        """``config.json``: written at start-up, before any call (agent/lifecycle/driver.py)."""
        write_json(self.config, doc)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """``summary.json``: the run's record, written once at the end; a failure here is the run's failure."""
        write_json(self.summary, summary)

    def write_rejected(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """``rejected.jsonl``: one JSON object per line, rebuilt whole (idempotent)."""
        atomic_write_text(self.rejected, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def accepted_image_path(slug: str, sha256: str, ext: str) -> str:
    """An accepted image's path inside the run folder, as the manifest writes it (``images/<slug>/<sha>.<ext>``)."""
    return f"{IMAGES}/{slug}/{sha256}.{ext}"


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """One JSON document, atomically: the old file stays whole if this fails (a full disk). Streamed chunk by
    chunk, the bytes ``json.dumps(doc, indent=2)`` gives: at 10^4 classes summary.json is ~25 MB, and building
    it as one string first cost ~170 MB of peak memory (issue 23)."""
    encoder = json.JSONEncoder(indent=2, ensure_ascii=False)
    atomic_write_lines(path, itertools.chain(encoder.iterencode(doc), ["\n"]))


def read_json(path: Path, *, missing: str | None = None,
              error: type[UsageError] = RunFolderError) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when the file is missing, or ``error(f"{path}: {missing}")`` when
    the caller gives the reason it must be there. Unreadable, not JSON, or not an object: one-line ``error``.

    >>> read_json(Path("/nonexistent/summary.json"))
    {}
    >>> read_json(Path("/nonexistent/summary.json"), missing="missing")
    Traceback (most recent call last):
    ...
    agent.lifecycle.folder.RunFolderError: /nonexistent/summary.json: missing
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing is None:
            return {}
        raise error(f"{path}: {missing}") from None
    except (OSError, ValueError) as exc:
        raise error(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise error(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


def read_jsonl(path: Path, *, error: type[UsageError] = RunFolderError) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, one per non-blank line; ``[]`` when the file is missing;
    ``error("<path>:<line>: not JSON (...)")`` for a line that is not JSON."""
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise error(f"{path}:{number}: not JSON ({exc})") from None
    return out
