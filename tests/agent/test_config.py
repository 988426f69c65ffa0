"""agent/providers/config.py: precedence, one-line errors naming the source, secrets never in the config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.providers.config import (
    LOCAL_PLACEHOLDER_KEY,
    ConfigError,
    ProvidersConfig,
    add_role_arguments,
    load_providers_config,
    passthrough_sections,
    read_toml,
    role_overrides_from_args,
)
from agent.providers.endpoints import is_local_url, redact_url, redacted_dump, resolve_api_key


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ltgc.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _cli(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_role_arguments(parser)
    return role_overrides_from_args(parser.parse_args(list(argv)))


def test_defaults_point_at_openai() -> None:
    cfg = load_providers_config(env={})
    assert (cfg.lmm.model, cfg.llm.model, cfg.t2i.model) == ("gpt-4o", "gpt-4o-mini", "gpt-image-1")
    for role in ("lmm", "llm", "t2i"):
        rc = cfg.role(role)
        assert rc.base_url == "https://api.openai.com/v1"
        assert rc.api_key_env == "OPENAI_API_KEY"
    assert cfg.t2i.response_format is None
    assert cfg == ProvidersConfig()


def test_precedence_cli_over_env_over_toml_over_default(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[llm]\nmodel = "from-toml"\ntimeout_s = 5\nmax_in_flight = 3\n')
    env = {"LTGC_LLM_MODEL": "from-env", "LTGC_LLM_TIMEOUT_S": "7.5"}
    cfg = load_providers_config(path, env=env, overrides=_cli("--llm-model", "from-cli"))
    assert cfg.llm.model == "from-cli"  # CLI beats env and TOML
    assert cfg.llm.timeout_s == 7.5  # env beats TOML
    assert cfg.llm.max_in_flight == 3  # TOML beats default
    assert cfg.llm.per_minute == 300  # default
    assert cfg.lmm.model == "gpt-4o"  # other roles untouched


def test_cache_namespace_from_every_source(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'cache_namespace = "t"\n')
    assert load_providers_config(path, env={}).cache_namespace == "t"
    assert load_providers_config(path, env={"LTGC_CACHE_NAMESPACE": "e"}).cache_namespace == "e"
    cli = _cli("--cache-namespace", "c")
    assert load_providers_config(path, env={"LTGC_CACHE_NAMESPACE": "e"}, overrides=cli).cache_namespace == "c"


def test_run_table_passes_through_untouched(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[run]\ntarget_per_class = 12\nmu = 0.8\n[t2i]\nimage_size = "256x256"\n')
    doc = read_toml(path)
    assert passthrough_sections(doc) == {"run": {"target_per_class": 12, "mu": 0.8}}
    cfg = load_providers_config(path, env={}, toml_doc=doc)
    assert cfg.t2i.image_size == "256x256"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LTGC_LLM_TIMEOUT_S": "abc"}, "LTGC_LLM_TIMEOUT_S: must be a number > 0, got 'abc'"),
        ({"LTGC_LLM_TIMEOUT_S": "-1"}, "LTGC_LLM_TIMEOUT_S: must be a number > 0, got '-1'"),
        ({"LTGC_T2I_MAX_IN_FLIGHT": "0"}, "LTGC_T2I_MAX_IN_FLIGHT: must be an integer >= 1, got '0'"),
        ({"LTGC_LMM_BASE_URL": "ftp://host"}, "LTGC_LMM_BASE_URL: must be an http(s):// URL, or several (comma-separated, or a TOML list: replicas of one model), got 'ftp://host'"),
        ({"LTGC_T2I_RESPONSE_FORMAT": "jpeg"}, "LTGC_T2I_RESPONSE_FORMAT: must be 'b64_json', 'url' or none"),
    ],
)
def test_env_errors_are_one_line_naming_the_variable(env: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_providers_config(env=env)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_unknown_env_suffix_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"LTGC_LLM_TIMOUT_S: unknown setting 'timout_s'.*TIMEOUT_S"):
        load_providers_config(env={"LTGC_LLM_TIMOUT_S": "3"})


def test_toml_errors_name_file_table_and_key(tmp_path: Path) -> None:
    bad_value = _toml(tmp_path, '[t2i]\nper_minute = "lots"\n')
    with pytest.raises(ConfigError, match=r"ltgc.toml \[t2i\] per_minute: must be a number > 0, got 'lots'"):
        load_providers_config(bad_value, env={})
    unknown = _toml(tmp_path, '[llm]\nmodle = "x"\n')
    with pytest.raises(ConfigError, match=r"ltgc.toml \[llm\]: unknown setting 'modle'"):
        load_providers_config(unknown, env={})
    broken = _toml(tmp_path, "[llm\nmodel = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_providers_config(broken, env={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_providers_config(tmp_path / "missing.toml", env={})


def test_cli_error_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--t2i-max-attempts: must be an integer from 1 to 50, got '0'$"):
        load_providers_config(env={}, overrides=_cli("--t2i-max-attempts", "0"))


def test_cli_flags_exist_for_every_role_field_and_default_to_not_given() -> None:
    assert _cli() == {}
    got = _cli("--lmm-base-url", "http://127.0.0.1:9/v1", "--t2i-max-in-flight", "2", "--llm-max-tokens", "none")
    assert got == {"lmm": {"base_url": "http://127.0.0.1:9/v1"}, "t2i": {"max_in_flight": "2"},
                   "llm": {"max_tokens": "none"}}
    cfg = load_providers_config(env={"LTGC_LLM_MAX_TOKENS": "50"}, overrides=got)
    assert cfg.t2i.max_in_flight == 2 and cfg.llm.max_tokens is None  # "none" clears an optional setting


def test_a_pasted_key_in_api_key_env_is_rejected_without_echoing_it() -> None:
    secret = "sk-proj-THIS-IS-A-SECRET-123"
    with pytest.raises(ConfigError) as info:
        load_providers_config(env={"LTGC_LLM_API_KEY_ENV": secret})
    assert "LTGC_LLM_API_KEY_ENV" in str(info.value)
    assert secret not in str(info.value)


def test_api_key_resolution_local_and_remote() -> None:
    cfg = load_providers_config(env={"LTGC_LLM_BASE_URL": "http://localhost:8000/v1"})
    assert resolve_api_key("llm", cfg.llm, env={}) == LOCAL_PLACEHOLDER_KEY
    assert resolve_api_key("llm", cfg.llm, env={"OPENAI_API_KEY": "sk-real"}) == "sk-real"
    with pytest.raises(ConfigError, match=r"lmm: environment variable OPENAI_API_KEY is not set"):
        resolve_api_key("lmm", cfg.lmm, env={})
    other = load_providers_config(env={"LTGC_T2I_API_KEY_ENV": "MY_IMAGE_KEY"})
    with pytest.raises(ConfigError, match="MY_IMAGE_KEY is not set"):
        resolve_api_key("t2i", other.t2i, env={"OPENAI_API_KEY": "sk-other"})


@pytest.mark.parametrize(
    ("url", "local"),
    [("http://127.0.0.1:1234/v1", True), ("http://localhost/v1", True), ("http://[::1]:80/v1", True),
     ("http://127.0.0.2/v1", True), ("https://api.openai.com/v1", False), ("http://10.0.0.5/v1", False),
     ("http://localhost.evil.com/v1", False)],
)
def test_is_local_url(url: str, local: bool) -> None:
    assert is_local_url(url) is local


def test_redacted_dump_holds_no_secret_and_no_url_credentials() -> None:
    env = {
        "OPENAI_API_KEY": "sk-SHOULD-NEVER-APPEAR",
        "LTGC_LLM_BASE_URL": "https://user:hunter2@gateway.example/v1?api_key=sk-SHOULD-NEVER-APPEAR",
    }
    cfg = load_providers_config(env=env)
    dumped = json.dumps(redacted_dump(cfg))
    assert "SHOULD-NEVER-APPEAR" not in dumped and "hunter2" not in dumped
    assert redacted_dump(cfg)["llm"]["base_url"] == "https://gateway.example/v1"
    assert redacted_dump(cfg)["llm"]["api_key_env"] == "OPENAI_API_KEY"
    assert redact_url("http://[::1]:8080/v1") == "http://[::1]:8080/v1"


# ------------------------------------------------------------------------- the local (diffusers) provider
def test_t2i_provider_diffusers_with_its_settings_from_flags_env_and_toml(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[t2i]\nprovider = "diffusers"\nmodel = "stabilityai/sdxl-turbo"\nsteps = 4\n'
                           'guidance = 0.0\n')
    env = {"LTGC_T2I_BATCH_SIZE": "16", "LTGC_T2I_DEVICES": "cuda:0, cuda:1"}
    cfg = load_providers_config(path, env=env, overrides=_cli("--t2i-size", "512x512", "--t2i-seed", "7")).t2i
    assert (cfg.provider, cfg.model, cfg.steps, cfg.guidance) == ("diffusers", "stabilityai/sdxl-turbo", 4, 0.0)
    assert (cfg.batch_size, cfg.devices, cfg.image_size, cfg.seed) == (16, "cuda:0,cuda:1", "512x512", 7)
    assert redacted_dump(load_providers_config(path, env=env))["t2i"]["provider"] == "diffusers"


def test_size_is_an_alias_of_image_size() -> None:
    assert _cli("--t2i-size", "64x64") == _cli("--t2i-image-size", "64x64") == {"t2i": {"image_size": "64x64"}}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"provider": "local"}, "--t2i-provider: must be 'openai' (an OpenAI-compatible server) or 'diffusers' "
                            "(a local pipeline), got 'local'"),
    ({"steps": "4"}, "--t2i-steps: applies to the diffusers provider only (t2i provider is 'openai'); remove it, "
                     "or set --t2i-provider diffusers"),
    ({"provider": "diffusers"}, "--t2i-provider: the diffusers provider needs --t2i-model: a hub id such as "
                                "stabilityai/sdxl-turbo, or a local folder holding model_index.json"),
    ({"provider": "diffusers", "model": "m", "image_quality": "high"},
     "--t2i-image-quality: applies to an OpenAI-compatible server only (t2i provider is 'diffusers'); remove it"),
    ({"provider": "diffusers", "model": "m", "image_size": "500x500"},
     "--t2i-image-size: must be WIDTHxHEIGHT in pixels, each a multiple of 8 (e.g. 512x512) for a diffusers "
     "pipeline, got '500x500'"),
    ({"provider": "diffusers", "model": "m", "devices": "gpu0"},
     "--t2i-devices: must be devices such as 'cuda:0,cuda:1' or 'cpu', or none (auto), got 'gpu0'"),
    ({"provider": "diffusers", "model": "m", "devices": "cpu,cpu"},
     "--t2i-devices: must be devices such as 'cuda:0,cuda:1' or 'cpu', or none (auto), got 'cpu,cpu'"),
    ({"provider": "diffusers", "model": "m", "batch_size": "0"},
     "--t2i-batch-size: must be an integer from 1 to 1024 (prompts per forward pass), or none, got '0'"),
])
def test_local_provider_errors_are_one_line_naming_the_setting(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_providers_config(env={}, overrides={"t2i": overrides})
    assert str(info.value) == message


def test_local_settings_belong_to_t2i_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'steps' is not a setting of the llm role \(it applies to t2i\)"):
        load_providers_config(_toml(tmp_path, "[llm]\nsteps = 4\n"), env={})
    parser = argparse.ArgumentParser()
    add_role_arguments(parser)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert {"--t2i-provider", "--t2i-steps", "--t2i-guidance", "--t2i-batch-size", "--t2i-devices", "--t2i-seed",
            "--t2i-size"} <= flags
    assert "--lmm-steps" not in flags and "--llm-provider" not in flags


def test_a_saved_openai_config_with_unset_local_settings_still_loads(tmp_path: Path) -> None:
    """config.json lists every t2i field (None for the local ones): resuming an openai run must work."""
    saved = redacted_dump(load_providers_config(env={}))
    assert saved["t2i"]["steps"] is None and saved["t2i"]["provider"] == "openai"
    assert load_providers_config(env={}, toml_doc=saved).t2i.provider == "openai"


def test_the_server_image_defaults_do_not_apply_to_a_local_pipeline() -> None:
    """gpt-image-1's default size and quality are for a bill: a pipeline renders at its own size unless told."""
    server = load_providers_config(env={}).t2i
    assert (server.image_size, server.image_quality) == ("1024x1024", "low")
    local = load_providers_config(env={}, overrides={"t2i": {"provider": "diffusers", "model": "m"}})
    assert (local.t2i.image_size, local.t2i.image_quality) == (None, None)
    saved = redacted_dump(local)  # what config.json holds: a resume loads it back unchanged
    assert load_providers_config(env={}, toml_doc=saved).t2i == local.t2i


def test_a_local_unbilled_endpoint_has_no_default_per_minute_limit() -> None:
    # Issue 21: OpenAI's tier limits (60/min vision, 5/min images) made the offline recipe 3x slower.
    from agent.providers.config import NO_RATE_LIMIT

    local = {role: {"base_url": "http://127.0.0.1:8000/v1"} for role in ("lmm", "llm", "t2i")}
    cfg = load_providers_config(None, {}, local)
    assert all(cfg.role(r).per_minute == NO_RATE_LIMIT for r in ("lmm", "llm", "t2i"))
    assert cfg.t2i.max_in_flight == 4  # in-flight limits stay
    given = load_providers_config(None, {}, {**local, "t2i": {**local["t2i"], "per_minute": "20"}})
    assert given.t2i.per_minute == 20
    priced = load_providers_config(None, {}, {**local, "t2i": {**local["t2i"], "billing": "priced"}})
    assert priced.t2i.per_minute == 5  # a loopback proxy to a paid API keeps the API's limits
    assert load_providers_config(None, {}, {}).t2i.per_minute == 5  # the OpenAI API itself
