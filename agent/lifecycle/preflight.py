"""Checks before a run spends anything: API keys present, base URLs reachable. Fail fast, one line each.

Contract:

- ``check_keys(config, env)`` resolves every role's API key exactly as the providers will
  (``agent.providers.config.resolve_api_key``) and throws the value away: a missing key for a non-loopback URL is
  a ``ConfigError`` before torch, open_clip or the scorer are loaded.
- ``check_reachable(config, attempts=3, timeout_s=3.0)`` opens (and closes) a TCP connection to the host
  and port of every distinct base URL, retrying a refused or timed-out connection ``attempts`` times with
  a short back-off. No HTTP request is sent, so no request is counted or billed and no key leaves the
  process. An address that never answers is a ``ConfigError`` naming the URL (credentials removed) and
  the roles using it, after at most ``attempts * timeout_s`` plus the back-off.
- A role with several replicas (``base_url`` a list) needs one of them to answer: the others are skipped
  and probed again during the run (agent/providers/replicas.py).
- A local role (``t2i`` with ``provider = "diffusers"``) has no key and no URL: ``check_keys`` checks its
  optional packages and model instead (one line each), ``check_reachable`` skips it.
  Why a separate check: the providers retry a connection error per item with back-off up to a minute, and
  a run has hundreds of items, so an unreachable server would otherwise take many minutes to report.
- A base URL reached through a proxy (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` apply and
  ``NO_PROXY`` does not exempt it) is not checked: only the proxy knows the way.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from agent.providers.config import ROLES, ConfigError, ProvidersConfig, is_local_role
from agent.providers.endpoints import redact_url, resolve_api_key

__all__ = ["check_keys", "check_reachable", "host_port"]


def check_keys(config: ProvidersConfig, env: Mapping[str, str] = os.environ) -> None:
    """Raise ``ConfigError`` when a role that needs an API key has none (see the module docstring); a local
    role needs no key, but its packages and model (agent/providers/local_t2i.py: ``check_local_role``)."""
    for role in ROLES:
        cfg = config.role(role)
        if is_local_role(cfg):
            from agent.providers.local_t2i import check_local_role  # imports no torch / diffusers

            check_local_role(role, cfg)
            continue
        resolve_api_key(role, cfg, env)  # the value is discarded here on purpose


def host_port(url: str) -> tuple[str, int]:
    """``host_port("https://api.openai.com/v1") -> ("api.openai.com", 443)``"""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def check_reachable(
    config: ProvidersConfig,
    *,
    attempts: int = 3,
    timeout_s: float = 3.0,
    backoff_s: float = 0.25,
    connect: Callable[[tuple[str, int], float], socket.socket] = socket.create_connection,
) -> None:
    """Raise ``ConfigError`` for the first base URL no TCP connection reaches (see the module docstring)."""
    by_url: dict[str, list[str]] = {}
    for role in ROLES:
        if not is_local_role(config.role(role)):  # a local pipeline has no server to reach
            by_url.setdefault(config.role(role).base_url, []).append(role)
    for url, roles in by_url.items():
        error: str | None = None
        for replica in url.split(","):  # one reachable replica is enough to start
            if _proxied(replica):
                error = None
                break
            error = _try_connect(host_port(replica), attempts, timeout_s, backoff_s, connect)
            if error is None:
                break
        if error is not None:
            flags = " / ".join(f"--{r}-base-url" for r in roles)
            raise ConfigError(
                f"{redact_url(url)} ({', '.join(roles)}): cannot connect ({error}) after {attempts} "
                f"attempt(s); start the server or fix {flags}"
            )


def _try_connect(
    address: tuple[str, int], attempts: int, timeout_s: float, backoff_s: float,
    connect: Callable[[tuple[str, int], float], socket.socket],
) -> str | None:
    """None once a connection opens; else the last error, after ``attempts`` tries."""
    last = "no attempt"
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            connect(address, timeout_s).close()
            return None
        except socket.gaierror as exc:  # an unknown host name will not appear by waiting
            return f"host not found: {exc.strerror or exc}"
        except OSError as exc:
            last = exc.strerror or type(exc).__name__
    return last


def _proxied(url: str) -> bool:
    proxies = urllib.request.getproxies()
    scheme = urlsplit(url).scheme
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(urlsplit(url).hostname or "")
