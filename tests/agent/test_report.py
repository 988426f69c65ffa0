"""The report: valid, offline pages (index + one per class) that link every accepted image, thumbnails made
once, index pages bounded in size (+ a headless screenshot)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from observe_helpers import finished_run
from PIL import Image

from agent.readout.report import ReportError, main, write_report
from agent.readout.report_pages import ClassView, IndexRow, class_page, index_page
from agent.readout.status import read_class_states
from scripts.sim.tiny_run import CLASSES
from store.manifest import ManifestRow, read_manifest

VOID = {"meta", "img", "br", "hr", "link", "input", "source"}


class StrictParser(HTMLParser):
    """Collects tags and attributes and checks that every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'} at {self.getpos()}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(text: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


def _pages(run: Path) -> dict[Path, StrictParser]:
    """Every page of the report, parsed strictly: report.html and report/*.html."""
    pages = [run / "report.html", *sorted((run / "report").glob("*.html"))]
    return {page: _parse(page.read_text(encoding="utf-8")) for page in pages}


def test_report_of_a_real_run_is_valid_offline_html(tmp_path: Path) -> None:
    run, _ = finished_run()
    path = write_report(run)
    assert path == run / "report.html"
    pages = _pages(run)
    assert len(pages) == 1 + len(CLASSES)  # the index and one page per class
    sources: list[str] = []  # full images linked from the class pages, relative to the run folder
    for page, parser in pages.items():
        text = page.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>")
        names = [tag for tag, _ in parser.tags]
        for once in ("html", "head", "body", "title", "style"):
            assert names.count(once) == 1
        # Offline: no script, no stylesheet link, no URL with a scheme, every link a relative file that exists.
        assert "script" not in names and "link" not in names and "://" not in text
        for tag, attrs in parser.tags:
            target = attrs.get("src") if tag == "img" else attrs.get("href") if tag == "a" else None
            if target is not None:
                assert not target.startswith("/") and (page.parent / target).is_file(), (page, target)
                if tag == "img":  # lazy and sized: a page with thousands of images lays out without them
                    assert attrs.get("loading") == "lazy" and attrs.get("width") and attrs.get("height")
                    assert target.endswith(".webp")  # a thumbnail, never the full image
                if tag == "a" and target.startswith("../") and not target.endswith(".html"):
                    sources.append(target.removeprefix("../"))
    accepted = [row for row in read_manifest(run / "manifest.jsonl") if row.source == "generated"]
    assert accepted, "the tiny run accepts images at threshold 0"
    for row in accepted:
        assert row.path in sources
        assert (run / "report" / "thumbs" / f"{row.sha256}.webp").is_file()
    index = "".join(pages[run / "report.html"].text)
    body = "".join("".join(p.text) for p in pages.values())
    summary_classes = json.loads((run / "summary.json").read_text())["classes"]
    for name in CLASSES:
        assert name in index
        template = summary_classes[name].get("template")
        if template:
            assert template in body  # C_y is shown
    # Refined items keep one earlier image hash per refinement; accepted ones show it as "before".
    for status in read_class_states(run).values():
        for item in status.values.get("items", []):
            assert len(item.get("history_images", [])) == item["round"] == len(item["history"])
            if item["round"] and item["status"] == "accepted" and item["history_images"][0]:
                assert any(src.endswith(f"{item['history_images'][0]}.png") for src in sources)
    rejected_lines = (run / "rejected.jsonl").read_text().splitlines()
    assert body.count("scores ") >= len(rejected_lines)  # each rejected item shows its round scores


def test_thumbnails_are_made_once_and_unchanged_pages_are_not_rewritten(tmp_path: Path) -> None:
    run, _ = finished_run()
    write_report(run)
    thumbs = sorted((run / "report" / "thumbs").iterdir())
    assert thumbs and all(t.suffix == ".webp" for t in thumbs)
    with Image.open(thumbs[0]) as image:
        assert max(image.size) <= 128
    stamps = {t.name: t.stat().st_mtime_ns for t in thumbs}
    pages = {p.name: p.stat().st_mtime_ns for p in (run / "report").glob("*.html")}
    write_report(run)
    assert {t.name: t.stat().st_mtime_ns for t in (run / "report" / "thumbs").iterdir()} == stamps
    assert {p.name: p.stat().st_mtime_ns for p in (run / "report").glob("*.html")} == pages  # same text: kept


def test_index_pages_split_a_large_run(tmp_path: Path) -> None:
    """At 2 pages' worth of classes: every class listed once across the index pages, each page linking the
    others, and each page's size bounded by its classes, not by the run."""
    from agent.readout.report_pages import PAGE_CLASSES

    names = [f"class {i}" for i in range(PAGE_CLASSES + 3)] + ["<script>x</script>"]
    classes = {n: {"status": "complete", "accepted": 0, "label": i} for i, n in enumerate(names)}
    (tmp_path / "summary.json").write_text(json.dumps({"run_id": "big", "classes": classes}))
    (tmp_path / "manifest.jsonl").write_text("")
    write_report(tmp_path)
    first, second = tmp_path / "report.html", tmp_path / "report" / "index-2.html"
    listed = []
    for page in (first, second):
        parser = _parse(page.read_text(encoding="utf-8"))
        hrefs = [a["href"] or "" for tag, a in parser.tags if tag == "a"]
        listed += [h for h in hrefs if "index-" not in h and not h.endswith("report.html")]
        assert any(h.endswith("index-2.html") for h in hrefs) or any(h.endswith("report.html") for h in hrefs)
        for h in hrefs:
            assert (page.parent / h).is_file(), h
    assert len(listed) == len(names)
    assert "<script>" not in first.read_text() + second.read_text()


def _view(**kw: object) -> ClassView:
    base: dict[str, object] = {"name": "fox", "summary": {"status": "complete", "template": "A photo of the class fox with red fur."}}
    base.update(kw)
    return ClassView(**base)  # type: ignore[arg-type]


def test_every_text_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    view = _view(name=evil, existing=[evil], new=[evil],
                 accepted=[ManifestRow(path='images/a"b.png', label=0, class_name=evil, source="generated",
                                       sha256="a" * 64, description=evil, score=0.3, round=0, run_id="r")])
    text = class_page(evil, view, thumbs={}, blobs={})
    assert "<script>" not in text and "&lt;script&gt;" in text and 'src="../images/a&quot;b.png"' in text
    row = IndexRow(evil, "x.html", {"status": evil}, ("a" * 64 + ".webp",))
    index = index_page(evil, [row], page=1, pages=1, first=0, total=1, totals={}, counters={})
    assert "<script>" not in index and "&lt;script&gt;" in index
    _parse(index)
    _parse(text)


def test_refined_items_show_before_and_after() -> None:
    item = {"index": 0, "description": "A photo of the class fox, sharper ears.", "history": ["A photo of the class fox, blurry."],
            "history_images": ["b" * 64], "sha256": "c" * 64, "scores": [0.1, 0.4], "round": 1, "status": "accepted"}
    row = ManifestRow(path=f"images/fox/{'c' * 64}.png", label=0, class_name="fox", source="generated",
                      sha256="c" * 64, description=item["description"], score=0.4, round=1, run_id="r")  # type: ignore[arg-type]
    view = _view(items=[item], accepted=[row])
    text = class_page("r", view, thumbs={"c" * 64: f"{'c' * 64}.webp"}, blobs={"b" * 64: f"blobs/bb/{'b' * 64}.png"})
    section = text[text.index("Refined: before / after (1)"):]
    assert f"../blobs/bb/{'b' * 64}.png" in section and f"../{row.path}" in section
    assert f"thumbs/{'c' * 64}.webp" in section
    assert "score 0.100" in section and "score 0.400" in section and "blurry" in section and "sharper" in section


def test_missing_run_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReportError, match="summary.json: missing"):
        write_report(tmp_path)
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


CHROMIUM = shutil.which("chromium")
# Skip-free by design: the screenshot test exists only where Debian's chromium is installed, unless
# LTGC_REQUIRE_CHROMIUM=1 (set by a CI that installs it), which makes a missing browser a failure.
if CHROMIUM or os.environ.get("LTGC_REQUIRE_CHROMIUM") == "1":

    def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
        assert CHROMIUM, "LTGC_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install -y chromium)"
        run, _ = finished_run()
        index = write_report(run)
        # The index and the class page with the most accepted images (the one that draws the most thumbnails).
        summary = json.loads((run / "summary.json").read_text())["classes"]
        busiest = max(summary, key=lambda name: summary[name].get("accepted", 0))
        for page in (index, run / "report" / f"{summary[busiest]['slug']}.html"):
            shot = tmp_path / f"{page.stem}.png"
            flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={shot}"]
            subprocess.run([CHROMIUM, *flags, page.as_uri()], check=True, timeout=120, capture_output=True)
            with Image.open(shot) as image:
                assert image.size == (1000, 1400)
                colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
            # A rendered page with text and drawn images has many colours; a blank or error page has a few.
            assert len(colours) > 50, page


def test_report_into_a_full_disk_is_one_line_and_keeps_the_old_report(monkeypatch, capsys) -> None:
    import errno

    import agent.readout.report as report
    from tests.agent.observe_helpers import finished_run

    run, _ = finished_run()
    write_report(run)
    before = (run / "report.html").read_bytes()
    page = sorted((run / "report").glob("*.html"))[0]
    page.write_text("an older page", encoding="utf-8")  # differs from what the report writes: must be rewritten
    capsys.readouterr()

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report.os, "replace", full)  # every page is written through a temp file and a rename
    assert report.main([str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write") and "No space left" in err[0]
    assert (run / "report.html").read_bytes() == before and page.read_text() == "an older page"  # old pages whole
    assert not list(run.glob("**/.*.tmp"))  # no temp file left behind
    monkeypatch.undo()
    assert report.main([str(run)]) == 0 and page.read_text() != "an older page"  # space again: rewritten
