"""The reply corpus (tests/agent/corpus): every reply parses to its expected items, repairs and drops."""

from __future__ import annotations

from collections import Counter

import pytest

from agent.graph.dedupe import keep_subset
from agent.graph.reply import DROPS, REPAIRS, read_reply
from scripts.bench.bench_parse import PROMPTS, Case, current_parser, load_corpus, score

CASES = load_corpus()


def _counted(counts: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in counts.items() if k.startswith(prefix)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reply_parses_to_its_expected_items_repairs_and_drops(case: Case) -> None:
    reading = read_reply(case.text, case.class_name, template=case.template)
    if case.prompt == "dedupe":
        kept, invented = keep_subset(reading.kept, case.given, case.class_name)
        assert (kept, len(invented)) == (case.expect, case.invented)
    else:
        assert reading.kept == case.expect
    assert _counted(reading.counts, "repair_") == case.repairs
    assert _counted(reading.counts, "drop_") == case.drops
    assert reading.counts.get("refusal", 0) == int(case.refusal)
    assert reading.counts.get("dropped", 0) == sum(case.drops.values())
    assert reading.counts.get("repaired", 0) <= reading.counts.get("kept", 0)
    assert reading.counts.get("repaired", 0) >= max(case.repairs.values(), default=0)


def test_corpus_covers_every_prompt_style_and_artefact_the_issue_names() -> None:
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)
    assert Counter(c.prompt for c in CASES).keys() == set(PROMPTS)
    assert {c.model for c in CASES} == {"gpt-4o", "claude", "llama", "qwen"}
    repairs = Counter(kind for c in CASES for kind in c.repairs)
    assert set(repairs) == set(REPAIRS)
    assert {reason for c in CASES for reason in c.drops} == set(DROPS)
    assert any(c.refusal for c in CASES) and any(c.crlf for c in CASES) and any(c.invented for c in CASES)
    texts = "\n".join(c.text for c in CASES)
    for artefact in ("**", "{with", "```json", "“", "Template 2:", "Description:", "Summary —", "###",
                     "**1.**", "  - "):
        assert artefact in texts, artefact


def test_the_current_parser_uses_every_expected_item_clean_and_nothing_else() -> None:
    total = score(CASES, current_parser)["total"]
    assert total["clean"] == total["expected"] and total["dirty"] == total["missed"] == total["wrong"] == 0
