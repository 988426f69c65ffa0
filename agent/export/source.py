"""What an export reads from a run folder: the accepted rows (with their metadata) and the facts for the card.

Contract
- :func:`read_run` returns a :class:`RunData`: ``rows`` (one :class:`ExportRow` per image, in the manifest's
  order: label, source, path), ``names`` (every class name by label: the run's numbering), ``finished``,
  and the facts the dataset card records (config, summary, per-class counts, dates).
- A **finished** run (every class of ``config.json`` done in ``checkpoints.sqlite`` — or no checkpoints kept —,
  ``summary.json`` written, no ``agent.run`` holding the folder) is read from ``manifest.jsonl`` — the contract the run promises. A run that is still running
  or was interrupted is read from its checkpoints (read-only): the images accepted so far, taken from
  ``images/`` when the class was finalized and from ``blobs/`` otherwise; ``finished`` is then ``False``.
- Originals: the manifest's ``original`` rows when it has them (the run's ``--include-originals``), else,
  when asked, the run's recorded inputs (``config.json``'s ``--images`` / ``--train-list``) read again.
- A folder that is not a run, or a run whose files cannot be read, raises :class:`ExportError` (one line).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.lifecycle.folder import RunFolder, read_json
from store.errors import UsageError
from store.manifest import ManifestError, ManifestRow, read_manifest

__all__ = ["ExportError", "ExportRow", "RunData", "class_names", "read_run"]


class ExportError(UsageError):
    """A run folder or option an export cannot use (one line: what, where, how to fix)."""


@dataclass(frozen=True)
class ExportRow:
    """One image to export: where its bytes are and every metadata field the formats carry."""

    file: Path  # the image file on disk (the run's images/, blobs/, or an original's path)
    ext: str  # "png", "jpg", ... (no dot)
    label: int
    class_name: str
    source: str  # "generated" or "original"
    sha256: str
    description: str | None = None
    score: float | None = None
    round: int | None = None

    def metadata(self, run: RunData) -> dict[str, Any]:
        """The per-image metadata every format writes (JSON-ready; the same keys in every format).

        ``c_y`` is the class's feature template C_y (paper §3.1), ``clip_score`` the score the image was kept
        with, ``models`` the generating model of each role, ``seed`` the image model's seed when one was set.
        """
        generated = self.source == "generated"
        return {
            "label": self.label, "class_name": self.class_name, "source": self.source, "sha256": self.sha256,
            "description": self.description, "c_y": run.templates.get(self.class_name) if generated else None,
            "clip_score": self.score, "round": self.round,
            "model_lmm": run.models.get("lmm") if generated else None,
            "model_llm": run.models.get("llm") if generated else None,
            "model_t2i": run.models.get("t2i") if generated else None,
            "seed": run.seed if generated else None, "run_id": run.run_id if generated else None,
        }


@dataclass
class RunData:
    """A run as an export sees it."""

    run_dir: Path
    run_id: str
    rows: list[ExportRow]
    names: list[str]  # class name by label, the run's numbering
    finished: bool
    state: str  # "finished", "running" or "interrupted"
    config: dict[str, Any]
    summary: dict[str, Any]
    counts: dict[str, dict[str, int]]  # class -> original / generated / rejected
    templates: dict[str, str] = field(default_factory=dict)  # class -> C_y
    models: dict[str, str] = field(default_factory=dict)  # role -> model
    seed: int | None = None
    dates: tuple[float, float] | None = None  # first and last request (traces.sqlite), epoch seconds


def read_run(run_dir: Path, *, include_originals: bool) -> RunData:
    """Read ``run_dir`` (see the module docstring)."""
    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise ExportError(f"{run_dir}: not a run folder (no config.json); give the --out folder of "
                          f"python -m agent.run")
    config = read_json(folder.config, error=ExportError)
    summary = read_json(folder.summary, error=ExportError)
    classes = [c for c in config.get("classes", []) if isinstance(c, dict) and isinstance(c.get("name"), str)]
    states = _states(run_dir)
    live = _live(run_dir)
    done = {name: bool(st.get("done")) for name, st in states.items()}
    # Without checkpoints (a copy of the run's outputs only) the manifest and summary are all there is.
    finished = (not live and folder.manifest.is_file() and bool(summary)
                and (not states or all(done.get(c["name"], False) for c in classes)))
    if finished:
        rows = _manifest_rows(folder)
    else:
        rows = _state_rows(run_dir, states, str(config.get("run_id") or ""))
    if include_originals and not any(r.source == "original" for r in rows):
        rows += _input_rows(config)
    # The manifest's order (label, source, path): within a class, a generated path is images/<slug>/<sha>.
    rows.sort(key=lambda r: (r.label, 0 if r.source == "original" else 1,
                             r.sha256 if r.source == "generated" else str(r.file)))
    providers = config.get("providers") or {}
    data = RunData(
        run_dir=run_dir, run_id=str(config.get("run_id") or ""), rows=rows, names=class_names(config, classes),
        finished=finished, state="finished" if finished else ("running" if live else "interrupted"),
        config=config, summary=summary, counts=_counts(classes, summary, states, rows),
        templates={name: str(st["template"]) for name, st in states.items() if st.get("template")}
        or {name: str(c["template"]) for name, c in (summary.get("classes") or {}).items() if c.get("template")},
        models={role: str(p.get("model")) for role, p in providers.items() if isinstance(p, dict) and p.get("model")},
        seed=((providers.get("t2i") or {}).get("seed")), dates=_dates(run_dir),
    )
    return data


def class_names(config: dict[str, Any], classes: list[dict[str, Any]]) -> list[str]:
    """Every class name by label: the run's own classes at their labels, the rest of the dataset's names
    (``--class-names``, else the sorted ``--images`` folders: the agent's numbering rule) where known,
    ``"label <k>"`` for a gap nobody named.

    >>> class_names({}, [{"name": "fox", "label": 1}, {"name": "owl", "label": 0}])
    ['owl', 'fox']
    >>> class_names({}, [{"name": "fox", "label": 2}])
    ['label 0', 'label 1', 'fox']
    """
    known: dict[int, str] = {}
    run = config.get("run") or {}
    try:
        if run.get("class_names"):
            from store.lists import read_class_map
            known.update(read_class_map(Path(run["class_names"])))
        elif run.get("images"):
            from store.lists import read_image_folder
            known.update(enumerate(f.name for f in read_image_folder(Path(run["images"]))))
    except (OSError, UsageError):
        pass  # moved or gone since the run: the run's own classes still name themselves
    known.update({int(c["label"]): str(c["name"]) for c in classes})
    if not known:
        return []
    return [known.get(k, f"label {k}") for k in range(max(known) + 1)]


def _manifest_rows(folder: RunFolder) -> list[ExportRow]:
    try:
        rows = read_manifest(folder.manifest)
    except ManifestError as exc:
        raise ExportError(str(exc)) from None
    return [_from_manifest(folder.root, r) for r in rows]


def _from_manifest(run_dir: Path, row: ManifestRow) -> ExportRow:
    file = row.resolve(run_dir)
    return ExportRow(file, file.suffix.lstrip(".").lower() or "png", row.label, row.class_name, row.source,
                     row.sha256, row.description, row.score, row.round)


def _state_rows(run_dir: Path, states: dict[str, dict[str, Any]], run_id: str) -> list[ExportRow]:
    """The images accepted so far, from the classes' latest checkpoints (done or not)."""
    from agent.graph.finalize import accepted_items, image_relpath
    from store.blobs import BlobStore

    blobs = BlobStore(RunFolder(run_dir).blobs)
    rows = []
    for name, state in states.items():
        for item in accepted_items(state):  # type: ignore[arg-type]
            placed = run_dir / image_relpath(state, item)  # type: ignore[arg-type]
            file = placed if placed.is_file() else blobs.path(item["sha256"] or "", item["ext"] or "png")
            if not file.is_file():
                continue  # accepted in the checkpoint but its bytes are gone: nothing to export
            rows.append(ExportRow(file, str(item["ext"] or "png"), int(state["label"]), name, "generated",
                                  str(item["sha256"]), item["description"], float(item["scores"][-1]),
                                  int(item["round"])))
    return rows


def _input_rows(config: dict[str, Any]) -> list[ExportRow]:
    """The tail classes' real images, read again from the inputs the run recorded."""
    import hashlib

    from agent.lifecycle.inputs import load_inputs

    run = config.get("run") or {}
    if not run.get("classes"):
        return []
    try:
        inputs = load_inputs(Path(run["classes"]), images_dir=_path(run.get("images")),
                             train_list=_path(run.get("train_list")), data_root=_path(run.get("data_root")),
                             class_names_file=_path(run.get("class_names")))
    except UsageError as exc:
        raise ExportError(f"--include-originals: the run's inputs cannot be read again ({exc}); restore them, "
                          f"or export without --include-originals") from None
    rows = []
    for spec in inputs.classes:
        for image in spec.images:
            path = Path(image)
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            rows.append(ExportRow(path, path.suffix.lstrip(".").lower(), spec.label, spec.name, "original", sha))
    return rows


def _states(run_dir: Path) -> dict[str, dict[str, Any]]:
    if not RunFolder(run_dir).checkpoints.is_file():
        return {}
    from agent.readout.status import read_class_states

    try:
        return {name: st.values for name, st in read_class_states(run_dir).items()}
    except UsageError as exc:
        raise ExportError(str(exc)) from None


def _live(run_dir: Path) -> bool:
    from agent.lifecycle.lock import holder

    return holder(run_dir) is not None


def _counts(classes: list[dict[str, Any]], summary: dict[str, Any], states: dict[str, dict[str, Any]],
            rows: list[ExportRow]) -> dict[str, dict[str, int]]:
    out = {}
    by_class = summary.get("classes") or {}
    for c in classes:
        name = c["name"]
        items = (states.get(name) or {}).get("items") or []
        rejected = sum(1 for i in items if i.get("status") in ("rejected", "failed")) if items \
            else int((by_class.get(name) or {}).get("rejected") or 0)
        out[name] = {"original": int(c.get("M_y") or 0),
                     "generated": sum(1 for r in rows if r.class_name == name and r.source == "generated"),
                     "rejected": rejected}
    return out


def _dates(run_dir: Path) -> tuple[float, float] | None:
    path = RunFolder(run_dir).traces
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            first, last = conn.execute("SELECT MIN(started_at), MAX(started_at) FROM traces").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None
    return (float(first), float(last)) if first is not None else None


def _path(value: Any) -> Path | None:
    return Path(value) if isinstance(value, str) and value else None
