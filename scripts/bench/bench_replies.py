"""Replies as chat models write them, end to end: what reaches the manifest, C_y and the image prompts.

Runs the real entry point (``agent.run.main``, in this process) against the simulator with a share of its
answers written in chat-model styles (``--reply-style-share``, default 1.0: every answer), in three modes:

- ``text``: replies read by ``agent/graph/reply.py``;
- ``structured``: ``--llm-structured --lmm-structured`` (JSON-schema ``response_format``; the simulator
  answers JSON valid for the schema, some strings still styled);
- ``refused``: the same flags against a simulator that answers 400 to ``response_format``: every endpoint
  falls back to text after its first refusal, with one warning each.

Per mode: classes complete, C_y fallbacks (the generic "a photo of a <y>."), chat requests and 400s, the
readers' counters summed over classes (items, kept, repaired by kind, dropped by reason, refusals,
structured replies and fallbacks), and how many manifest descriptions / C_y / image prompts still carry
``**``, ``{``, ``}``, quotes or a label prefix.

    python -m scripts.bench.bench_replies                         # 6 classes, K = 16, all three modes
    python -m scripts.bench.bench_replies --classes 12 --k 40 --json replies.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.bench.bench_probe import make_inputs
from scripts.sim.server import SimConfig, Simulator

MODES = ("text", "structured", "refused")
_LABEL = re.compile(r"^\W*(?:template\s*\d|description|summary|refined|c_y|option)\b", re.IGNORECASE)


def marked(text: str) -> bool:
    """Markup a chat model leaves that must never reach a manifest row, C_y or an image prompt."""
    return any(m in text for m in ("**", "{", "}", "“", '"', "\r")) or bool(_LABEL.match(text)) or \
        not text.startswith("A photo of the class ")


def run_mode(mode: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from agent.graph.summarize import fallback_text
    from agent.run import main as agent_main
    from store.manifest import read_manifest
    from store.traces import read_traces

    inputs = make_inputs(root / "data", args.classes, args.m_y)
    out, log = root / f"run-{mode}", root / f"sim-{mode}.jsonl"
    knobs = SimConfig(reply_style_share=args.reply_style_share, seed=args.seed, log_path=str(log),
                      reject_response_format=mode == "refused")
    warnings = _Capture()
    with Simulator(knobs) as sim, warnings:
        argv = ["--classes", str(inputs.tail), "--images", str(inputs.images), "--out", str(out), "--run-id", mode,
                "--target-per-class", str(args.k), "--threshold", str(args.threshold), "--max-rounds", "2",
                "--clip-model", str(inputs.clip_config), "--clip-pretrained", "none"]
        for role in ("lmm", "llm", "t2i"):
            argv += [f"--{role}-base-url", sim.base_url, f"--{role}-model", f"sim-{role}",
                     f"--{role}-per-minute", "100000", f"--{role}-max-in-flight", "16"]
        if mode != "text":
            argv += ["--llm-structured", "--lmm-structured"]
        with contextlib.redirect_stdout(io.StringIO()):
            code = agent_main(argv)
        stats = sim.stats()
    summary = json.loads((out / "summary.json").read_text())
    classes = summary["classes"]
    counters: dict[str, int] = {}
    for entry in classes.values():
        for key, value in entry["counters"].items():
            if key.startswith(("parse_", "structured_")):
                counters[key] = counters.get(key, 0) + value
    rows = read_manifest(out / "manifest.jsonl")
    drawn = [str(r.request.get("prompt", "")) for r in read_traces(out / "traces.sqlite", role="t2i")]
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    chat = [e for e in entries if e["endpoint"] == "chat"]
    items = counters.get("parse_items", 0)
    return {
        "mode": mode, "exit_code": code, "classes": len(classes),
        "complete": sum(e["status"] == "complete" for e in classes.values()),
        "c_y_fallbacks": sum(e["template"] == fallback_text(n) for n, e in classes.items()),
        "chat_requests": len(chat), "chat_400": sum(e["status"] == 400 for e in chat),
        "styled_replies": stats["styled_replies"], "counters": dict(sorted(counters.items())),
        "dropped_share": round(counters.get("parse_dropped", 0) / items, 4) if items else None,
        "manifest_rows": len(rows), "manifest_marked": sum(marked(r.description or "") for r in rows),
        "c_y_marked": sum(marked(e["template"] or "") for e in classes.values()),
        "image_prompts": len(drawn), "image_prompts_marked": sum(marked(p) for p in drawn),
        "structured_warnings": warnings.count,
    }


class _Capture(logging.Handler):
    """Counts agent/providers/structured.py's warnings while a run is in progress."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "refused structured outputs" in record.getMessage()

    def __enter__(self) -> _Capture:
        logging.getLogger("agent.providers.structured").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("agent.providers.structured").removeHandler(self)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.bench_replies", description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--k", type=int, default=16, help="K_y per class")
    parser.add_argument("--m-y", type=int, default=2, help="real images per class")
    parser.add_argument("--threshold", type=float, default=0.15, help="μ (0.15: about a third is refined)")
    parser.add_argument("--reply-style-share", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--workdir", help="keep the runs here (default: a temp folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-replies-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        results = [run_mode(mode, root / mode, args) for mode in args.modes]
    for res in results:
        print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": results}, indent=2) + "\n")
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
