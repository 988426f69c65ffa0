"""The class graph, node by node, with a fake provider and scorer (no network, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

import prompts
from agent.graph.finalize import shortfall
from agent.providers.client import CallContext, ProviderError
from store.blobs import BlobStore
from tests.agent.graph_fakes import FakeProviders, FakeScorer, default_reply, listed, run_class


@pytest.fixture
def fakes(tmp_path: Path) -> tuple[FakeProviders, FakeScorer]:
    providers = FakeProviders(BlobStore(tmp_path / "blobs"))
    return providers, FakeScorer(providers)


async def test_happy_path_reaches_k_and_writes_images(tmp_path, fakes):
    providers, scorer = fakes
    state = await run_class(tmp_path, providers, scorer, images=2, k=6)
    assert state["status"] == "complete" and state["done"]
    assert len(state["existing"]) == 2 and len(state["new"]) == 4  # K_y = M_y + N_y = 2 + 4
    assert [i["status"] for i in state["items"]] == ["accepted"] * 4
    # the prompt that reached the model is the prompt file, rendered with the current list
    extend = providers.nodes("extend")[0]
    assert extend.prompt == prompts.render("prompt2_extend", class_name="red fox",
                                           descriptions=state["existing"], count=4 + 2)
    assert [c.images for c in providers.nodes("describe")] == [1, 1]  # one image per vision call
    assert state["usage"]["calls"] == 2 + 1 + 1 + 1 + 4  # describe, extend, dedupe, summarize, renders
    for item in state["items"]:  # finalize placed every accepted image under images/<slug>/
        assert (tmp_path / "run" / "images" / "red-fox" / f"{item['sha256']}.png").is_file()


async def test_describe_reasks_once_then_drops_and_counts(tmp_path, fakes):
    providers, scorer = fakes

    def describe(prompt: str, ctx: CallContext) -> str:
        if ctx.sample_index == 0 or ctx.round == 0:
            return "It is a fox."  # off-template: image 0 always, image 1 only on the first ask
        return default_reply(prompt, ctx)

    providers.replies["describe"] = describe
    state = await run_class(tmp_path, providers, scorer, images=2, k=4)
    calls = providers.nodes("describe")
    assert len(calls) == 4  # two first asks, two re-asks, never a third
    reasks = [c for c in calls if c.ctx.round == 1]
    assert all(prompts.render("prompt1_reminder", class_name="red fox") in c.prompt for c in reasks)
    assert state["counters"]["describe_dropped"] == 1
    assert state["existing"] == ["A photo of the class red fox, with look 1 in a field."]


async def test_extend_loops_with_the_current_list_until_k(tmp_path, fakes):
    providers, scorer = fakes

    def one_per_round(prompt: str, ctx: CallContext) -> str:
        return f"1. A photo of the class red fox, with trait {ctx.sample_index}."

    providers.replies["extend"] = one_per_round
    state = await run_class(tmp_path, providers, scorer, images=1, k=5)
    calls = providers.nodes("extend")
    assert len(state["new"]) == 4 and len(calls) == 4
    assert [c.ctx.sample_index for c in calls] == [0, 1, 2, 3]  # distinct cache entries per round
    assert [len(listed(c.prompt)) for c in calls] == [1, 2, 3, 4]  # each round sees the grown list
    # asks for what is missing plus slack: 4 + 2, 3 + 2, ...
    assert [f"List {n} new" in c.prompt for n, c in zip([6, 5, 4, 3], calls, strict=True)] == [True] * 4


async def test_extend_stops_after_two_rounds_adding_nothing(tmp_path, fakes):
    providers, scorer = fakes
    providers.replies["extend"] = lambda prompt, ctx: "\n".join(f"- {t}" for t in listed(prompt))  # repeats only
    state = await run_class(tmp_path, providers, scorer, images=1, k=4, max_dedupe_passes=2)
    assert len(providers.nodes("extend")) == 4  # 2 stale rounds, dedupe sends it back once, 2 more
    assert sum("2 rounds in a row added nothing" in w for w in state["warnings"]) == 2
    assert state["status"] == "failed" and "no new descriptions" in state["error"]
    assert state["counters"]["extend_repeats"] == 4


async def test_extend_respects_max_extend_rounds(tmp_path, fakes):
    providers, scorer = fakes
    providers.replies["extend"] = lambda p, ctx: f"1. A photo of the class red fox, with trait {ctx.sample_index}."
    state = await run_class(tmp_path, providers, scorer, images=1, k=9, max_extend_rounds=2, max_dedupe_passes=2)
    assert len(providers.nodes("extend")) == 4 and len(state["new"]) == 4
    assert any("reached --max-extend-rounds (2)" in w for w in state["warnings"])
    assert any("4 of 8 new descriptions" in w for w in state["warnings"])
    assert state["status"] == "complete" and len(state["items"]) == 4


async def test_dedupe_rejects_an_invented_item_and_refills(tmp_path, fakes):
    providers, scorer = fakes
    invented = "A photo of the class red fox, with wings in outer space."

    def dedupe(prompt: str, ctx: CallContext) -> str:
        items = listed(prompt)
        if ctx.sample_index == 0:  # first pass: drop one item and invent another
            items = [*items[1:], invented]
        return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))

    providers.replies["dedupe"] = dedupe
    state = await run_class(tmp_path, providers, scorer, images=1, k=5)
    assert state["counters"]["dedupe_invented"] == 1
    assert invented not in state["new"] and all(i["description"] != invented for i in state["items"])
    assert len(providers.nodes("dedupe")) == 2 and len(providers.nodes("extend")) == 2  # refilled once
    assert len(state["new"]) == 4
    assert any("invented" in w for w in state["warnings"])


async def test_local_dedupe_drops_near_exact_duplicates(tmp_path, fakes):
    providers, scorer = fakes

    def extend(prompt: str, ctx: CallContext) -> str:
        if ctx.sample_index == 0:
            return ("1. A photo of the class red fox, in the snow.\n2. A photo of the class red fox, in snow!\n"
                    "3. A photo of the class red fox, with red fur.")
        return f"1. A photo of the class red fox, with trait {ctx.sample_index}."

    providers.replies["extend"] = extend
    state = await run_class(tmp_path, providers, scorer, images=1, k=4)
    assert state["counters"]["local_duplicates"] == 1
    assert "A photo of the class red fox, in snow!" not in state["new"] and len(state["new"]) == 3


async def test_refine_uses_the_latest_text_and_stops_at_r_rounds(tmp_path, fakes):
    providers, scorer = fakes
    scorer.score_of = lambda description: 0.1  # always below μ = 0.5
    state = await run_class(tmp_path, providers, scorer, images=1, k=3, max_rounds=2)
    items = state["items"]
    assert [i["status"] for i in items] == ["rejected", "rejected"]
    assert all(i["round"] == 2 and len(i["scores"]) == 3 and len(i["history"]) == 2 for i in items)
    refines = providers.nodes("refine")
    assert len(refines) == 4 and len(providers.nodes("render")) == 6  # R refines + R+1 renders per item
    second = [c for c in refines if c.ctx.round == 2]
    assert all(f"refined r1 of item {c.ctx.sample_index}" in c.prompt for c in second)  # latest text refined


async def test_refined_item_that_scores_well_is_accepted(tmp_path, fakes):
    providers, scorer = fakes
    scorer.score_of = lambda description: 0.9 if "refined" in description else 0.2
    state = await run_class(tmp_path, providers, scorer, images=1, k=3, max_rounds=3)
    assert all(i["status"] == "accepted" and i["round"] == 1 and i["scores"] == [0.2, 0.9]
               for i in state["items"])


async def test_one_failed_render_does_not_cancel_its_siblings(tmp_path, fakes):
    providers, scorer = fakes
    providers.render_fails = lambda prompt: "r0n1" in prompt
    state = await run_class(tmp_path, providers, scorer, images=1, k=4, max_rounds=0)
    statuses = sorted(i["status"] for i in state["items"])
    assert statuses == ["accepted", "accepted", "failed"]
    failed = next(i for i in state["items"] if i["status"] == "failed")
    # A lost item is not a complete class: short, with the reason counted (issue 21).
    assert "content policy" in failed["error"] and failed["error_kind"] == "refused"
    assert state["status"] == "short" and shortfall(state) == {"content_policy": 1}


async def test_a_refused_render_goes_through_refine_and_is_drawn_again(tmp_path, fakes):
    providers, scorer = fakes
    providers.render_fails = lambda prompt: "r0n1" in prompt  # the rewritten text is not refused
    state = await run_class(tmp_path, providers, scorer, images=1, k=4, max_rounds=2)
    assert [i["status"] for i in state["items"]] == ["accepted"] * 3 and state["status"] == "complete"
    item = next(i for i in state["items"] if i["round"] == 1)
    assert "r0n1" in item["history"][0] and item["history_images"] == [""] and len(item["scores"]) == 1
    assert state["counters"]["render_refused"] == 1 and len(providers.nodes("refine")) == 1


async def test_a_render_refused_through_every_round_is_missing(tmp_path, fakes):
    providers, scorer = fakes
    providers.render_fails = lambda prompt: "r0n1" in prompt or "of item 1." in prompt  # item 1, every text
    state = await run_class(tmp_path, providers, scorer, images=1, k=4, max_rounds=2)
    lost = [i for i in state["items"] if i["status"] == "failed"]
    assert len(lost) == 1 and lost[0]["round"] == 2 and lost[0]["error_kind"] == "refused"
    assert len(providers.nodes("refine")) == 2 and state["status"] == "short"


async def test_class_fails_when_every_render_fails(tmp_path, fakes):
    providers, scorer = fakes
    providers.render_fails = lambda prompt: True
    state = await run_class(tmp_path, providers, scorer, images=1, k=3)
    assert state["status"] == "failed" and "every render failed" in state["error"]


async def test_class_with_enough_real_images_renders_nothing(tmp_path, fakes):
    providers, scorer = fakes
    state = await run_class(tmp_path, providers, scorer, images=3, k=2)
    assert providers.calls == [] and state["items"] == [] and state["status"] == "complete"
    assert any("nothing to generate" in w for w in state["warnings"])


async def test_describe_failure_is_recorded_and_the_class_goes_on(tmp_path, fakes):
    providers, scorer = fakes

    def describe(prompt: str, ctx: CallContext) -> str | Exception:
        if ctx.sample_index == 0:
            return ProviderError("exhausted", "server kept failing", status=503)
        return default_reply(prompt, ctx)

    providers.replies["describe"] = describe
    state = await run_class(tmp_path, providers, scorer, images=2, k=4)
    assert state["counters"]["describe_failed"] == 1 and len(state["existing"]) == 1
    assert any("server kept failing" in w for w in state["warnings"]) and state["status"] == "complete"


async def test_summarize_falls_back_and_records_truncation(tmp_path, fakes):
    providers, scorer = fakes
    long = "A photo of the class red fox with " + " and ".join(f"feature {i}" for i in range(60)) + "."
    providers.replies["summarize"] = lambda prompt, ctx: long
    state = await run_class(tmp_path, providers, scorer, images=1, k=2)
    assert state["template"] == long and state["template_truncated"] and state["template_tokens"] > 77

    providers2 = FakeProviders(BlobStore(tmp_path / "b2"), replies={"summarize": lambda p, c: "Foxes are red."})
    state2 = await run_class(tmp_path / "2", providers2, FakeScorer(providers2), images=1, k=2)
    assert state2["template"] == "a photo of a red fox." and not state2["template_truncated"]
    assert any("did not follow Template 2" in w for w in state2["warnings"])


async def test_spent_budget_stops_the_class_instead_of_failing_an_item(tmp_path, fakes):
    providers, scorer = fakes
    providers.replies["extend"] = lambda prompt, ctx: ProviderError("budget", "--max-calls reached")
    with pytest.raises(ProviderError) as info:
        await run_class(tmp_path, providers, scorer, images=1, k=3)
    assert info.value.kind == "budget"
