"""``report.html``: one self-contained page per run — what the models wrote and drew, class by class.

Contract:

- :func:`write_report(run_dir, states=None)` reads ``summary.json`` and ``manifest.jsonl`` (required),
  ``rejected.jsonl`` (optional) and the classes' final graph states (passed in by the run driver, or read
  from ``checkpoints.sqlite`` when omitted and the file exists), and writes ``run_dir/report.html``
  atomically. ``python -m agent.report RUN_DIR`` rebuilds it for an existing run.
- Per class (the paper's Fig. 6 / 7 views): status and counts, how the model replies were read (items kept,
  repaired by kind, dropped by reason, refusals, structured replies and fallbacks: the class's ``parse_*``
  and ``structured_*`` counters, also summed over the run at the top), the feature template C_y, the existing and
  new descriptions, a grid of accepted images with score and round, the rejected items with every round's
  score, and before / after pairs for refined items (original text and image vs the final ones; the
  earlier image is shown when the state kept its hash in ``history_images``).
- Offline by construction: inline CSS, no script, no external URL; images are *relative* paths inside the
  run folder (``images/<slug>/...`` for accepted, ``blobs/ab/<sha>.<ext>`` for the others), so the folder
  can be moved or zipped whole. Every text is HTML-escaped.
- :func:`render_html` is pure (data in, text out); the I/O lives in :func:`load_report_data`.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("agent.report", "report.html is written atomically: the old one, if any, is intact")

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import entry_point
from agent.graph.state import REASONS
from agent.lifecycle.folder import MANIFEST, RunFolder, read_json, read_jsonl
from store.blobs import BlobStore, is_sha256
from store.cli import OneLineParser
from store.errors import UsageError
from store.logs import cli_logging
from store.manifest import ManifestError, ManifestRow, atomic_write_text, read_manifest

__all__ = ["ClassView", "ReportData", "ReportError", "load_report_data", "main", "render_html", "write_report"]


class ReportError(UsageError):
    """A run folder the report cannot be built from (one line)."""


@dataclass
class ClassView:
    """Everything shown for one class (plain data, built by :func:`load_report_data`)."""

    name: str
    summary: dict[str, Any]
    accepted: list[ManifestRow] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)  # state items (history, scores, round)


@dataclass
class ReportData:
    run_id: str
    classes: list[ClassView]
    totals: dict[str, Any] = field(default_factory=dict)
    blob_paths: dict[str, str] = field(default_factory=dict)  # sha256 -> path relative to the run folder


# ------------------------------------------------------------------------------------------- I/O
def write_report(run_dir: Path | str, states: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Build ``run_dir/report.html``; returns its path. :class:`ReportError` for an unusable folder."""
    run_dir = Path(run_dir)
    data = load_report_data(run_dir, states)
    path = RunFolder(run_dir).report
    atomic_write_text(path, render_html(data))
    return path


def load_report_data(run_dir: Path, states: Mapping[str, Mapping[str, Any]] | None = None) -> ReportData:
    run = RunFolder(run_dir)
    summary = read_json(run.summary, missing="missing — is this a finished run folder (python -m agent.run --out ...)?",
                        error=ReportError)
    try:
        rows = read_manifest(run.manifest)
    except (ManifestError, OSError) as exc:
        raise ReportError(f"{run_dir}: cannot read {MANIFEST} ({exc})") from None
    rejected = read_jsonl(run.rejected, error=ReportError)
    if states is None:
        states = _states_from_checkpoints(run_dir)
    accepted: dict[str, list[ManifestRow]] = {}
    for r in rows:
        if r.source == "generated":
            accepted.setdefault(r.class_name, []).append(r)
    rejected_by: dict[str, list[dict[str, Any]]] = {}
    for rej in rejected:
        if isinstance(rej.get("class_name"), str):
            rejected_by.setdefault(rej["class_name"], []).append(rej)
    classes = []
    for name, entry in (summary.get("classes") or {}).items():
        state = states.get(name, {})
        classes.append(ClassView(
            name=name, summary=dict(entry),
            accepted=accepted.get(name, []),
            rejected=rejected_by.get(name, []),
            existing=list(state.get("existing", [])), new=list(state.get("new", [])),
            items=[dict(i) for i in state.get("items", [])],
        ))
    return ReportData(run_id=str(summary.get("run_id", run_dir.name)), classes=classes,
                      totals=dict(summary.get("totals") or {}), blob_paths=_blob_paths(run_dir, classes))


def _blob_paths(run_dir: Path, classes: Sequence[ClassView]) -> dict[str, str]:
    """Relative paths of the blobs the page shows that are not accepted images (rejected, before)."""
    wanted: set[str] = set()
    for c in classes:
        wanted.update(str(r.get("sha256")) for r in c.rejected if r.get("sha256"))
        for item in c.items:
            wanted.update(str(sha) for sha in (item.get("history_images") or []) if sha)
            if item.get("sha256"):
                wanted.add(str(item["sha256"]))
    valid = [sha for sha in sorted(wanted) if is_sha256(sha)]  # anything else: nothing to show
    found = BlobStore(RunFolder(run_dir).blobs).find_many(valid)
    # blobs/<shard>/<name>: the store's layout, as strings (relative_to per image cost ~0.3 ms each).
    return {sha: f"blobs/{found[sha].parent.name}/{found[sha].name}" for sha in valid if sha in found}


def _states_from_checkpoints(run_dir: Path) -> dict[str, dict[str, Any]]:
    if not RunFolder(run_dir).checkpoints.is_file():
        return {}
    from agent.readout.status import read_class_states  # LangGraph is imported only when needed

    return {name: snap.values for name, snap in read_class_states(run_dir).items()}


# ---------------------------------------------------------------------------------------- render
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#555}.tmpl{background:#eef4ff;padding:8px 12px;border-radius:6px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:100%;height:auto;image-rendering:pixelated;background:#eee;display:block}
figcaption{font-size:12px;margin-top:4px}.score{font-weight:600}.bad{border-color:#d66}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:8px;max-width:520px}.noimg{color:#999;font-style:italic}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
ol{margin:4px 0 4px 20px;padding:0}details{margin:6px 0}.warn{color:#a60}
"""


def render_html(data: ReportData) -> str:
    """The whole page (pure). Sections appear in the summary's class order."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>LTGC run {e(data.run_id)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>LTGC run <code>{e(data.run_id)}</code></h1>", _totals_table(data),
        _reading_line(_summed_counters(data.classes), "all classes"), "<nav><ul>",
        *(f'<li><a href="#c{i}">{e(c.name)}</a> — {e(str(c.summary.get("status", "?")))}, '
          f'{len(c.accepted)} accepted</li>' for i, c in enumerate(data.classes)),
        "</ul></nav>",
        *(_class_section(i, c, data.blob_paths) for i, c in enumerate(data.classes)),
        "</body>", "</html>",
    ]
    return "\n".join(parts) + "\n"


def _totals_table(data: ReportData) -> str:
    keys = ("M_y", "N_y", "accepted", "rejected", "failed", "missing", "cost_usd")
    cells = [(k, data.totals[k]) for k in keys if k in data.totals]
    # Why images are missing (a short class): the same counts and words as the final line.
    cells += [(f"missing: {REASONS.get(k, k)}", n) for k, n in (data.totals.get("missing_by_reason") or {}).items()]
    # The same counts as the final line and agent.traces (store.trace_schema.counts_sql), named by scope.
    for scope in ("run", "session"):
        counts = data.totals.get(scope) or {}
        cells += [(f"{k} ({'whole run' if scope == 'run' else 'last session'})", counts[k])
                  for k in ("calls", "requests", "cache_hits", "refused", "stopped") if k in counts]
    if not cells:
        return ""
    head = "".join(f"<th>{html.escape(k)}</th>" for k, _ in cells)
    body = "".join(f"<td>{html.escape(_fmt(v))}</td>" for _, v in cells)
    return f'<table class="totals"><tr>{head}</tr><tr>{body}</tr></table>'


def _class_section(index: int, c: ClassView, blobs: Mapping[str, str]) -> str:
    e, s = html.escape, c.summary
    counts = ", ".join(f"{k} {s[k]}" for k in ("M_y", "N_y", "accepted", "rejected", "failed", "rounds") if k in s)
    if s.get("missing"):  # a short class: how many images are missing and why (--resume asks them again)
        counts += f", missing {s['missing']} (" + ", ".join(
            f"{n} {REASONS.get(k, k)}" for k, n in sorted((s.get("missing_by_reason") or {}).items())) + ")"
    template = s.get("template")
    truncated = " (cut by CLIP's 77-token context)" if s.get("template_truncated") else ""
    out = [
        f'<section id="c{index}">', f"<h2>{e(c.name)}</h2>",
        f'<p class="meta">status <b>{e(str(s.get("status", "?")))}</b> · {e(counts)}</p>',
    ]
    if s.get("error"):
        out.append(f'<p class="warn">error: {e(str(s["error"]))}</p>')
    out.append(_reading_line(s.get("counters") or {}, "this class"))
    out.append("<h3>Class feature template C<sub>y</sub></h3>")
    out.append(f'<p class="tmpl">{e(template)}{e(truncated)}</p>' if template else '<p class="noimg">none</p>')
    out += [_descriptions(c), "<h3>Accepted images</h3>", _accepted_grid(c), _refined_pairs(c, blobs),
            _rejected_grid(c, blobs)]
    warnings = s.get("warnings") or []
    if warnings:
        out.append("<details><summary>warnings</summary><ul>"
                   + "".join(f'<li class="warn">{e(str(w))}</li>' for w in warnings) + "</ul></details>")
    out.append("</section>")
    return "\n".join(part for part in out if part)


def _summed_counters(classes: Sequence[ClassView]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in classes:
        for key, value in (c.summary.get("counters") or {}).items():
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return total


def _reading_line(counters: Mapping[str, int], scope: str) -> str:
    """How the model replies were read (agent/graph/reply.py counters): kept, repaired by kind, dropped by reason."""
    items, refusals = counters.get("parse_items", 0), counters.get("parse_refusal", 0)
    if not items and not refusals:
        return ""

    def kinds(prefix: str) -> str:
        found = [f"{k[len(prefix):].replace('_', ' ')} {v}" for k, v in sorted(counters.items())
                 if k.startswith(prefix) and v]
        return f" ({', '.join(found)})" if found else ""

    parts = [f"{items} description(s) read in replies", f"{counters.get('parse_kept', 0)} kept",
             f"{counters.get('parse_repaired', 0)} repaired{kinds('parse_repair_')}",
             f"{counters.get('parse_dropped', 0)} dropped{kinds('parse_drop_')}",
             f"{counters.get('parse_chatter', 0)} other line(s) skipped", f"{refusals} refusal(s)"]
    if counters.get("structured_replies") or counters.get("structured_fallbacks"):
        parts.append(f"{counters.get('structured_replies', 0)} structured repl(ies), "
                     f"{counters.get('structured_fallbacks', 0)} fell back to text")
    return f'<p class="meta reading">Model replies ({html.escape(scope)}): {html.escape(" · ".join(parts))}</p>'


def _descriptions(c: ClassView) -> str:
    if not c.existing and not c.new:
        return ""
    lists = []
    for title, items in (("existing (from the real images)", c.existing), ("new (extend + repetition check)", c.new)):
        lis = "".join(f"<li>{html.escape(t)}</li>" for t in items)
        lists.append(f"<details><summary>{len(items)} {title}</summary><ol>{lis}</ol></details>")
    return "<h3>Descriptions</h3>" + "".join(lists)


def _accepted_grid(c: ClassView) -> str:
    if not c.accepted:
        return '<p class="noimg">no accepted image</p>'
    reviewed = {i.get("sha256"): i.get("reviewed") or [] for i in c.items}
    figures = [
        _figure(row.path, f"score {_fmt(row.score)} · round {row.round or 0}{review_mark(reviewed.get(row.sha256))}",
                row.description or "")
        for row in c.accepted
    ]
    return '<div class="grid">' + "".join(figures) + "</div>"


def _rejected_grid(c: ClassView, blobs: Mapping[str, str]) -> str:
    if not c.rejected:
        return ""
    figures = []
    for r in c.rejected:
        scores = " → ".join(_fmt(x) for x in r.get("scores") or []) or "not scored"
        caption = f"{r.get('status', 'rejected')} · scores {scores}"
        if r.get("error"):
            caption += f" · {r['error']}"
        caption += review_mark(r.get("reviewed"))
        figures.append(_figure(blobs.get(str(r.get("sha256"))), caption, str(r.get("description", "")), bad=True))
    return f"<h3>Rejected ({len(c.rejected)})</h3>" + '<div class="grid">' + "".join(figures) + "</div>"


def _refined_pairs(c: ClassView, blobs: Mapping[str, str]) -> str:
    accepted_path = {row.sha256: row.path for row in c.accepted}
    pairs = []
    for item in c.items:
        history: Sequence[str] = item.get("history") or []
        scores: Sequence[float] = item.get("scores") or []
        if not history or item.get("status") != "accepted":
            continue
        before_images = item.get("history_images") or []
        before = blobs.get(str(before_images[0])) if before_images else None
        after = accepted_path.get(item.get("sha256") or "") or blobs.get(str(item.get("sha256")))
        pairs.append('<div class="pair">'
                     + _figure(before, f"before · score {_fmt(scores[0] if scores else None)}", history[0], bad=True)
                     + _figure(after, f"after {len(history)} refinement(s) · score "
                                      f"{_fmt(scores[-1] if scores else None)}", str(item.get("description", "")))
                     + "</div>")
    if not pairs:
        return ""
    return f"<h3>Refined: before / after ({len(pairs)})</h3>" + "".join(pairs)


def review_mark(reviewed: Sequence[Mapping[str, Any]] | None) -> str:
    """The caption's trace of a human review (issue 25); empty for an item nobody reviewed.

    >>> review_mark([{"round": 1, "decision": "rejected", "note": "wrong"}, {"round": 2, "decision": "approved"}])
    ' · reviewed: round 1 rejected (wrong), round 2 approved'
    """
    if not reviewed:
        return ""
    parts = [f"round {r.get('round')} {r.get('decision')}" + (f" ({r['note']})" if r.get("note") else "")
             for r in reviewed]
    return " · reviewed: " + ", ".join(parts)


def _figure(src: str | None, caption: str, text: str, *, bad: bool = False) -> str:
    e = html.escape
    img = (f'<img src="{e(src, quote=True)}" alt="{e(text, quote=True)}" loading="lazy">' if src
           else '<p class="noimg">image not kept</p>')
    cls = ' class="bad"' if bad else ""
    return (f"<figure{cls}>{img}<figcaption><span class=\"score\">{e(caption)}</span><br>{e(text)}"
            "</figcaption></figure>")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)


@entry_point  # ReportError, a tampered checkpoint, an unreadable trace file: one line, exit 2 (agent/errors.py)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agent.report RUN_DIR``: (re)build the run's report.html."""
    cli_logging()  # warnings in our words, once; never Python's "WARNING:root:" default
    parser = OneLineParser(prog="python -m agent.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder made by python -m agent.run")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir)
    except OSError as exc:  # a read-only run folder, a full disk: the old report.html, if any, is intact
        raise ReportError(f"cannot write {RunFolder(args.run_dir).report} ({exc.strerror or exc}); the old report, "
                          "if any, is intact — free space or make the folder writable, then run this again") from None
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
