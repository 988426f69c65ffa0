"""The review loop in a real browser: Debian's headless chromium driven by Playwright (never Playwright's
own browser download), JavaScript off: open the app, reject two images (one with a note), edit C_y, approve,
press Apply, then check the manifest and the requests the simulator saw."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from agent.review.waiting import review_view
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from store.manifest import read_manifest
from tests.agent.run_helpers import agent_argv, make_dataset

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
NEW_TEMPLATE = "A photo of a red fox, a small wild dog with rust-red fur and a white-tipped tail."

# Skip-free by design, as the report's screenshot test: it exists where Debian's chromium is installed, and
# LTGC_REQUIRE_CHROMIUM=1 (set by .ci/run, which installs it) makes a missing browser a failure.
if CHROMIUM or os.environ.get("LTGC_REQUIRE_CHROMIUM") == "1":

    def test_review_in_headless_chromium(tmp_path: Path) -> None:
        from playwright.sync_api import sync_playwright

        assert CHROMIUM, "LTGC_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install -y chromium)"
        data = make_dataset(tmp_path / "data")
        out = tmp_path / "run"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        with Simulator(SimConfig(seed=0)) as sim:
            assert main(agent_argv(data, out, sim.base_url, "--review", k=4)) == 4
            sim.reset_stats()
            fox = {i["index"]: i["sha256"] for c in review_view(out) if c.name == "red fox"
                   for i in (c.payload or {}).get("items", []) if i["status"] == "accepted"}
            assert len(fox) >= 2
            server = subprocess.Popen([sys.executable, "-m", "agent.review", str(out), "--port", "0"], cwd=REPO,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                url = server.stdout.readline().strip().rsplit(" ", 1)[-1]
                assert url.startswith("http://127.0.0.1:"), url
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                    page = browser.new_context(java_script_enabled=False, viewport={"width": 1000, "height": 760}
                                               ).new_page()
                    page.set_default_timeout(60_000)
                    page.goto(url)
                    names = page.locator("#classes td:first-child").all_inner_texts()
                    assert names == ["red fox", "snow owl", "sea turtle"]
                    page.get_by_role("link", name="red fox").click()
                    page.locator("#item-0 input[name=note]").fill("a machine, not an animal")
                    page.locator("#item-0 button.reject").click()
                    page.locator("#item-1 button.reject").click()
                    page.locator("#template").fill(NEW_TEMPLATE)
                    page.locator("#save-template").click()
                    page.locator("#approve").click()
                    assert page.locator("figure.rejected").count() >= 2
                    assert "a machine, not an animal" in page.locator("#item-0").inner_text()
                    assert page.locator("#template").input_value() == NEW_TEMPLATE
                    page.screenshot(path=str(tmp_path / "review.png"))
                    if os.environ.get("LTGC_REVIEW_SCREENSHOT"):  # README's picture: docs/review.png
                        shutil.copyfile(tmp_path / "review.png", os.environ["LTGC_REVIEW_SCREENSHOT"])
                    page.goto(url)
                    page.locator("#apply").click()
                    deadline = time.monotonic() + 240
                    while "complete" not in page.locator("#classes tr:nth-child(2) .status").inner_text():
                        assert time.monotonic() < deadline, (out / "review-apply.log").read_text()
                        time.sleep(1)
                        page.goto(url)
                    statuses = page.locator("#classes .status").all_inner_texts()
                    browser.close()
            finally:
                server.terminate()
                server.wait(timeout=30)
            sent = dict(sim.stats()["by_kind"])
        assert statuses == ["complete", "awaiting review", "awaiting review"]
        assert sent == {"refine": 2, "image": 2}, sent  # the two rejected images: refined and re-rendered, no more
        rows = [r for r in read_manifest(out / "manifest.jsonl") if r.class_name == "red fox"]
        assert len(rows) == len(fox) and {fox[0], fox[1]}.isdisjoint(r.sha256 for r in rows)
        assert f"2 classes await review: python -m agent.review {out}" in (out / "review-apply.log").read_text()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["classes"]["red fox"]["template"] == NEW_TEMPLATE
        assert summary["classes"]["red fox"]["counters"]["review_rejected"] == 2
