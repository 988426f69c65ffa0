"""``python -m agent.export RUN --format imagefolder|parquet|webdataset --out DIR`` (console script ``ltgc-export``).

    python -m agent.export runs/r1 --format imagefolder --out exports/r1-if
    python -m agent.export runs/r1 --format webdataset --out exports/r1-wds --include-originals --min-score 0.2

Contract
- Exports the images a run accepted (:mod:`agent.export.source`: a finished run's manifest, or what an
  interrupted or still-running run has accepted so far), in the run's order and numbering, with a dataset
  card ``README.md`` (:mod:`agent.export.card`) and ``ltgc-export.json`` (format, class names by label,
  rows, options, whether the run had finished, and the export's fingerprint).
- ``--include-originals`` adds the tail classes' real images; ``--min-score S`` keeps generated images whose
  CLIP score is >= S; ``--classes FILE`` (the run's ``tail.txt`` format) keeps those classes only. Labels stay
  the run's whatever is kept.
- **Atomic**: everything is written into a hidden staging folder beside ``--out`` and renamed into place at the
  end; an interrupted export leaves ``--out`` as it was (an older export, or nothing). **Idempotent**: an
  export whose fingerprint (format, options, every row, the run's state) matches the one already in
  ``--out`` writes nothing ("up to date"); otherwise the new folder replaces the old one whole.
- ``--out`` must be new, empty, or an earlier export (it holds ``ltgc-export.json``): anything else is refused
  rather than replaced. Bad input: one line on stderr, exit status 2. Exit 0 otherwise.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.errors import entry_point
from agent.export.source import ExportError, ExportRow, RunData, read_run
from store.cli import OneLineParser

__all__ = ["EXPORT_FILE", "build_parser", "fingerprint", "main"]

EXPORT_FILE = "ltgc-export.json"
DEFAULT_SHARD_MB = 500.0


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m agent.export",
                      description="Export a run's accepted images as an HF ImageFolder, parquet shards or "
                                  "WebDataset shards, with a dataset card.")
    p.add_argument("run", type=Path, help="the run folder (--out of python -m agent.run)")
    p.add_argument("--format", required=True, choices=("imagefolder", "parquet", "webdataset"))
    p.add_argument("--out", required=True, type=Path, help="the export folder (new, empty, or an earlier export)")
    p.add_argument("--include-originals", action="store_true", help="add the tail classes' real images")
    p.add_argument("--min-score", type=float, default=None, help="keep generated images with CLIP score >= S")
    p.add_argument("--classes", type=Path, default=None,
                   help="keep only these classes (one name, or label<TAB>name, per line)")
    p.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_MB,
                   help=f"parquet / webdataset: images per shard, in MB (default {DEFAULT_SHARD_MB:g})")
    return p


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    return _export(build_parser().parse_args(argv))


def _export(args: Any) -> int:
    started = time.perf_counter()
    if args.shard_mb <= 0:
        raise ExportError(f"--shard-mb must be > 0, got {args.shard_mb:g}")
    out: Path = args.out
    _check_out(out)
    run = read_run(args.run, include_originals=args.include_originals)
    rows = _select(run, args)
    options = {"include_originals": args.include_originals, "min_score": args.min_score,
               "classes": sorted({r.class_name for r in rows}) if args.classes else None,
               "shard_mb": args.shard_mb if args.format != "imagefolder" else None}
    key = fingerprint(args.format, options, run, rows)
    if _existing_key(out) == key:
        print(f"{out}: up to date ({len(rows)} images, {args.format}); nothing written")
        return 0
    from agent.export.card import render_card
    from agent.export.writers import write

    out.parent.mkdir(parents=True, exist_ok=True)
    _drop_stale(out)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        files = write(args.format, run, rows, stage, shard_bytes=int(args.shard_mb * 1024 * 1024))
        (stage / "README.md").write_text(render_card(args.format, run, rows, options, files), encoding="utf-8")
        doc = {"format": args.format, "fingerprint": key, "run": str(args.run.resolve()), "run_id": run.run_id,
               "run_finished": run.finished, "run_state": run.state, "rows": len(rows), "classes": run.names,
               "files": files, "options": options}
        # Written last: a folder with this file is a whole export (the trainer and the next export rely on it).
        (stage / EXPORT_FILE).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _swap_in(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    wall = time.perf_counter() - started
    note = "" if run.finished else f"; the run is not finished ({run.state}): the card says so"
    print(f"{out}: {len(rows)} images exported as {args.format} in {len(files)} file(s), {size / 1e6:.1f} MB, "
          f"{wall:.1f} s{note}")
    return 0


def _select(run: RunData, args: Any) -> list[ExportRow]:
    rows = run.rows if args.include_originals else [r for r in run.rows if r.source == "generated"]
    if args.min_score is not None:
        rows = [r for r in rows if r.source == "original" or (r.score is not None and r.score >= args.min_score)]
    if args.classes is not None:
        keep = _read_classes(args.classes, run)
        rows = [r for r in rows if r.class_name in keep]
    return rows


def _read_classes(path: Path, run: RunData) -> set[str]:
    from agent.lifecycle.inputs import read_tail

    entries, _ = read_tail(path)
    known = set(run.counts)
    unknown = [e for e in entries if e.name not in known]
    if unknown:
        raise ExportError(f"{unknown[0].where}: class {unknown[0].name!r} is not a class of run {run.run_id!r} "
                          f"({', '.join(sorted(known))}); fix the name or drop the line")
    return {e.name for e in entries}


def fingerprint(fmt: str, options: dict[str, Any], run: RunData, rows: Sequence[ExportRow]) -> str:
    """sha256 over what decides an export's content: format, options, class names, run state, every row."""
    digest = hashlib.sha256(json.dumps([fmt, options, run.names, run.state, run.run_id], sort_keys=True).encode())
    for row in rows:
        digest.update(json.dumps([str(row.file), row.metadata(run)], sort_keys=True).encode() + b"\n")
    return digest.hexdigest()


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_FILE).is_file():
        raise ExportError(f"--out {out}: not empty and not an earlier export (no {EXPORT_FILE}); give a new or "
                          f"empty folder")


def _existing_key(out: Path) -> str | None:
    try:
        return json.loads((out / EXPORT_FILE).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _drop_stale(out: Path) -> None:
    """Staging and old folders that a killed export left beside ``--out`` (hidden; never a whole export)."""
    for pattern in (f".{out.name}.partial-*", f".{out.name}.old-*"):
        for leftover in out.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(stage: Path, out: Path) -> None:
    """Put ``stage`` at ``out``: renames only, so ``out`` is at every moment the old export, nothing, or the new."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
        stage.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(out)
