"""Where a role's requests go, and what of that may be written down: API keys, loopback, billing, redaction.

- :func:`resolve_api_key` reads a role's key from the environment when a client is built (never stored).
- :func:`is_local_url` / :func:`unbilled_roles`: a model served on this machine is not billed.
- :func:`redact_url` / :func:`redacted_dump`: the resolved config without credentials, safe for config.json.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent.providers.config import (
    LOCAL_PLACEHOLDER_KEY,
    ROLES,
    ConfigError,
    ProvidersConfig,
    RoleConfig,
    is_local_role,
    role_fields,
)


def resolve_api_key(role: str, cfg: RoleConfig, env: Mapping[str, str] = os.environ) -> str:
    """The key for one role, read from ``env[cfg.api_key_env]`` at client build time.

    Loopback servers (127.0.0.1, localhost, ::1) get a placeholder when the variable is unset; anything
    else without a key is a :class:`ConfigError` naming the variable (never a value).
    """
    key = env.get(cfg.api_key_env, "").strip()
    if key:
        return key
    if all(is_local_url(url) for url in cfg.base_urls):
        return LOCAL_PLACEHOLDER_KEY
    raise ConfigError(
        f"{role}: environment variable {cfg.api_key_env} is not set (needed for {redact_url(cfg.base_urls[0])}); "
        f"export it, or set LTGC_{role.upper()}_API_KEY_ENV to the variable that holds the key"
    )


def is_local_url(url: str) -> bool:
    """True for loopback hosts: ``is_local_url("http://127.0.0.1:8000/v1") -> True``."""
    return is_loopback(urlsplit(url).hostname or "")


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1`` and ``localhost`` are loopback; anything else (``0.0.0.0`` too) is not.

    >>> [is_loopback(h) for h in ("127.0.0.1", "LocalHost", "::1", "0.0.0.0", "10.0.0.5")]
    [True, True, True, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unbilled_roles(config: ProvidersConfig) -> frozenset[str]:
    """Roles whose calls no one bills: ``billing = "free"``, or ``"auto"`` (the default) on a model served on
    this machine (a loopback base URL). Their calls cost $0 in every total, and displays say "local, not
    billed" instead of pricing them at a cloud model's rates (a local server often reuses OpenAI model
    names). A loopback proxy to a paid API (e.g. LiteLLM) sets ``billing = "priced"``. A pipeline run in this
    process (``provider = "diffusers"``) is never billed, whatever ``billing`` says."""
    def free(cfg: RoleConfig) -> bool:
        if is_local_role(cfg):
            return True
        return cfg.billing == "free" or (cfg.billing == "auto" and all(is_local_url(u) for u in cfg.base_urls))

    return frozenset(role for role in ROLES if free(config.role(role)))


def redact_url(url: str) -> str:
    """Drop user:password and the query string (some gateways take ``?api_key=``) from a URL (or from each
    of a comma-separated list of replicas).

    ``redact_url("https://u:p@h.io/v1?key=s") -> "https://h.io/v1"``
    """
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redacted_dump(config: ProvidersConfig) -> dict[str, Any]:
    """The resolved config as JSON-able data for disk: env var names only, URLs without credentials."""
    data = config.model_dump(mode="json")
    for role in ROLES:
        data[role] = {k: v for k, v in data[role].items() if k in role_fields(role)}
        data[role]["base_url"] = redact_url(data[role]["base_url"])
    return data
