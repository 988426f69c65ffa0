"""Per-role request limiter: at most ``max_in_flight`` concurrent requests and a per-minute token bucket.

Contract (docs/INTERFACES.md § agent/limiter): ``RoleLimiter(max_in_flight, per_minute)``;
``async with limiter.acquire(cost=1): <send one request>``; one limiter per role, shared by every class of
a run; ``in_flight`` and ``peak_in_flight`` report concurrency. ``cost`` is 1 for a chat request and the
number of images asked for on the ``t2i`` role, whose limit counts images per minute.

Rate bound (the invariant the tests check): the bucket holds at most ``capacity`` tokens and refills at
``per_minute / 60`` tokens per second, so over ANY window of length T the cost granted is at most
``capacity + per_minute * T / 60`` — for a sliding 60 s window, ``per_minute + capacity``. ``capacity``
defaults to one second's worth of tokens (at least 1), which keeps bursts small. A single request costing
more than ``capacity`` waits for a full bucket and then overdraws it (the bucket goes negative), so it is
never starved; the bound then grows by that request's excess cost.

Order inside ``acquire``: the in-flight slot is taken first, then the tokens. Taking tokens first would let
tokens be spent long before the request is sent (while queued for a slot) and the sends would then burst.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

_EPS = 1e-9
ABORT_POLL_S = 0.25  # how often a waiter with an ``abort`` check looks at it


class LimiterAborted(Exception):
    """``acquire(abort=...)`` gave up because ``abort()`` said so; nothing was sent."""


class TokenBucket:
    """Pure token bucket with an explicit clock: the caller passes ``now`` (seconds, monotonic).

    >>> b = TokenBucket(per_minute=60, capacity=2, now=0.0)   # 1 token/s, starts full
    >>> b.reserve(1, now=0.0), b.reserve(1, now=0.0), b.reserve(1, now=0.0)
    (0.0, 0.0, 1.0)
    >>> b.reserve(1, now=1.0)
    0.0
    """

    def __init__(self, per_minute: float, capacity: float | None = None, *, now: float = 0.0) -> None:
        if per_minute <= 0:
            raise ValueError(f"per_minute must be > 0, got {per_minute}")
        self.rate = per_minute / 60.0  # tokens per second
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate)
        if self.capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.tokens = self.capacity
        self._last = now

    def reserve(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens if available and return 0.0; otherwise take nothing and return the
        seconds to wait before asking again."""
        if cost <= 0:
            return 0.0
        self._refill(now)
        need = min(cost, self.capacity)  # see module docstring: big requests overdraw a full bucket
        # The epsilon absorbs float rounding: waiting exactly the returned time must always succeed.
        if self.tokens >= need - _EPS:
            self.tokens -= cost
            return 0.0
        return (need - self.tokens) / self.rate

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)  # a clock that steps back must not mint tokens
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self._last = max(self._last, now)


class RoleLimiter:
    """Max in-flight (asyncio semaphore) plus a per-minute :class:`TokenBucket`, for one role.

    ``clock`` and ``sleep`` are injectable so tests can drive time by hand.
    """

    def __init__(
        self,
        max_in_flight: int,
        per_minute: float,
        *,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._bucket = TokenBucket(per_minute, capacity, now=clock())
        self._slots = asyncio.Semaphore(max_in_flight)
        self._bucket_lock = asyncio.Lock()  # one waiter at a time on the bucket: FIFO, no thundering herd
        self.in_flight = 0
        self.peak_in_flight = 0
        self.granted = 0  # total cost granted
        self.waited_s = 0.0  # total time spent waiting for tokens

    @property
    def capacity(self) -> float:
        return self._bucket.capacity

    @asynccontextmanager
    async def acquire(self, cost: int = 1, *, abort: Callable[[], bool] | None = None) -> AsyncIterator[None]:
        """Hold one in-flight slot and ``cost`` tokens for the body of the ``async with``.

        ``abort`` (e.g. "a stop was requested") is checked while waiting for tokens, at least every
        ``ABORT_POLL_S``, and once more when slot and tokens are held: when it says so, :class:`LimiterAborted`
        is raised and the body never runs (a queue behind a low per-minute limit drains at once, not at the
        token rate).
        """
        async with self._slots:
            await self._take(cost, abort)
            if abort is not None and abort():
                raise LimiterAborted("aborted before sending")
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1

    async def _take(self, cost: int, abort: Callable[[], bool] | None = None) -> None:
        async with self._bucket_lock:
            while True:
                if abort is not None and abort():
                    raise LimiterAborted("aborted while waiting for tokens")
                wait = self._bucket.reserve(cost, self._clock())
                if wait <= 0:
                    self.granted += cost
                    return
                if abort is not None:
                    wait = min(wait, ABORT_POLL_S)
                self.waited_s += wait
                await self._sleep(wait)
