"""The report's pages as text (pure: data in, HTML out; the I/O is in :mod:`agent.readout.report`).

Two kinds of page, so the report opens at any size (issue 23: 10^4 classes, 3x10^5 images):

- **index pages** — ``report.html`` and ``report/index-<n>.html``, :data:`PAGE_CLASSES` classes each: the
  run's totals (first page only), a pager, and per class one table row: state, counts, cost and the first
  :data:`INDEX_THUMBS` accepted images as thumbnails, linking to the class page. A page's size is bounded by
  :data:`PAGE_CLASSES`, not by the run.
- **class pages** — ``report/<slug>.html``: the paper's Fig. 6 / 7 views for one class (status and counts,
  how the model replies were read, C_y, descriptions, accepted images, before / after pairs of refined
  items, rejected items with every round's score). Images are thumbnails (``report/thumbs/<sha256>.webp``)
  that link to the full image; every ``<img>`` is ``loading="lazy"`` with its size given, so the browser
  lays the page out without fetching images it does not show.

Offline by construction: inline CSS, no script, no external URL, relative links only, so the run folder can
be moved or zipped whole. Every text is HTML-escaped. A class view carries its ``summary.json`` entry as an
open dict, so a new per-class field shows up in :func:`class_page` once rendered there, without a new type.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.graph.state import REASONS
from agent.lifecycle.folder import REPORT, REPORT_PAGES
from store.manifest import ManifestRow

__all__ = ["INDEX_THUMBS", "PAGE_CLASSES", "ClassView", "IndexRow", "class_page", "index_name", "index_page",
           "page_count", "review_mark"]

PAGE_CLASSES = 100  # classes per index page: ~60 KB of HTML, 300 thumbnails (bench_report: < 3 s to render)
INDEX_THUMBS = 3  # accepted images shown per class on an index page
THUMB_PX = 128  # thumbnails are at most this wide and high (agent/readout/thumbs.py)


@dataclass
class ClassView:
    """Everything a class page shows (plain data). Image paths are relative to the run folder."""

    name: str
    summary: dict[str, Any]  # the class's summary.json entry, open to any field
    accepted: list[ManifestRow] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)  # state items (history, scores, round)


@dataclass(frozen=True)
class IndexRow:
    """One class on an index page: its name, page file name (in ``report/``), summary entry, thumbnails."""

    name: str
    page: str
    summary: Mapping[str, Any]
    thumbs: tuple[str, ...] = ()  # file names in report/thumbs/


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#555}.tmpl{background:#eef4ff;padding:8px 12px;border-radius:6px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;background:#eee;display:block}
figcaption{font-size:12px;margin-top:4px}.score{font-weight:600}.bad{border-color:#d66}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:8px;max-width:520px}.noimg{color:#999;font-style:italic}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td.n{text-align:left}td.t img{width:48px;height:48px;object-fit:cover;margin-right:2px;vertical-align:middle}
ol{margin:4px 0 4px 20px;padding:0}details{margin:6px 0}.warn{color:#a60}nav a{margin-right:6px}
"""


def page_count(classes: int) -> int:
    """Index pages for ``classes`` classes (at least one).

    >>> page_count(0), page_count(100), page_count(101), page_count(10_000)
    (1, 1, 2, 100)
    """
    return max(1, -(-classes // PAGE_CLASSES))


def index_name(page: int) -> str:
    """File of index page ``page`` (1-based), relative to the run folder.

    >>> index_name(1) == REPORT, index_name(2)
    (True, 'report/index-2.html')
    """
    return REPORT if page == 1 else f"{REPORT_PAGES}/index-{page}.html"


def index_page(run_id: str, rows: Sequence[IndexRow], *, page: int, pages: int, first: int, total: int,
               totals: Mapping[str, Any], counters: Mapping[str, int]) -> str:
    """Index page ``page`` of ``pages``: rows ``first`` .. ``first + len(rows) - 1`` of ``total`` classes."""
    e = html.escape
    top = page == 1  # report.html sits in the run folder, the other pages in report/
    to_report = "report/" if top else ""
    parts = _head(f"LTGC run {run_id}") + [f"<h1>LTGC run <code>{e(run_id)}</code></h1>"]
    if top:
        parts += [_totals_table(totals), _reading_line(counters, "all classes")]
    span = f"classes {first + 1}–{first + len(rows)} of {total}" if rows else "no class"
    parts += [f'<p class="meta">{e(span)} · page {page} of {pages}</p>', _pager(page, pages, top),
              "<table><tr><th>class</th><th>status</th><th>M_y</th><th>N_y</th><th>accepted</th><th>rejected</th>"
              "<th>failed</th><th>missing</th><th>cost $</th><th>images</th></tr>"]
    for row in rows:
        s = row.summary
        cells = "".join(f"<td>{e(_fmt(s.get(k)))}</td>" for k in ("M_y", "N_y", "accepted", "rejected", "failed",
                                                                       "missing"))
        cost = s.get("cost_usd")
        cells += f"<td>{e(f'{cost:.4f}' if isinstance(cost, float) else _fmt(cost))}</td>"  # cents of a cent
        thumbs = "".join(f'<img src="{e(to_report)}thumbs/{e(t, quote=True)}" alt="" loading="lazy" width="48" '
                         'height="48">' for t in row.thumbs)
        parts.append(f'<tr><td class="n"><a href="{e(to_report + row.page, quote=True)}">{e(row.name)}</a></td>'
                     f'<td>{e(str(s.get("status", "?")))}</td>{cells}<td class="t">{thumbs}</td></tr>')
    parts += ["</table>", _pager(page, pages, top), "</body>", "</html>"]
    return "\n".join(p for p in parts if p) + "\n"


def class_page(run_id: str, c: ClassView, *, thumbs: Mapping[str, str], blobs: Mapping[str, str]) -> str:
    """One class's page, written to ``report/``. ``thumbs``: sha256 -> thumbnail file name in
    ``report/thumbs/``; ``blobs``: sha256 -> blob path relative to the run folder (rejected, before)."""
    e, s = html.escape, c.summary
    counts = ", ".join(f"{k} {s[k]}" for k in ("M_y", "N_y", "accepted", "rejected", "failed", "rounds") if k in s)
    if s.get("missing"):  # a short class: how many images are missing and why (--resume asks them again)
        counts += f", missing {s['missing']} (" + ", ".join(
            f"{n} {REASONS.get(k, k)}" for k, n in sorted((s.get("missing_by_reason") or {}).items())) + ")"
    template = s.get("template")
    truncated = " (cut by CLIP's 77-token context)" if s.get("template_truncated") else ""
    out = _head(f"{c.name} · LTGC run {run_id}") + [
        f'<p><a href="../report.html">run {e(run_id)}</a></p>', f"<h1>{e(c.name)}</h1>",
        f'<p class="meta">status <b>{e(str(s.get("status", "?")))}</b> · {e(counts)}</p>',
    ]
    if s.get("error"):
        out.append(f'<p class="warn">error: {e(str(s["error"]))}</p>')
    out.append(_reading_line(s.get("counters") or {}, "this class"))
    out.append("<h3>Class feature template C<sub>y</sub></h3>")
    out.append(f'<p class="tmpl">{e(template)}{e(truncated)}</p>' if template else '<p class="noimg">none</p>')
    figure = _Figures(thumbs, blobs)
    out += [_descriptions(c), "<h3>Accepted images</h3>", _accepted_grid(c, figure), _refined_pairs(c, figure),
            _rejected_grid(c, figure)]
    warnings = s.get("warnings") or []
    if warnings:
        out.append("<details><summary>warnings</summary><ul>"
                   + "".join(f'<li class="warn">{e(str(w))}</li>' for w in warnings) + "</ul></details>")
    out += ["</body>", "</html>"]
    return "\n".join(part for part in out if part) + "\n"


# ----------------------------------------------------------------------------------------- helpers
def _head(title: str) -> list[str]:
    return ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]


def _pager(page: int, pages: int, top: bool) -> str:
    """Links to every index page (100 at 10^4 classes), relative to where this page sits."""
    if pages == 1:
        return ""

    def href(n: int) -> str:
        target = index_name(n)
        return target if top else ("../report.html" if n == 1 else target.removeprefix("report/"))

    links = [f"<b>{n}</b>" if n == page else f'<a href="{href(n)}">{n}</a>' for n in range(1, pages + 1)]
    return "<nav>pages: " + " ".join(links) + "</nav>"


def _totals_table(totals: Mapping[str, Any]) -> str:
    keys = ("M_y", "N_y", "accepted", "rejected", "failed", "missing", "cost_usd")
    cells = [(k, totals[k]) for k in keys if k in totals]
    # Why images are missing (short classes): the same counts and words as the final line.
    cells += [(f"missing: {REASONS.get(k, k)}", n) for k, n in (totals.get("missing_by_reason") or {}).items()]
    # The same counts as the final line and agent.traces (store.trace_schema.counts_sql), named by scope.
    for scope in ("run", "session"):
        counts = totals.get(scope) or {}
        cells += [(f"{k} ({'whole run' if scope == 'run' else 'last session'})", counts[k])
                  for k in ("calls", "requests", "cache_hits", "refused", "stopped") if k in counts]
    if not cells:
        return ""
    head = "".join(f"<th>{html.escape(k)}</th>" for k, _ in cells)
    body = "".join(f"<td>{html.escape(_fmt(v))}</td>" for _, v in cells)
    return f'<table class="totals"><tr>{head}</tr><tr>{body}</tr></table>'


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


class _Figures:
    """``<figure>``s of a class page: the thumbnail when there is one, linking to the full image."""

    def __init__(self, thumbs: Mapping[str, str], blobs: Mapping[str, str]) -> None:
        self.thumbs, self.blobs = thumbs, blobs

    def __call__(self, sha: str | None, full: str | None, caption: str, text: str, *, bad: bool = False) -> str:
        e = html.escape
        full = full or self.blobs.get(str(sha))
        thumb = self.thumbs.get(str(sha))
        src = f"thumbs/{thumb}" if thumb else (f"../{full}" if full else None)
        img = (f'<img src="{e(src, quote=True)}" alt="{e(text, quote=True)}" loading="lazy" width="{THUMB_PX}" '
               f'height="{THUMB_PX}">' if src else '<p class="noimg">image not kept</p>')
        if src and full:
            img = f'<a href="../{e(full, quote=True)}">{img}</a>'
        cls = ' class="bad"' if bad else ""
        return (f"<figure{cls}>{img}<figcaption><span class=\"score\">{e(caption)}</span><br>{e(text)}"
                "</figcaption></figure>")


def _accepted_grid(c: ClassView, figure: _Figures) -> str:
    if not c.accepted:
        return '<p class="noimg">no accepted image</p>'
    reviewed = {i.get("sha256"): i.get("reviewed") or [] for i in c.items}
    figures = [figure(row.sha256, row.path,
                      f"score {_fmt(row.score)} · round {row.round or 0}{review_mark(reviewed.get(row.sha256))}",
                      row.description or "")
               for row in c.accepted]
    return '<div class="grid">' + "".join(figures) + "</div>"


def _rejected_grid(c: ClassView, figure: _Figures) -> str:
    if not c.rejected:
        return ""
    figures = []
    for r in c.rejected:
        scores = " → ".join(_fmt(x) for x in r.get("scores") or []) or "not scored"
        caption = f"{r.get('status', 'rejected')} · scores {scores}"
        if r.get("error"):
            caption += f" · {r['error']}"
        caption += review_mark(r.get("reviewed"))
        figures.append(figure(r.get("sha256"), None, caption, str(r.get("description", "")), bad=True))
    return f"<h3>Rejected ({len(c.rejected)})</h3>" + '<div class="grid">' + "".join(figures) + "</div>"


def _refined_pairs(c: ClassView, figure: _Figures) -> str:
    accepted_path = {row.sha256: row.path for row in c.accepted}
    pairs = []
    for item in c.items:
        history: Sequence[str] = item.get("history") or []
        scores: Sequence[float] = item.get("scores") or []
        if not history or item.get("status") != "accepted":
            continue
        before_images = item.get("history_images") or []
        before = str(before_images[0]) if before_images and before_images[0] else None
        after = str(item.get("sha256") or "")
        pairs.append('<div class="pair">'
                     + figure(before, None, f"before · score {_fmt(scores[0] if scores else None)}", history[0],
                              bad=True)
                     + figure(after, accepted_path.get(after), f"after {len(history)} refinement(s) · score "
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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)
