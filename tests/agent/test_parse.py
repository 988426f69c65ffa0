"""Pure parsing: list styles (agent/graph/reply.py), normalisation, the two templates, the repetition-check helpers."""

from __future__ import annotations

import pytest

from agent.graph.checks import follows_template1, follows_template2, near_duplicate, normalise
from agent.graph.dedupe import keep_subset, local_dedupe
from agent.graph.evaluate import classify
from agent.graph.extend import select_new
from agent.graph.reply import read_reply

FOX1 = "A photo of the class red fox, with a bushy tail in the snow."
FOX2 = "A photo of the class red fox, with black legs on a meadow."


@pytest.mark.parametrize("text", [
    f"1. {FOX1}\n2. {FOX2}",
    f"1) {FOX1}\n\n2) {FOX2}\n",
    f"(1) \"{FOX1}\"\n(2) “{FOX2}”",
    f"- {FOX1}\n* {FOX2}",
    f"• {FOX1}\n• {FOX2}",
    f'["{FOX1}", "{FOX2}"]',
    f'```json\n["{FOX1}", "{FOX2}"]\n```',
    f"**1. {FOX1}**\n**2. {FOX2}**",
    f"{FOX1}\n{FOX2}",
])
def test_every_common_list_style_reads_to_the_same_items(text):
    assert read_reply(text, "red fox").kept == [FOX1, FOX2]


def test_chatty_lines_are_skipped_and_counted_not_kept():
    reading = read_reply(f"Sure! Here are two:\n1. {FOX1}\n2. {FOX2}\nHope this helps.", "red fox")
    assert reading.kept == [FOX1, FOX2]
    assert (reading.counts["chatter"], reading.counts["items"], reading.counts.get("dropped", 0)) == (2, 2, 0)


def test_normalise_ignores_case_punctuation_and_spacing_only():
    assert normalise("A  photo, of THE class: Red-Fox!") == normalise("a photo of the class red fox")
    assert normalise("red fox") != normalise("red foxes")


@pytest.mark.parametrize(("text", "ok"), [
    (FOX1, True),
    ("a photo of the class RED FOX, in snow", True),
    ("A photo of the class red fox.", False),  # nothing after the class
    ("A photo of the class grey wolf, in snow.", False),  # another class
    ("Photo of a red fox in snow.", False),
    ("A photo of the class red fox, " + "very " * 100 + "red.", False),  # not one short sentence
    (f"{FOX1}\n{FOX2}", False),
])
def test_template1(text, ok):
    assert follows_template1(text, "red fox") is ok


def test_template2_needs_with_and_features():
    assert follows_template2("A photo of the class red fox with a bushy tail and black legs.", "red fox")
    assert not follows_template2("A photo of the class red fox with.", "red fox")
    assert not follows_template2(FOX1.replace(", with", " in"), "red fox")


def test_the_first_template_sentence_is_the_first_kept():
    assert read_reply(f"Sure.\n{FOX2}\n{FOX1}", "red fox").kept[0] == FOX2
    assert read_reply("Sure.", "red fox").kept == []


def test_near_duplicate_catches_rewordings_but_not_new_features():
    assert near_duplicate(FOX1, FOX1.upper())
    assert near_duplicate("A photo of the class red fox, in the snow.", "A photo of the class red fox in snow!")
    assert not near_duplicate(FOX1, FOX1.replace("bushy", "thin"))


def test_select_new_takes_template_items_not_yet_listed_up_to_the_limit():
    items = [FOX1, "nonsense", FOX1.upper(), FOX2, "A photo of the class red fox, with a third thing."]
    added, counters = select_new(items, [FOX2], "red fox", limit=1)
    assert added == [FOX1]
    assert counters == {"extend_off_template": 1, "extend_repeats": 2}


def test_keep_subset_only_removes_and_reports_inventions():
    invented = "A photo of the class red fox, with wings."
    kept, made_up = keep_subset(["Here you go:", FOX2.lower(), invented, FOX2], [FOX1, FOX2], "red fox")
    assert kept == [FOX2]  # the input's own text, never the model's copy
    assert made_up == [invented]


def test_local_dedupe_also_checks_the_existing_descriptions():
    assert local_dedupe([FOX1], [FOX1.lower(), FOX2, FOX2 + "!"]) == [FOX2]


@pytest.mark.parametrize(("score", "round_", "expected"), [
    (0.5, 0, "accepted"), (0.49, 0, "low"), (0.49, 2, "low"), (0.49, 3, "rejected"), (0.9, 3, "accepted"),
])
def test_evaluate_classify(score, round_, expected):
    assert classify(score, {"round": round_}, threshold=0.5, max_rounds=3) == expected  # type: ignore[arg-type]
