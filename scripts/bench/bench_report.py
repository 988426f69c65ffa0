"""The report at scale: index and class page sizes, write time, and render time in headless Chromium (issue 23).

Builds a synthetic finished run folder of N classes x K accepted images (distinct 32x32 PNGs, a
``summary.json`` with one entry per class, ``manifest.jsonl``; no checkpoints, so the report reads the
manifest), then times ``python -m agent.report RUN`` twice (the first makes every thumbnail, the second
finds them all) and renders ``report.html`` and one class page with ``chromium --headless --screenshot``,
against the same command on a blank page (Chromium's own start-up). ``--old REPO`` also runs another
checkout's ``agent.report`` on a copy of the folder (the single-page report before issue 23) and renders
that.

    python -m scripts.bench.bench_report --classes 10000 --k 30 --root /tmp/rep --json report.json
    python -m scripts.bench.bench_report --classes 1200 --k 10 --old ../checkout-before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1200,1600"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_report", description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=10_000)
    p.add_argument("--k", type=int, default=30, help="accepted images per class")
    p.add_argument("--root", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    p.add_argument("--old", type=Path, default=None, help="a checkout whose agent.report to run as 'before'")
    p.add_argument("--no-chromium", action="store_true", help="skip the render timings")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="bench-report-"))
    run = root / "run"
    res: dict[str, Any] = {"classes": args.classes, "k": args.k, "images": args.classes * args.k}
    try:
        start = time.perf_counter()
        make_run(run, args.classes, args.k)
        res["make_folder_s"] = round(time.perf_counter() - start, 1)
        res["first_report_s"] = _timed([sys.executable, "-m", "agent.report", str(run)], REPO)
        res["second_report_s"] = _timed([sys.executable, "-m", "agent.report", str(run)], REPO)
        pages = sorted((run / "report").glob("index-*.html"))
        class_page = run / "report" / f"{json.loads((run / 'summary.json').read_text())['classes']['class 0']['slug']}.html"
        res.update(index_bytes=(run / "report.html").stat().st_size,
                   index_pages=1 + len(pages), largest_index_bytes=max(
                       [(run / "report.html").stat().st_size, *(q.stat().st_size for q in pages)]),
                   class_page_bytes=class_page.stat().st_size,
                   thumbs=len(list((run / "report" / "thumbs").iterdir())),
                   thumbs_bytes=sum(f.stat().st_size for f in (run / "report" / "thumbs").iterdir()))
        chromium = None if args.no_chromium else shutil.which("chromium")
        if chromium:
            blank = root / "blank.html"
            blank.write_text("<!DOCTYPE html><title>blank</title>", encoding="utf-8")
            res["chromium_blank_s"] = _screenshot(chromium, blank, root)
            res["chromium_index_s"] = _screenshot(chromium, run / "report.html", root)
            res["chromium_class_page_s"] = _screenshot(chromium, class_page, root)
        if args.old is not None:
            old = root / "old"
            shutil.copytree(run, old, ignore=shutil.ignore_patterns("report", "report.html"), dirs_exist_ok=True)
            res["old_report_s"] = _timed([sys.executable, "-m", "agent.report", str(old)], args.old)
            res["old_report_bytes"] = (old / "report.html").stat().st_size
            if chromium:
                res["old_chromium_s"] = _screenshot(chromium, old / "report.html", root, timeout=600)
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


def make_run(run: Path, classes: int, k: int) -> None:
    """A finished run's folder as agent.run leaves it (summary.json, manifest.jsonl, images/<slug>/<sha>.png)."""
    import hashlib
    import io

    from PIL import Image

    from store.slug import slugify

    entries: dict[str, Any] = {}
    run.mkdir(parents=True, exist_ok=True)
    with (run / "manifest.jsonl").open("w", encoding="utf-8") as mf:
        for c in range(classes):
            name = f"class {c}"
            slug = slugify(name)
            folder = run / "images" / slug
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(k):
                buf = io.BytesIO()
                colour = ((c * 53 + j * 17) % 256, (c * 29 + j * 101) % 256, (c // 256 + j * 211) % 256)
                image = Image.new("RGB", (32, 32), colour)
                image.putpixel((j % 32, (c // 32) % 32), (c % 256, j % 256, 7))  # distinct bytes per image
                image.save(buf, "PNG")
                data = buf.getvalue()
                sha = hashlib.sha256(data).hexdigest()
                (folder / f"{sha}.png").write_bytes(data)
                mf.write(json.dumps({"path": f"images/{slug}/{sha}.png", "label": c, "class_name": name,
                                     "source": "generated", "sha256": sha,
                                     "description": f"A photo of the class {name}, view {j}.", "score": 0.3,
                                     "round": 0, "run_id": "bench"}) + "\n")
            entries[name] = {"label": c, "slug": slug, "status": "complete", "M_y": 2, "N_y": k, "K_y": k + 2,
                             "accepted": k, "rejected": 0, "failed": 0, "rounds": 0, "cost_usd": 0.0012,
                             "template": f"A photo of the class {name}."}
    totals = {"M_y": 2 * classes, "N_y": k * classes, "accepted": k * classes, "rejected": 0, "failed": 0}
    (run / "summary.json").write_text(json.dumps({"run_id": "bench", "classes": entries, "totals": totals}),
                                      encoding="utf-8")


def _timed(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(cwd.resolve()), "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, timeout=7200)
    return round(time.perf_counter() - start, 2)


def _screenshot(chromium: str, page: Path, root: Path, *, timeout: int = 300) -> float:
    """Seconds from launch to a written screenshot: load, layout and paint of the first screen."""
    shot = root / "shot.png"
    shot.unlink(missing_ok=True)
    flags = [*CHROME_FLAGS, f"--user-data-dir={root / 'chrome-profile'}", f"--screenshot={shot}"]
    start = time.perf_counter()
    subprocess.run([chromium, *flags, page.as_uri()], check=True, capture_output=True, timeout=timeout)
    wall = time.perf_counter() - start
    assert shot.is_file(), f"chromium wrote no screenshot of {page}"
    return round(wall, 2)


if __name__ == "__main__":
    raise SystemExit(main())
