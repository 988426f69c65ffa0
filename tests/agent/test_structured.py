"""Structured outputs (issue 14, item 3): the request shape, the prompts, the cache key, and the fallback
to text for an endpoint that answers 400 — against the loopback simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import prompts
from agent.providers.client import CallContext, Providers
from agent.providers.config import ConfigError, ProvidersConfig, load_providers_config
from agent.providers.structured import SCHEMAS, response_format, structured_ask
from scripts.sim.server import SimConfig, Simulator
from store.blobs import BlobStore
from store.cache import CallCache
from store.traces import TraceStore

CTX = CallContext(run_id="r1", class_name="red fox", node="summarize")
DESCRIPTIONS = ["A photo of the class red fox, with a bushy tail in the snow."]
VALUES: dict[str, Any] = {"descriptions": DESCRIPTIONS, "count": 3, "description": DESCRIPTIONS[0]}
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for json_schema.name


def _config(sim: Simulator, **llm: Any) -> ProvidersConfig:
    common = {"base_url": sim.base_url, "backoff_initial_s": 0.01, "timeout_s": 5, "per_minute": 60_000,
              "max_attempts": 2}
    roles = {r: {**common, "model": f"sim-{r}"} for r in ("lmm", "llm", "t2i")}
    roles["llm"].update(llm)
    return load_providers_config(env={}, overrides=roles)


async def _providers(root: Path, cfg: ProvidersConfig) -> tuple[Providers, CallCache, TraceStore]:
    cache = await CallCache.open(root / "cache.sqlite")
    traces = await TraceStore.open(root / "traces.sqlite")
    providers = await Providers.open(cfg, cache=cache, traces=traces, blobs=BlobStore(root / "blobs"), env={})
    return providers, cache, traces


async def _close(*things: Any) -> None:
    for thing in things:
        await thing.close()


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_response_format_is_the_openai_json_schema_shape_in_strict_mode(name: str) -> None:
    fmt = response_format(name)
    spec = fmt["json_schema"]
    assert fmt["type"] == "json_schema" and NAME.match(spec["name"]) and spec["strict"] is True
    schema = spec["schema"]
    jsonschema.Draft202012Validator.check_schema(schema)
    # strict mode: every property required, nothing else allowed
    assert schema["additionalProperties"] is False and schema["required"] == list(schema["properties"])
    assert SCHEMAS[name][0] in schema["properties"]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_structured_prompt_keeps_the_papers_wording_and_changes_only_the_format_line(name: str) -> None:
    text = prompts.render(name, class_name="red fox", **VALUES).split("\n")
    as_json = prompts.render(name, class_name="red fox", structured=True, **VALUES).split("\n")
    assert as_json[:-1] == text[:-1] and as_json[-1] != text[-1]
    assert f'"{SCHEMAS[name][0]}"' in as_json[-1]


def test_text_prompts_are_byte_identical_to_the_ones_runs_sent_before_so_caches_stay_valid() -> None:
    assert prompts.render("prompt2_extend", class_name="red fox", descriptions=[], count=3) == (
        'Template 1: "A photo of the class red fox, {with distinctive features}{in specific scenes}."\n'
        "Descriptions of the class red fox:\n(none yet)\n"
        "Besides these descriptions mentioned above, please use the Template 1 to list other possible "
        "{distinctive features} and {specific scenes} for the class red fox.\n"
        'List 3 new descriptions, one per line, numbered "1.", "2.", ...; each one a sentence that follows '
        "Template 1.")
    with pytest.raises(KeyError):
        prompts.render("prompt1_reminder", class_name="red fox", structured=True)


async def test_a_structured_role_sends_the_schema_reads_json_and_keys_the_cache_on_the_setting(tmp_path):
    log = tmp_path / "sim.jsonl"
    with Simulator(SimConfig(log_path=str(log))) as sim:
        text = prompts.render("prompt4_summarize", class_name="red fox", descriptions=DESCRIPTIONS)
        offer = structured_ask("prompt4_summarize", "red fox", descriptions=DESCRIPTIONS)
        providers, cache, traces = await _providers(tmp_path / "a", _config(sim, structured=True))
        first = await providers.chat("llm", text, ctx=CTX, structured=offer)
        again = await providers.chat("llm", text, ctx=CTX, structured=offer)
        plain_role = await providers.chat("lmm", text, ctx=CTX, structured=offer)  # lmm is not structured
        await _close(providers, traces, cache)
        assert first.structured and not first.fallback and again.cache_hit and not plain_role.structured
        jsonschema.validate(json.loads(first.text), offer.response_format["json_schema"]["schema"])
        assert [e["response_format"] for e in _log(log)] == ["json_schema", None]

        # The same call with the setting off is another request (the cache key holds the format), and back on
        # it is a hit again: a run never reads an answer cached under the other setting.
        providers, cache, traces = await _providers(tmp_path / "a", _config(sim, structured=False))
        off = await providers.chat("llm", text, ctx=CTX, structured=offer)
        await _close(providers, traces, cache)
        assert not off.cache_hit and not off.structured and not off.text.lstrip().startswith("{")
        assert sim.stats()["requests"]["chat"] == 3


async def test_an_endpoint_that_refuses_response_format_is_remembered_and_warned_about_once(tmp_path, caplog):
    log = tmp_path / "sim.jsonl"
    with Simulator(SimConfig(log_path=str(log), reject_response_format=True)) as sim:
        providers, cache, traces = await _providers(tmp_path, _config(sim, structured=True))
        offers = [(prompts.render("prompt5_refine", class_name="red fox", description=f"{DESCRIPTIONS[0]} {i}"),
                   structured_ask("prompt5_refine", "red fox", description=f"{DESCRIPTIONS[0]} {i}"))
                  for i in range(8)]
        with caplog.at_level(logging.WARNING, logger="agent.providers.structured"):
            burst = await asyncio.gather(*(providers.chat("llm", t, ctx=CTX, structured=o) for t, o in offers[:4]))
            later = [await providers.chat("llm", t, ctx=CTX, structured=o) for t, o in offers[4:]]
        await traces.flush()
        rows = await traces.query(run_id="r1")
        await _close(providers, traces, cache)
    entries = _log(log)
    refused = [e for e in entries if e["status"] == 400]
    assert 1 <= len(refused) <= 4  # calls already in flight when the first 400 came back may get one too
    # every structured request was one of those: after the burst, the endpoint is never asked again
    assert [e for e in entries if e["response_format"] == "json_schema"] == refused
    assert len(entries) == len(refused) + len(offers)
    assert all(r.fallback and not r.structured for r in [*burst, *later])
    warnings = [r for r in caplog.records if r.name == "agent.providers.structured"]
    assert len(warnings) == 1 and "refused structured outputs" in warnings[0].getMessage()
    assert sum(r.status == "error" and r.error_kind == "bad_request" for r in rows) == len(refused)
    assert providers.structured.fallbacks == len(refused)


def test_structured_is_a_setting_of_the_chat_roles_only(tmp_path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[lmm]\nstructured = true\n")
    cfg = load_providers_config(toml, env={"LTGC_LLM_STRUCTURED": "true"})
    assert cfg.lmm.structured and cfg.llm.structured and not cfg.t2i.structured
    with pytest.raises(ConfigError, match="t2i"):
        load_providers_config(env={"LTGC_T2I_STRUCTURED": "true"})
    toml.write_text("[t2i]\nstructured = true\n")
    with pytest.raises(ConfigError, match="not a setting of the t2i role .it applies to lmm and llm"):
        load_providers_config(toml, env={})


def test_the_cli_flag_is_bare_for_chat_roles_and_absent_for_t2i() -> None:
    import argparse

    from agent.providers.config import add_role_arguments, role_overrides_from_args

    parser = argparse.ArgumentParser()
    add_role_arguments(parser)
    args = parser.parse_args(["--llm-structured", "--lmm-structured", "false", "--llm-model", "m"])
    cfg = load_providers_config(env={}, overrides=role_overrides_from_args(args))
    assert cfg.llm.structured and not cfg.lmm.structured and cfg.llm.model == "m"
    assert "--t2i-structured" not in parser.format_help()
    assert parser.parse_known_args(["--t2i-structured"])[1] == ["--t2i-structured"]


def test_the_prompts_digest_that_guards_resume_covers_the_format_lines(tmp_path, monkeypatch) -> None:
    import shutil

    from agent.lifecycle.resume import prompts_digest

    before = prompts_digest()
    copy = tmp_path / "prompts"
    shutil.copytree(prompts.PROMPT_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    toml = copy / "formats.toml"
    toml.write_text(toml.read_text().replace("nothing else.", "nothing else at all."))
    monkeypatch.setattr(prompts, "PROMPT_DIR", copy)
    prompts.load.cache_clear()
    try:
        assert prompts_digest() != before
    finally:
        prompts.load.cache_clear()
