"""Replicas of one role: several base URLs (a fleet of vLLM / Ollama / image servers) behind one role.

Contract:

- A role's ``base_url`` may name several servers: ``--t2i-base-url URL1,URL2`` or a TOML list
  (``base_url = ["http://a:8000/v1", "http://b:8000/v1"]``); :func:`split_urls` reads either spelling. They
  serve the same model: which replica answered never enters the cache key (role, model, body, sample
  index, namespace), so a run on one server and a run on a fleet share their cache.
- :class:`ReplicaSet` holds one :class:`Replica` per URL (its own SDK client and in-flight count; at most
  ``max_in_flight`` requests on each: the role's ``max_in_flight`` is per replica, its ``per_minute`` is the
  whole fleet's). ``async with replicas.acquire(abort) as replica`` takes a slot on the **least-loaded**
  live replica (fewest in flight; ties: fewest sent, then list order), waiting while none has a free slot.
- A replica whose attempt could not connect (refused, connect timeout, a connection dropped) is marked down
  and skipped for a back-off (``PROBE_INITIAL_S``, doubling to ``PROBE_MAX_S``); then one request goes to it
  as a probe: an answer brings it back, another failure doubles the back-off. The failed attempt itself is
  retried by the role's retry policy (agent/providers/retry.py) and so goes to another replica. When every
  replica is down, the first whose back-off ends is probed then (the retry policy bounds the attempts).
- :meth:`Replica.label` (the URL without credentials) is what a trace row records in ``meta["replica"]``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import openai

from agent.providers.endpoints import redact_url
from agent.providers.limiter import ABORT_POLL_S, LimiterAborted
from agent.providers.retry import never_sent

__all__ = ["PROBE_INITIAL_S", "PROBE_MAX_S", "Replica", "ReplicaSet", "lost_connection", "split_urls"]

PROBE_INITIAL_S = 1.0  # a replica that refused a connection is skipped this long, then probed
PROBE_MAX_S = 30.0  # the back-off doubles per failed probe up to this


def split_urls(value: str | Sequence[str]) -> list[str]:
    """The replica URLs of a ``base_url`` setting (a comma-separated string or a list).

    >>> split_urls("http://a/v1, http://b/v1")
    ['http://a/v1', 'http://b/v1']
    >>> split_urls(["http://a/v1"])
    ['http://a/v1']
    """
    parts = value.split(",") if isinstance(value, str) else list(value)
    return [str(part).strip() for part in parts if str(part).strip()]


def lost_connection(exc: BaseException) -> bool:
    """The attempt failed because the server could not be reached or dropped the connection (not a slow
    answer, not an HTTP error): the replica is marked down."""
    if never_sent(exc):
        return True
    return isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError)


@dataclass
class Replica:
    """One server of a role (see the module docstring)."""

    url: str
    client: Any  # openai.AsyncOpenAI (typed loosely: tests pass fakes)
    in_flight: int = 0
    sent: int = 0
    failures: int = 0  # connection failures in a row
    down_until: float | None = None  # monotonic time its back-off ends; None = up
    probing: bool = False  # a probe request is out: nothing else goes to it until that answers
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = redact_url(self.url)

    def available(self, now: float, limit: int | None) -> bool:
        """Free slot and up (or its back-off is over and no probe is out)."""
        if limit is not None and self.in_flight >= limit:
            return False
        return self.down_until is None or (now >= self.down_until and not self.probing)


class ReplicaSet:
    """The replicas of one role and the dispatch between them (see the module docstring)."""

    def __init__(self, replicas: Sequence[Replica], *, max_in_flight: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not replicas:
            raise ValueError("a ReplicaSet needs at least one replica")
        self.replicas = list(replicas)
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._changed: asyncio.Condition | None = None  # built in the running loop, on first use

    @classmethod
    def single(cls, client: Any, url: str | None = None) -> ReplicaSet:
        """One client, no per-replica limit (the role's limiter is the only bound)."""
        return cls([Replica(url or str(getattr(client, "base_url", "")), client)])

    def __len__(self) -> int:
        return len(self.replicas)

    def pick(self, now: float) -> Replica | None:
        """The least-loaded available replica, or None (pure: marks nothing).

        >>> a, b = Replica("http://a/v1", None, in_flight=2), Replica("http://b/v1", None, in_flight=1)
        >>> ReplicaSet([a, b], max_in_flight=4).pick(0.0).url
        'http://b/v1'
        >>> b.down_until = 5.0
        >>> ReplicaSet([a, b], max_in_flight=4).pick(0.0).url
        'http://a/v1'
        """
        ready = [r for r in self.replicas if r.available(now, self.max_in_flight)]
        if not ready:
            return None
        return min(ready, key=lambda r: (r.in_flight, r.sent, self.replicas.index(r)))

    @asynccontextmanager
    async def acquire(self, abort: Callable[[], bool] | None = None) -> AsyncIterator[Replica]:
        """A slot on the least-loaded live replica for one attempt; records how the attempt went."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while (replica := self.pick(self._clock())) is None:
                if abort is not None and abort():
                    raise LimiterAborted("aborted while waiting for a replica")
                # Woken by a released slot, or polled: a back-off ending wakes no one.
                try:
                    await asyncio.wait_for(self._changed.wait(), self._poll_s())
                except TimeoutError:
                    pass
            replica.in_flight += 1
            replica.sent += 1
            if replica.down_until is not None:
                replica.probing = True
        try:
            yield replica
        except Exception as exc:  # a cancellation says nothing about the replica: not caught
            if lost_connection(exc):
                self._mark_down(replica)
            elif isinstance(exc, openai.APIStatusError):
                self._mark_up(replica)  # the server answered (an HTTP error is still an answer)
            raise  # anything else (a refusal before sending, a slow answer): the replica's state stays
        else:
            self._mark_up(replica)
        finally:
            replica.in_flight -= 1
            replica.probing = False
            async with self._changed:
                self._changed.notify_all()

    def _poll_s(self) -> float:
        now = self._clock()
        ends = [r.down_until - now for r in self.replicas if r.down_until is not None and r.down_until > now]
        return max(0.01, min([ABORT_POLL_S, *ends]))

    def _mark_down(self, replica: Replica) -> None:
        replica.failures += 1
        wait = min(PROBE_MAX_S, PROBE_INITIAL_S * 2 ** (replica.failures - 1))
        replica.down_until = self._clock() + wait

    @staticmethod
    def _mark_up(replica: Replica) -> None:
        replica.failures, replica.down_until = 0, None

    async def close(self) -> None:
        for replica in self.replicas:
            close = getattr(replica.client, "close", None)
            if close is not None:
                await close()
