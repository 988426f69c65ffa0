"""report.html: valid, offline HTML that references every accepted image (+ a headless screenshot)."""

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

from agent.readout.report import ClassView, ReportData, ReportError, main, render_html, write_report
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


def test_report_of_a_real_run_is_valid_offline_html(tmp_path: Path) -> None:
    run, _ = finished_run()
    path = write_report(run)
    assert path == run / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    parser = _parse(text)
    names = [tag for tag, _ in parser.tags]
    for once in ("html", "head", "body", "title", "style"):
        assert names.count(once) == 1
    sources = [attrs["src"] or "" for tag, attrs in parser.tags if tag == "img"]
    # Offline: no script, no stylesheet link, no URL with a scheme, every image a relative file that exists.
    assert "script" not in names and "link" not in names and "://" not in text
    for src in sources:
        assert not src.startswith("/") and (run / src).is_file(), src
    accepted = [row for row in read_manifest(run / "manifest.jsonl") if row.source == "generated"]
    assert accepted, "the tiny run accepts images at threshold 0"
    for row in accepted:
        assert row.path in sources
    body = "".join(parser.text)
    summary_classes = json.loads((run / "summary.json").read_text())["classes"]
    for name in CLASSES:
        assert name in body
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


def _view(**kw: object) -> ClassView:
    base: dict[str, object] = {"name": "fox", "summary": {"status": "complete", "template": "A photo of the class fox with red fur."}}
    base.update(kw)
    return ClassView(**base)  # type: ignore[arg-type]


def test_every_text_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    view = _view(name=evil, existing=[evil], new=[evil],
                 accepted=[ManifestRow(path='images/a"b.png', label=0, class_name=evil, source="generated",
                                       sha256="a" * 64, description=evil, score=0.3, round=0, run_id="r")])
    text = render_html(ReportData(run_id=evil, classes=[view]))
    assert "<script>" not in text and "&lt;script&gt;" in text and 'src="images/a&quot;b.png"' in text
    _parse(text)


def test_refined_items_show_before_and_after() -> None:
    item = {"index": 0, "description": "A photo of the class fox, sharper ears.", "history": ["A photo of the class fox, blurry."],
            "history_images": ["b" * 64], "sha256": "c" * 64, "scores": [0.1, 0.4], "round": 1, "status": "accepted"}
    row = ManifestRow(path=f"images/fox/{'c' * 64}.png", label=0, class_name="fox", source="generated",
                      sha256="c" * 64, description=item["description"], score=0.4, round=1, run_id="r")  # type: ignore[arg-type]
    view = _view(items=[item], accepted=[row])
    text = render_html(ReportData(run_id="r", classes=[view], blob_paths={"b" * 64: f"blobs/bb/{'b' * 64}.png"}))
    section = text[text.index("Refined: before / after (1)"):]
    assert f"blobs/bb/{'b' * 64}.png" in section and row.path in section
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
        page = write_report(run)
        shot = tmp_path / "report.png"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={shot}"]
        subprocess.run([CHROMIUM, *flags, page.as_uri()], check=True, timeout=120, capture_output=True)
        with Image.open(shot) as image:
            assert image.size == (1000, 1400)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
        # A rendered page with text and drawn images has many colours; a blank or error page has a few.
        assert len(colours) > 50


def test_report_into_a_full_disk_is_one_line_and_keeps_the_old_report(monkeypatch, capsys) -> None:
    import errno

    import agent.readout.report as report
    from tests.agent.observe_helpers import finished_run

    run, _ = finished_run()
    before = (run / "report.html").read_bytes()
    capsys.readouterr()

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "atomic_write_text", full)
    assert report.main([str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write") and "No space left" in err[0]
    assert (run / "report.html").read_bytes() == before
