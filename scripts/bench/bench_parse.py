"""The reply corpus (tests/agent/corpus/*.toml) and what a parser makes of it, before and after.

Each corpus file holds replies to one prompt (its name: describe, reminder, extend, dedupe, summarize,
refine) written in the styles chat models answer in, each with the parse it should get (field reference:
tests/agent/corpus/README.md). ``load_corpus()`` reads them; ``score(...)`` compares what a parser *uses*
(the first kept sentence for single-sentence prompts, every kept item for extend, the kept subset for dedupe)
with what the corpus expects:

- ``clean``: expected items used with exactly the expected text;
- ``dirty``: expected items used, but with markup left in (same words, other text: ``**``, braces, labels);
- ``missed``: expected items not used (dropped);
- ``wrong``: items used that the corpus does not expect (another class, a cut-off item, a "Removed:" line);
- ``repaired``: items the parser reports it repaired (the current parser only).

``python -m scripts.bench.bench_parse [--baseline GIT_REF]`` prints both tables; ``--baseline`` reads
the text checks as they were at that commit (``agent/parse.py`` before the move to ``agent/graph/checks.py``) and applies the nodes' old selection rules to it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

CORPUS_DIR = Path(__file__).resolve().parents[2] / "tests" / "agent" / "corpus"
OLD_PATH = "agent/parse.py"  # where the text checks lived before agent/graph/checks.py (the baselines predate the move)
PROMPTS = ("describe", "reminder", "extend", "dedupe", "summarize", "refine")
SINGLE = frozenset({"describe", "reminder", "summarize", "refine"})

__all__ = ["CORPUS_DIR", "Case", "current_parser", "legacy_parser", "load_corpus", "main", "score"]


@dataclass(frozen=True)
class Case:
    """One corpus reply and the parse it should get."""

    id: str
    prompt: str
    model: str
    class_name: str
    text: str
    expect: list[str]
    repairs: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    refusal: bool = False
    given: list[str] = field(default_factory=list)
    invented: int = 0
    crlf: bool = False

    @property
    def template(self) -> int:
        return 2 if self.prompt == "summarize" else 1

    @property
    def used(self) -> list[str]:
        """What the node keeps from the expected parse (single-sentence prompts use the first)."""
        return self.expect[:1] if self.prompt in SINGLE else list(self.expect)


def load_corpus(folder: Path = CORPUS_DIR) -> list[Case]:
    """Every reply of every ``<prompt>.toml`` in ``folder``, file by file in ``PROMPTS`` order."""
    cases: list[Case] = []
    for prompt in PROMPTS:
        with (folder / f"{prompt}.toml").open("rb") as fh:
            doc = tomllib.load(fh)
        for raw in doc["reply"]:
            text = raw["text"].replace("\n", "\r\n") if raw.get("crlf") else raw["text"]
            cases.append(Case(
                id=raw["id"], prompt=prompt, model=raw["model"], class_name=raw["class"], text=text,
                expect=list(raw["expect"]), repairs=dict(raw.get("repairs", {})), drops=dict(raw.get("drops", {})),
                refusal=bool(raw.get("refusal", False)), given=list(raw.get("given", [])),
                invented=int(raw.get("invented", 0)), crlf=bool(raw.get("crlf", False)),
            ))
    return cases


# A parser, as the nodes use it: case -> (items used, number of them the parser says it repaired).
Parser = Callable[[Case], tuple[list[str], int]]


def current_parser(case: Case) -> tuple[list[str], int]:
    from agent.graph.dedupe import keep_subset
    from agent.graph.reply import read_reply

    reading = read_reply(case.text, case.class_name, template=case.template)
    if case.prompt == "dedupe":
        return keep_subset(reading.kept, case.given, case.class_name)[0], reading.counts.get("repaired", 0)
    used = reading.kept[:1] if case.prompt in SINGLE else reading.kept
    return used, reading.counts.get("repaired", 0)


def legacy_parser(ref: str) -> Parser:
    """The parser of commit ``ref`` (``agent/parse.py`` read with git) under the nodes' old rules."""
    source = subprocess.run(["git", "show", f"{ref}:{OLD_PATH}"], check=True, capture_output=True,
                            text=True, cwd=CORPUS_DIR).stdout
    old = types.ModuleType("legacy_parse")
    exec(compile(source, f"{ref}:{OLD_PATH}", "exec"), old.__dict__)  # noqa: S102 - our own history

    def parse(case: Case) -> tuple[list[str], int]:
        items: list[str] = old.parse_list(case.text)
        if case.prompt in SINGLE:
            first = old.first_following(items, case.class_name, template=case.template)
            return ([first] if first else []), 0
        if case.prompt == "extend":
            return [i for i in items if old.follows_template1(i, case.class_name)], 0
        answered = {old.normalise(i) for i in items}
        return [g for g in case.given if old.normalise(g) in answered], 0

    return parse


def score(cases: Sequence[Case], parser: Parser) -> dict[str, Any]:
    """Counts over the corpus (see the module docstring); ``by_prompt`` splits them per prompt file."""
    from agent.graph.checks import normalise

    total: dict[str, int] = {"replies": 0, "expected": 0, "clean": 0, "dirty": 0, "missed": 0, "wrong": 0,
                             "repaired": 0}
    by_prompt: dict[str, dict[str, int]] = {p: dict.fromkeys(total, 0) for p in PROMPTS}
    for case in cases:
        used, repaired = parser(case)
        expected = case.used
        exact = [u for u in used if u in expected]
        loose = {normalise(e) for e in expected if e not in used}
        dirty = [u for u in used if u not in expected and normalise(u) in loose]
        row = {"replies": 1, "expected": len(expected), "clean": len(exact), "dirty": len(dirty),
               "missed": len(expected) - len(exact) - len(dirty), "wrong": len(used) - len(exact) - len(dirty),
               "repaired": repaired}
        for key, value in row.items():
            total[key] += value
            by_prompt[case.prompt][key] += value
    return {"total": total, "by_prompt": by_prompt}


def render(title: str, result: dict[str, Any]) -> str:
    keys = list(result["total"])
    lines = [title, "prompt      " + " ".join(f"{k:>9}" for k in keys)]
    for prompt, row in [*result["by_prompt"].items(), ("all", result["total"])]:
        lines.append(f"{prompt:<11} " + " ".join(f"{row[k]:>9}" for k in keys))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.bench_parse", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="GIT_REF", help=f"also score {OLD_PATH} as it was at GIT_REF (a commit before the reorganisation)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    cases = load_corpus()
    out: dict[str, Any] = {"corpus": {"replies": len(cases), "files": list(PROMPTS)},
                           "current": score(cases, current_parser)}
    if args.baseline:
        try:
            out["baseline"] = score(cases, legacy_parser(args.baseline))
        except subprocess.CalledProcessError as exc:
            print(f"error: cannot read {OLD_PATH} at {args.baseline!r}: {exc.stderr.strip()}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"corpus: {len(cases)} replies in {CORPUS_DIR}")
    if "baseline" in out:
        print(render(f"\nbaseline ({args.baseline})", out["baseline"]))
    print(render("\ncurrent", out["current"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
