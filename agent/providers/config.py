"""Typed settings for the three model roles, resolved from CLI > env > TOML > defaults.

Contract (docs/INTERFACES.md § agent/config):

- :class:`RoleConfig` — one model endpoint: ``base_url``, ``model``, ``api_key_env`` (the *name* of the
  environment variable holding the key — never the key), ``timeout_s``, ``max_in_flight``, ``per_minute``
  (requests/min for chat roles, images/min for ``t2i``), ``max_attempts``, back-off bounds and role extras.
- :class:`ProvidersConfig` — ``lmm`` (vision chat), ``llm`` (text chat), ``t2i`` (images), ``cache_namespace``.
- ``t2i`` has a ``provider``: ``"openai"`` (any OpenAI-compatible server, the default) or ``"diffusers"`` (a
  local pipeline, agent/providers/local_t2i.py) with its own settings ``steps``, ``guidance``, ``batch_size``,
  ``devices``, ``seed`` (and ``image_size`` as ``WxH``). A setting of the other provider is a
  :class:`ConfigError`, never silently ignored; ``--t2i-size`` is an alias of ``--t2i-image-size``.
- :func:`load_providers_config` — precedence CLI overrides > ``LTGC_<ROLE>_<FIELD>`` env vars > TOML
  ``[lmm]`` / ``[llm]`` / ``[t2i]`` tables (and a top-level ``cache_namespace``) > defaults. Every other
  top-level key of the TOML file (e.g. a ``[run]`` table) is left for the caller: see
  :func:`read_toml` and :func:`passthrough_sections`.
- Any invalid value raises :class:`ConfigError` with one line naming the setting *and where it came from*::

      LTGC_LLM_TIMEOUT_S: must be a number > 0, got 'abc'

- API keys are read from the environment only when a client is built (``agent.providers.endpoints.resolve_api_key``);
  they are never stored on a config object, so ``agent.providers.endpoints.redacted_dump`` (which also strips
  credentials embedded in a base URL) is safe to write to disk.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from store.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

ROLES = ("lmm", "llm", "t2i")
Role = Literal["lmm", "llm", "t2i"]
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# Sent to loopback servers that need no key: the SDK refuses to build a client without one.
LOCAL_PLACEHOLDER_KEY = "sk-local-no-key-needed"
PROVIDER_TOP_KEYS = frozenset({*ROLES, "cache_namespace"})
_NONE_WORDS = frozenset({"", "none", "null"})


class ConfigError(UsageError):
    """A setting that cannot be used; the message is one line: where, what, how to fix."""


class RoleConfig(BaseModel):
    """One model endpoint (OpenAI-compatible). Field descriptions double as error-message wording."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Several URLs (comma-separated, or a TOML list) are replicas of one model (agent/providers/replicas.py);
    # kept as one comma-joined string, so every reader of one URL sees the first server's scheme and host.
    base_url: str = Field(DEFAULT_BASE_URL, description="an http(s):// URL, or several (comma-separated, or a TOML "
                                                        "list: replicas of one model)")
    model: str = Field(..., min_length=1, description="a non-empty model name")
    api_key_env: str = Field(
        DEFAULT_KEY_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="an environment variable NAME"
    )
    timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False, description="a number > 0")
    max_in_flight: int = Field(8, ge=1, description="an integer >= 1")
    per_minute: float = Field(60.0, gt=0, allow_inf_nan=False, description="a number > 0")
    max_attempts: int = Field(6, ge=1, le=50, description="an integer from 1 to 50")
    backoff_initial_s: float = Field(1.0, ge=0, description="a number >= 0")
    backoff_max_s: float = Field(60.0, ge=0, description="a number >= 0")
    billing: Literal["auto", "priced", "free"] = Field(
        "auto", description="'priced' (from the price table), 'free' (not billed), or 'auto' (free for a loopback "
                            "server, priced otherwise)")
    # Role extras; None = not sent, the server's default applies.
    max_image_side: int = Field(768, ge=16, description="an integer >= 16 (pixels)")
    temperature: float | None = Field(None, ge=0, le=2, description="a number from 0 to 2, or none")
    max_tokens: int | None = Field(None, ge=1, description="an integer >= 1, or none")
    image_size: str | None = Field(None, description="a size such as '1024x1024', or none")
    image_quality: str | None = Field(None, description="a quality word such as 'low', or none")
    response_format: Literal["b64_json", "url"] | None = Field(None, description="'b64_json', 'url' or none")
    # Where images come from: an OpenAI-compatible server, or a diffusers pipeline in this process
    # (agent/providers/local_t2i.py). The local settings below apply to "diffusers" only (see _check_provider).
    provider: Literal["openai", "diffusers"] = Field(
        "openai", description="'openai' (an OpenAI-compatible server) or 'diffusers' (a local pipeline)")
    steps: int | None = Field(None, ge=1, le=1000, description="an integer from 1 to 1000 (denoising steps), or none")
    guidance: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                   description="a number from 0 to 100 (guidance scale), or none")
    batch_size: int | None = Field(None, ge=1, le=1024,
                                   description="an integer from 1 to 1024 (prompts per forward pass), or none")
    devices: str | None = Field(None, description="devices such as 'cuda:0,cuda:1' or 'cpu', or none (auto)")
    seed: int | None = Field(None, ge=0, le=2**31 - 1,
                             description="an integer >= 0 mixed into every image's seed, or none (0)")
    # Chat roles: ask for JSON-schema structured outputs (agent/providers/structured.py); part of every request body,
    # so of every cache key. A server that answers 400 to them is remembered and read as text instead.
    structured: bool = Field(False, description="true or false (JSON-schema structured outputs)")
    # Send this role's calls through the OpenAI Batch API (agent/batch/transport.py): half price, hours of latency.
    batch: bool = Field(False, description="true or false (the OpenAI Batch API: half price, hours of latency)")

    @field_validator("base_url", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if not all(isinstance(item, str) for item in value):
                raise ValueError("not a list of URLs")
            value = ",".join(value)
        if not isinstance(value, str):
            return value  # pydantic's own str check words the error
        urls = [part.strip().rstrip("/") for part in value.split(",")]
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("not an http(s) URL")
        if len(set(urls)) != len(urls):
            raise ValueError("a replica URL is listed twice")
        return ",".join(urls)

    @property
    def base_urls(self) -> list[str]:
        """The replicas' URLs: ``RoleConfig(model="m", base_url="http://a/v1,http://b/v1").base_urls``
        -> ``['http://a/v1', 'http://b/v1']``."""
        return self.base_url.split(",")

    @field_validator("devices")
    @classmethod
    def _check_devices(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = [part.strip() for part in value.split(",")]
        if not all(_DEVICE_RE.match(name) for name in names) or len(set(names)) != len(names):
            raise ValueError("not a list of distinct devices")
        return ",".join(names)


# per_minute of an unbilled local endpoint left at its default: a token bucket this fast never waits.
NO_RATE_LIMIT = 1e9


def _unbilled_endpoint(values: Mapping[str, Any]) -> bool:
    """A role served on this machine and not billed: billing ``free``, or ``auto`` on a loopback base URL
    (agent/providers/endpoints.py ``unbilled_roles``; a local pipeline has no server limits either)."""
    from agent.providers.endpoints import is_local_url

    billing = values.get("billing", "auto")
    if values.get("provider") == "diffusers" or billing == "free":
        return True
    return billing == "auto" and isinstance(values.get("base_url"), str) and is_local_url(values["base_url"])


# cpu:N names one of several CPU actors on a Ray cluster (--ray; agent/providers/cluster.py), never a device here.
_DEVICE_RE = re.compile(r"^(cpu(:\d+)?|mps|cuda(:\d+)?|xpu(:\d+)?)$")
_ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    # Conservative starting points for a low-tier OpenAI account; raise them in the TOML file.
    "lmm": {"model": "gpt-4o", "max_in_flight": 8, "per_minute": 60, "timeout_s": 90.0},
    "llm": {"model": "gpt-4o-mini", "max_in_flight": 16, "per_minute": 300, "timeout_s": 60.0},
    # Size and quality are always sent, so the bill matches --dry-run and --max-cost (gpt-image-1's own default,
    # quality "auto", may pick "high" at ~4x the price). The trainer resizes every image to CLIP's 224 px, so
    # the smallest size and the cheapest quality are the sensible defaults (README: "Image size and quality").
    "t2i": {"model": "gpt-image-1", "max_in_flight": 4, "per_minute": 5, "timeout_s": 180.0,
            "image_size": "1024x1024", "image_quality": "low"},
}


class ProvidersConfig(BaseModel):
    """The three roles plus a cache namespace (part of every cache key: change it to force fresh calls)."""

    model_config = ConfigDict(extra="forbid")

    lmm: RoleConfig = Field(default_factory=lambda: RoleConfig(**_ROLE_DEFAULTS["lmm"]))
    llm: RoleConfig = Field(default_factory=lambda: RoleConfig(**_ROLE_DEFAULTS["llm"]))
    t2i: RoleConfig = Field(default_factory=lambda: RoleConfig(**_ROLE_DEFAULTS["t2i"]))
    cache_namespace: str = ""

    def role(self, name: str) -> RoleConfig:
        if name not in ROLES:
            raise ValueError(f"unknown role {name!r} (expected one of {', '.join(ROLES)})")
        cfg: RoleConfig = getattr(self, name)
        return cfg


ROLE_FIELDS: tuple[str, ...] = tuple(RoleConfig.model_fields)
# Which settings mean something for which role: the others are neither shown in --help nor accepted
# (an --lmm-image-size or a [t2i] temperature would be silently ignored otherwise).
_COMMON_FIELDS = ("base_url", "model", "api_key_env", "timeout_s", "max_in_flight", "per_minute", "max_attempts",
                  "backoff_initial_s", "backoff_max_s", "billing", "batch")
_CHAT_FIELDS = ("temperature", "max_tokens", "structured")
_IMAGE_FIELDS = ("image_size", "image_quality", "response_format")
# Settings of the local (diffusers) image provider; with provider "openai" each must stay unset.
LOCAL_FIELDS = ("steps", "guidance", "batch_size", "devices", "seed")
_SERVER_IMAGE_FIELDS = ("image_quality", "response_format")  # meaningless for a local pipeline
_SERVER_DEFAULTS = ("image_size", "image_quality")  # _ROLE_DEFAULTS["t2i"] values meant for a server's bill
FIELDS_BY_ROLE: dict[str, tuple[str, ...]] = {
    "lmm": (*_COMMON_FIELDS, *_CHAT_FIELDS, "max_image_side"),
    "llm": (*_COMMON_FIELDS, *_CHAT_FIELDS),
    "t2i": (*_COMMON_FIELDS, *_IMAGE_FIELDS, "provider", *LOCAL_FIELDS),
}
# Extra spellings of a flag: the issue's --t2i-size is the same setting as --t2i-image-size.
_FLAG_ALIASES: dict[tuple[str, str], tuple[str, ...]] = {("t2i", "image_size"): ("--t2i-size",)}
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


def is_local_role(cfg: RoleConfig) -> bool:
    """The role runs a model in this process (no server, no API key): ``provider = "diffusers"``."""
    return cfg.provider == "diffusers"


def role_fields(role: str) -> tuple[str, ...]:
    """The settings that apply to ``role``: ``"temperature" in role_fields("t2i") -> False``."""
    return FIELDS_BY_ROLE[role]


# --------------------------------------------------------------------------------------------- loading
def load_providers_config(
    toml_path: str | Path | None = None,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
    *,
    toml_doc: Mapping[str, Any] | None = None,
) -> ProvidersConfig:
    """Resolve the providers config; raise :class:`ConfigError` (one line) on any bad value.

    ``overrides`` has the shape ``{"llm": {"model": "x"}, "cache_namespace": "n"}`` (see
    :func:`role_overrides_from_args`). ``toml_doc`` is an already parsed file (from :func:`read_toml`), for
    callers that also read their own tables from it; it wins over ``toml_path``.
    """
    doc: Mapping[str, Any] = {}
    toml_label = "config.toml"
    if toml_doc is not None:
        doc = toml_doc
        toml_label = str(toml_path) if toml_path else toml_label
    elif toml_path is not None:
        doc, toml_label = read_toml(toml_path), str(toml_path)
    layers = [
        _toml_layer(doc, toml_label),
        _env_layer(env),
        _overrides_layer(overrides or {}),
    ]
    roles: dict[str, RoleConfig] = {}
    for role in ROLES:
        values: dict[str, Any] = dict(_ROLE_DEFAULTS[role])
        sources: dict[str, str] = {k: f"default {role}.{k}" for k in values}
        for layer in layers:
            for field, (value, source) in layer.get(role, {}).items():
                values[field], sources[field] = value, source
        if sources["per_minute"].startswith("default") and _unbilled_endpoint(values):
            # OpenAI's tier limits mean nothing to a model served on this machine: only in-flight limits hold.
            values["per_minute"] = NO_RATE_LIMIT
        roles[role] = _build_role(role, values, sources)
    namespace: str = ""
    for layer in layers:
        if "cache_namespace" in layer:
            namespace = str(layer["cache_namespace"][0])
    return ProvidersConfig(cache_namespace=namespace, **roles)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML settings file; a missing or malformed file is a one-line :class:`ConfigError`."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found; check the path given to --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc}); fix the file's syntax") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc.strerror})") from None


def passthrough_sections(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Everything in a parsed TOML file that is not a provider setting, untouched (e.g. ``{"run": {...}}``)."""
    return {k: v for k, v in doc.items() if k not in PROVIDER_TOP_KEYS}


# ------------------------------------------------------------------------------------------------- CLI
def add_role_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--<role>-<field>`` flags (e.g. ``--llm-model``, ``--t2i-max-in-flight``) and ``--cache-namespace``.

    Flags default to None (= not given) and are parsed as strings, so their values are validated once,
    by the same code as env and TOML values, with errors naming the flag.
    """
    group = parser.add_argument_group("model providers (CLI > LTGC_<ROLE>_<FIELD> env > TOML > defaults)")
    for role in ROLES:
        for field in role_fields(role):
            info = RoleConfig.model_fields[field]
            # A bare boolean flag means true (--llm-structured, --t2i-batch); "--llm-structured false" still parses.
            bare = {"nargs": "?", "const": "true"} if info.annotation is bool else {}
            group.add_argument(
                _flag(role, field), *_FLAG_ALIASES.get((role, field), ()), dest=_dest(role, field), default=None,
                metavar=field.upper(), help=f"{role} {field.replace('_', ' ')}: {info.description}",
                **bare,  # type: ignore[arg-type]
            )
    group.add_argument("--cache-namespace", dest="cache_namespace", default=None,
                       help="string mixed into every cache key; change it to force fresh calls")


def role_overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags actually given, as ``{"llm": {"model": ...}, "cache_namespace": ...}``."""
    out: dict[str, Any] = {}
    for role in ROLES:
        given = {f: getattr(args, _dest(role, f)) for f in role_fields(role)
                 if getattr(args, _dest(role, f), None) is not None}
        if given:
            out[role] = given
    if getattr(args, "cache_namespace", None) is not None:
        out["cache_namespace"] = args.cache_namespace
    return out


# ------------------------------------------------------------------------------------------------ helpers
Layer = dict[str, Any]  # {role: {field: (value, source)}, "cache_namespace": (value, source)}


def _flag(role: str, field: str) -> str:
    return f"--{role}-{field.replace('_', '-')}"


def _dest(role: str, field: str) -> str:
    return f"{role}_{field}"


def _toml_layer(doc: Mapping[str, Any], label: str) -> Layer:
    layer: Layer = {}
    for role in ROLES:
        table = doc.get(role)
        if table is None:
            continue
        if not isinstance(table, Mapping):
            raise ConfigError(f"{label}: '{role}' must be a table like [{role}], got {type(table).__name__}")
        layer[role] = {}
        for field, value in table.items():
            _check_field(role, field, f"{label} [{role}]")
            layer[role][field] = (value, f"{label} [{role}] {field}")
    if "cache_namespace" in doc:
        layer["cache_namespace"] = (doc["cache_namespace"], f"{label} cache_namespace")
    return layer


def _env_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for name, value in env.items():
        if name == "LTGC_CACHE_NAMESPACE":
            layer["cache_namespace"] = (value, name)
            continue
        for role in ROLES:
            prefix = f"LTGC_{role.upper()}_"
            if name.startswith(prefix):
                field = name[len(prefix):].lower()
                _check_field(role, field, name, upper=True)
                layer.setdefault(role, {})[field] = (value, name)
    return layer


def _overrides_layer(overrides: Mapping[str, Any]) -> Layer:
    layer: Layer = {}
    for key, value in overrides.items():
        if key == "cache_namespace":
            layer[key] = (value, "--cache-namespace")
        elif key in ROLES:
            layer[key] = {}
            for field, v in dict(value).items():
                _check_field(key, field, f"override {key}")
                layer[key][field] = (v, _flag(key, field))
        else:
            raise ConfigError(f"override {key!r}: unknown section (expected {', '.join(PROVIDER_TOP_KEYS)})")
    return layer


def _check_field(role: str, field: str, where: str, *, upper: bool = False) -> None:
    known = role_fields(role)
    if field in known:
        return
    names = ", ".join(f.upper() if upper else f for f in known)
    others = [r for r in ROLES if field in role_fields(r)]
    if others:
        raise ConfigError(f"{where}: {field!r} is not a setting of the {role} role (it applies to "
                          f"{' and '.join(others)}); remove it. Known for {role}: {names}")
    raise ConfigError(f"{where}: unknown setting {field!r} (known for {role}: {names})")


def _build_role(role: str, values: dict[str, Any], sources: dict[str, str]) -> RoleConfig:
    cleaned = {k: _none_word(k, v) for k, v in values.items()}
    if cleaned.get("provider") == "diffusers":  # the server defaults (size, quality for the bill) do not apply:
        for field in _SERVER_DEFAULTS:           # a local pipeline renders at its own size unless one is given
            if sources.get(field, "").startswith("default "):
                cleaned[field] = None
    try:
        cfg = RoleConfig(**cleaned)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        source = sources.get(field, f"{role}.{field}")
        info = RoleConfig.model_fields.get(field)
        expected = info.description if info is not None else err["msg"]
        if field == "api_key_env":
            # The value may be a pasted secret: never echo it.
            raise ConfigError(f"{source}: must be {expected} (like OPENAI_API_KEY), not the key itself") from None
        raise ConfigError(f"{source}: must be {expected}, got {values.get(field)!r}") from None
    _check_provider(role, cfg, sources)
    return cfg


def _check_provider(role: str, cfg: RoleConfig, sources: Mapping[str, str]) -> None:
    """Settings that only make sense with the other provider are errors, not silently ignored."""
    if cfg.batch and len(cfg.base_urls) > 1:
        raise ConfigError(f"{sources['batch']}: the Batch API goes to one server, and {role} names "
                          f"{len(cfg.base_urls)} replicas in {sources['base_url']}; give one base URL, or remove "
                          f"--{role}-batch")
    if cfg.provider == "openai":
        wrong = [f for f in LOCAL_FIELDS if getattr(cfg, f) is not None]
        if wrong:
            raise ConfigError(f"{sources[wrong[0]]}: applies to the diffusers provider only ({role} provider is "
                              f"'openai'); remove it, or set --{role}-provider diffusers")
        return
    if cfg.batch:
        raise ConfigError(f"{sources['batch']}: the Batch API is OpenAI's, and the diffusers provider renders in "
                          f"this process; remove --{role}-batch, or set --{role}-provider openai")
    if sources.get("model", "").startswith("default "):
        raise ConfigError(f"{sources['provider']}: the diffusers provider needs --{role}-model: a hub id such as "
                          "stabilityai/sdxl-turbo, or a local folder holding model_index.json")
    wrong = [f for f in _SERVER_IMAGE_FIELDS if getattr(cfg, f) is not None]
    if wrong:
        raise ConfigError(f"{sources[wrong[0]]}: applies to an OpenAI-compatible server only ({role} provider is "
                          "'diffusers'); remove it")
    if cfg.image_size is not None:
        match = _SIZE_RE.match(cfg.image_size)
        if match is None or any(int(side) < 8 or int(side) % 8 for side in match.groups()):
            raise ConfigError(f"{sources['image_size']}: must be WIDTHxHEIGHT in pixels, each a multiple of 8 "
                              f"(e.g. 512x512) for a diffusers pipeline, got {cfg.image_size!r}")


def _none_word(field: str, value: Any) -> Any:
    """Env and CLI values are strings: 'none' / '' mean None for optional fields (TOML has no null)."""
    optional = RoleConfig.model_fields[field].default is None
    if optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
        return None
    return value
