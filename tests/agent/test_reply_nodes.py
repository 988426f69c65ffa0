"""The steps read real-looking replies through agent.graph.reply: repaired text in the state, every repair and drop
counted in the class's counters (issue 14). Fake providers answer in the styles chat models use."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.graph.summarize import fallback_text
from agent.providers.client import CallContext
from store.blobs import BlobStore
from tests.agent.graph_fakes import FakeProviders, FakeScorer, default_reply, listed, run_class

MARKUP = ("**", "{", "}", "Template", "Description:", "“", "\"")


@pytest.fixture
def fakes(tmp_path: Path) -> tuple[FakeProviders, FakeScorer]:
    providers = FakeProviders(BlobStore(tmp_path / "blobs"))
    return providers, FakeScorer(providers)


def _clean(text: str) -> bool:
    return text.startswith("A photo of the class red fox") and not any(m in text for m in MARKUP)


async def test_a_labelled_template_2_reply_becomes_c_y_not_the_generic_fallback(tmp_path, fakes):
    providers, scorer = fakes
    providers.replies["summarize"] = lambda prompt, ctx: (
        "Sure! Here is the class feature template.\n\n"
        "**Template 2:** A photo of the class red fox with {a rust-orange coat}{a white-tipped tail}{black legs}.")
    state = await run_class(tmp_path, providers, scorer, images=1, k=3)
    assert state["template"] == ("A photo of the class red fox with a rust-orange coat, a white-tipped tail, "
                                 "black legs.")
    assert not any("did not follow Template 2" in w for w in state["warnings"])
    counters = state["counters"]
    assert counters["parse_repair_label"] >= 1 and counters["parse_repair_braces"] >= 1


async def test_a_reply_that_yields_nothing_still_falls_back_with_its_warning(tmp_path, fakes):
    providers, scorer = fakes
    providers.replies["summarize"] = lambda prompt, ctx: "I'm sorry, but I can't help with that request."
    state = await run_class(tmp_path, providers, scorer, images=1, k=3)
    assert state["template"] == fallback_text("red fox")
    assert any("did not follow Template 2" in w for w in state["warnings"])
    assert state["counters"]["parse_refusal"] == 1


async def test_extend_keeps_repaired_items_and_counts_the_item_about_another_class(tmp_path, fakes):
    providers, scorer = fakes

    def extend(prompt: str, ctx: CallContext) -> str:
        return ("Here are new descriptions for the class red fox:\n\n"
                f"1. **A photo of the class red fox**, {{with trait {ctx.sample_index}a}}{{in snow}}.\n"
                f"2. A photo of the class grey wolf, with a grey coat, in a forest.\n"
                f"3. “A photo of the class red fox, with trait {ctx.sample_index}b, in a meadow.”\n"
                f"4. Description: A photo of the class red fox, with trait {ctx.sample_index}c and a long\n"
                f"   bushy tail, on a road.\n\nLet me know if you need more!")

    providers.replies["extend"] = extend
    state = await run_class(tmp_path, providers, scorer, images=1, k=4)
    assert state["new"][:3] == ["A photo of the class red fox, with trait 0a in snow.",
                                "A photo of the class red fox, with trait 0b, in a meadow.",
                                "A photo of the class red fox, with trait 0c and a long bushy tail, on a road."]
    assert all(_clean(i["description"]) for i in state["items"])  # what render drew
    counters = state["counters"]
    assert counters["parse_drop_other_class"] >= 1 and counters["extend_off_template"] >= 1
    for kind in ("emphasis", "braces", "quotes", "label", "wrapped"):
        assert counters[f"parse_repair_{kind}"] >= 1, kind


async def test_dedupe_does_not_keep_what_the_model_lists_as_removed(tmp_path, fakes):
    providers, scorer = fakes

    def dedupe(prompt: str, ctx: CallContext) -> str:
        items = listed(prompt)
        kept = "\n".join(f"- {t}" for t in items[1:])
        return f"Kept:\n{kept}\n\nRemoved (duplicate):\n- {items[0]}"

    providers.replies["dedupe"] = dedupe
    state = await run_class(tmp_path, providers, scorer, images=1, k=4, max_dedupe_passes=1)
    first_new = default_reply(providers.nodes("extend")[0].prompt, providers.nodes("extend")[0].ctx).split("\n")[0]
    assert first_new[3:] not in state["new"]  # the model removed it, and it stays removed
    assert state["counters"]["dedupe_removed_by_model"] == 1


async def test_refine_takes_the_quoted_sentence_out_of_the_talk_around_it(tmp_path, fakes):
    providers, scorer = fakes
    scorer.score_of = lambda text: 0.9 if "refined" in text else 0.1
    providers.replies["refine"] = lambda prompt, ctx: (
        f'Here is a refined version: "A photo of the class red fox, refined {ctx.round} of item '
        f'{ctx.sample_index}, in snow." This version stresses the coat.')
    state = await run_class(tmp_path, providers, scorer, images=1, k=3, threshold=0.5)
    refined = [i for i in state["items"] if i["round"] == 1]
    assert refined and all(i["description"].endswith("in snow.") and _clean(i["description"]) for i in refined)
    assert state["counters"]["parse_repair_label"] >= len(refined)


async def test_a_describe_refusal_is_re_asked_and_counted(tmp_path, fakes):
    providers, scorer = fakes

    def describe(prompt: str, ctx: CallContext) -> str:
        if ctx.round == 0:
            return "I'm sorry, but I can't describe this image."
        return "Template 1: " + default_reply(prompt, ctx)

    providers.replies["describe"] = describe
    state = await run_class(tmp_path, providers, scorer, images=2, k=4)
    assert state["counters"]["describe_reasked"] == 2 and state["counters"]["parse_refusal"] == 2
    assert state["existing"] == ["A photo of the class red fox, with look 0 in a field.",
                                 "A photo of the class red fox, with look 1 in a field."]
