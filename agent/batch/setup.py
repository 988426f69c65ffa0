"""Batch mode for a run: its flags, and the transports the run driver plugs in for the batched roles.

Contract:

- A role is batched when its ``batch`` setting is true (``--t2i-batch``, ``LTGC_T2I_BATCH=1``, TOML
  ``[t2i] batch = true``). :func:`add_batch_arguments` adds the run-wide knobs (``--batch-max-requests``,
  ``--batch-window-s``, ``--batch-poll-s``, ``--batch-poll-max-s``, ``--batch-fallback none|sync``), which
  are :class:`agent.lifecycle.settings.RunSettings` fields (saved in ``config.json``, so ``--resume`` keeps them).
- ``await open_batch(providers_config, settings, env=...)`` returns ``None`` when no role is batched, else a
  :class:`BatchRun`: the ledger ``<out>/batches.sqlite`` and one :class:`agent.batch.transport.BatchTransport` per
  batched role (its own SDK client; for ``--batch-fallback sync`` an :class:`HttpTransport` with its own
  limiter). Hand ``run.transports`` to ``Providers.open(transports=...)``, which closes them; close the
  ``BatchRun`` (the ledger) after the providers.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.lifecycle.folder import RunFolder
from agent.lifecycle.settings import default_text
from agent.providers.config import ROLES, ProvidersConfig, RoleConfig
from agent.providers.endpoints import resolve_api_key

if TYPE_CHECKING:  # the transport's modules load with the run, not with `agent.run --help`
    from agent.batch.transport import BatchSettings, BatchTransport, Notify
    from agent.providers.transport import Transport
    from store.batches import BatchLedger

__all__ = ["BATCH_FLAGS", "BatchRun", "add_batch_arguments", "batch_settings", "batched_roles", "open_batch"]

BATCH_FLAGS = frozenset({"batch_max_requests", "batch_window_s", "batch_poll_s", "batch_poll_max_s",
                         "batch_fallback"})


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "OpenAI Batch API (for roles run with --lmm-batch / --llm-batch / --t2i-batch: half price, hours of latency)")
    group.add_argument("--batch-max-requests", help="close a batch at this many requests (default and API limit "
                       f"{default_text('batch_max_requests')})")
    group.add_argument("--batch-window-s", help="close a batch this long after its first request "
                       f"(default {default_text('batch_window_s')})")
    group.add_argument("--batch-poll-s", help="first wait between status checks of a batch "
                       f"(default {default_text('batch_poll_s')}; grows 1.5x)")
    group.add_argument("--batch-poll-max-s", help="longest wait between status checks "
                       f"(default {default_text('batch_poll_max_s')})")
    group.add_argument("--batch-fallback", choices=("none", "sync"),
                       help="requests a batch did not answer: into the next batch (none, default) or sent "
                            "synchronously at the normal price (sync)")


def batched_roles(config: ProvidersConfig) -> list[str]:
    return [role for role in ROLES if config.role(role).batch]


def batch_settings(settings: Any) -> BatchSettings:
    """The :class:`BatchSettings` of resolved run settings (``RunSettings``)."""
    from agent.batch.transport import BatchSettings

    return BatchSettings(max_requests=settings.batch_max_requests, window_s=settings.batch_window_s,
                         poll_s=settings.batch_poll_s, poll_max_s=settings.batch_poll_max_s,
                         fallback=settings.batch_fallback)


@dataclass
class BatchRun:
    """The run's ledger and its batch transports (one per batched role)."""

    ledger: BatchLedger
    transports: dict[str, BatchTransport] = field(default_factory=dict)

    def plugged(self) -> dict[str, Transport]:
        return dict(self.transports)

    def set_notify(self, notify: Notify | None) -> None:
        for transport in self.transports.values():
            transport.notify = notify

    async def close(self) -> None:
        await self.ledger.close()


async def open_batch(config: ProvidersConfig, settings: Any, *, env: Mapping[str, str] = os.environ) -> BatchRun | None:
    """The batch transports of a run (``settings``: ``RunSettings``), or None when no role is batched."""
    roles = batched_roles(config)
    if not roles:
        return None
    from agent.batch.client import BatchClient
    from agent.batch.transport import BatchTransport
    from agent.lifecycle.shutdown import stop_requested
    from agent.providers.limiter import RoleLimiter
    from agent.providers.transport import HttpTransport
    from store.batches import BatchLedger

    folder = RunFolder(settings.out)
    ledger = await BatchLedger.open(folder.batch_ledger)
    run = BatchRun(ledger)
    knobs = batch_settings(settings)
    for role in roles:
        cfg = config.role(role)
        server = BatchClient(_client(role, cfg, env), cfg, role=role, run_id=settings.run_id)
        fallback = None
        if knobs.fallback == "sync":
            fallback = HttpTransport(role, _client(role, cfg, env), RoleLimiter(cfg.max_in_flight, cfg.per_minute),
                                     stop_requested)
        run.transports[role] = BatchTransport(role, server, ledger, knobs, results_dir=folder.batch_results,
                                              stop_requested=stop_requested, fallback=fallback)
    return run


def _client(role: str, cfg: RoleConfig, env: Mapping[str, str]) -> Any:
    import openai

    # The same client settings as the providers' (agent/providers/client.py): our retries only, an explicit timeout.
    return openai.AsyncOpenAI(api_key=resolve_api_key(role, cfg, env), base_url=cfg.base_url, timeout=cfg.timeout_s,
                              max_retries=0)
