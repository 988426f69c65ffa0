"""The simulator's reply styles and structured answers (issue 14, items 2 and 3)."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import openai
import pytest

import prompts
from agent.graph.checks import follows_template2
from agent.graph.reply import read_reply
from agent.providers.structured import SCHEMAS, response_format, structured_ask
from scripts.sim import content as sim_content
from scripts.sim import styles as sim_styles
from scripts.sim.server import Simulator
from scripts.sim.state import SimConfig

Y = "red fox"
ITEMS = sim_content.extend_items(Y, [], 6, seed=0, rng=random.Random(3))
SENTENCE = sim_content.sentence1(Y, "a glossy dark coat", "a snowy pine forest")
SUMMARY = sim_content.summarize_sentence(Y, ITEMS, seed=0)
MARKUP = ("**", "{", "}", "Template", "Description", "Summary", "“", '"', "\r")


@pytest.mark.parametrize("style", sorted(sim_styles.LIST_STYLES))
def test_every_list_style_reads_back_to_the_plain_items(style: str) -> None:
    text = sim_styles.LIST_STYLES[style](ITEMS, Y, [ITEMS[0] + " (removed)"])
    assert read_reply(text, Y).kept == ITEMS


@pytest.mark.parametrize("style", sorted(set(sim_styles.SINGLE_STYLES) - {"refusal"}))
def test_every_single_sentence_style_reads_back_to_the_sentence(style: str) -> None:
    assert read_reply(sim_styles.SINGLE_STYLES[style](SENTENCE, Y), Y).kept == [SENTENCE]


@pytest.mark.parametrize("style", sorted(sim_styles.SUMMARY_STYLES))
def test_every_summary_style_reads_back_to_a_clean_template_2(style: str) -> None:
    kept = read_reply(sim_styles.SUMMARY_STYLES[style](SUMMARY, Y), Y, template=2).kept
    assert len(kept) == 1 and follows_template2(kept[0], Y) and not any(m in kept[0] for m in MARKUP)


def test_the_refusal_style_is_a_refusal_and_only_describe_gets_it() -> None:
    reading = read_reply(sim_styles.SINGLE_STYLES["refusal"](SENTENCE, Y), Y)
    assert reading.kept == [] and reading.counts["refusal"] == 1
    for seed in range(60):
        style, _ = sim_styles.style_reply("reminder", SENTENCE, class_name=Y, rng=random.Random(seed))
        assert style != "refusal"


def _chat(sim: Simulator, text: str, **kw: Any) -> str:
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    resp = client.chat.completions.create(model="sim-chat", messages=[{"role": "user", "content": text}], **kw)
    return resp.choices[0].message.content or ""


def _extend_prompt(i: int) -> str:
    return prompts.render("prompt2_extend", class_name=Y, descriptions=ITEMS[:1], count=8 + i)


def test_the_style_share_is_seeded_and_a_share_of_one_styles_every_answer() -> None:
    styles: list[list[str]] = []
    styled: list[int] = []
    for share in (0.0, 0.5, 1.0, 0.5):
        with Simulator(SimConfig(reply_style_share=share, seed=4)) as sim:
            styles.append([_chat(sim, _extend_prompt(i)) for i in range(24)])
            styled.append(sim.stats()["styled_replies"])
    assert styled[0] == 0 and styled[2] == 24 and 4 <= styled[1] <= 20
    assert styles[1] == styles[3]  # same seed, same requests: the same answers, styled alike
    assert sum(a != b for a, b in zip(styles[0], styles[1], strict=True)) == styled[1]


def test_styled_answers_carry_the_same_content_as_plain_ones() -> None:
    answers = {}
    for share in (0.0, 1.0):
        with Simulator(SimConfig(reply_style_share=share, seed=1)) as sim:
            answers[share] = [read_reply(_chat(sim, _extend_prompt(i)), Y).kept for i in range(12)]
    assert answers[0.0] == answers[1.0]


@pytest.mark.parametrize("share", [0.0, 1.0])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_structured_answers_validate_against_the_requests_schema(name: str, share: float) -> None:
    offer = structured_ask(name, Y, descriptions=ITEMS, count=5, description=ITEMS[0])
    with Simulator(SimConfig(reply_style_share=share)) as sim:
        content = _chat(sim, offer.prompt, response_format=response_format(name))
        assert sim.stats()["structured_replies"] == 1
    data = json.loads(content)
    jsonschema.validate(data, response_format(name)["json_schema"]["schema"])
    assert read_reply(content, Y, template=2 if name == "prompt4_summarize" else 1, key=offer.key).kept


def test_any_json_schema_is_honoured_not_only_ours() -> None:
    schema = {"type": "object", "required": ["title", "tags", "n", "meta"], "additionalProperties": False,
              "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
                             "n": {"type": "integer"},
                             "meta": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "custom", "schema": schema, "strict": True}}
    with Simulator() as sim:
        jsonschema.validate(json.loads(_chat(sim, _extend_prompt(0), response_format=fmt)), schema)


def test_a_server_that_rejects_response_format_answers_400_but_still_serves_text() -> None:
    with Simulator(SimConfig(reject_response_format=True)) as sim:
        with pytest.raises(openai.BadRequestError, match="response_format"):
            _chat(sim, _extend_prompt(0), response_format=response_format("prompt2_extend"))
        assert read_reply(_chat(sim, _extend_prompt(0)), Y).kept
        with pytest.raises(ValueError, match="reply_style_share"):
            sim.set_config(reply_style_share=1.5)
