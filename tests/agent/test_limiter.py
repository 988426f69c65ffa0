"""agent/providers/limiter.py: the token-bucket window bound (pure, injected clock) and the in-flight cap."""

from __future__ import annotations

import asyncio
import random

import pytest

from agent.providers.limiter import ABORT_POLL_S, LimiterAborted, RoleLimiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, dt: float) -> None:
        self.t += dt
        await asyncio.sleep(0)


def _max_in_window(times: list[float], costs: list[float], window: float) -> float:
    """The largest total cost granted inside any half-open window [t, t + window)."""
    best, j, running = 0.0, 0, 0.0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + window - 1e-9:
            running += costs[j]
            j += 1
        best = max(best, running)
        running -= costs[i]
    return best


def _greedy(bucket: TokenBucket, costs: list[float], start: float, gaps: list[float]) -> list[float]:
    """Grant times when each request arrives after its gap and waits exactly as long as told."""
    now, times = start, []
    for cost, gap in zip(costs, gaps, strict=True):
        now += gap
        while (wait := bucket.reserve(cost, now)) > 0:
            now += wait
        times.append(now)
    return times


def test_bucket_starts_full_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(per_minute=120, capacity=3, now=0.0)  # 2 tokens/s
    assert [bucket.reserve(1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(1, 0.0) == pytest.approx(0.5)
    assert bucket.reserve(1, 0.25) == pytest.approx(0.25)  # nothing taken by a refused reserve
    assert bucket.reserve(1, 0.5) == 0.0


def test_default_capacity_is_one_second_of_tokens_but_at_least_one() -> None:
    assert TokenBucket(per_minute=600).capacity == 10
    assert TokenBucket(per_minute=5).capacity == 1


@pytest.mark.parametrize(("per_minute", "seed"), [(60, 0), (300, 1), (7, 2), (1000, 3)])
def test_no_sliding_minute_exceeds_per_minute_plus_capacity(per_minute: float, seed: int) -> None:
    rng = random.Random(seed)
    bucket = TokenBucket(per_minute=per_minute, now=0.0)
    n = int(per_minute * 4)  # several minutes of saturated demand, with idle gaps that refill the bucket
    gaps = [rng.choice([0.0, 0.0, 0.0, rng.uniform(0, 20)]) for _ in range(n)]
    costs = [1.0] * n
    times = _greedy(bucket, costs, 0.0, gaps)
    worst = _max_in_window(times, costs, 60.0)
    assert worst <= per_minute + bucket.capacity + 1e-9
    # ...and the bound is nearly reached under saturation, so the bucket is not needlessly slow.
    saturated = _greedy(TokenBucket(per_minute=per_minute, now=0.0), costs, 0.0, [0.0] * n)
    assert _max_in_window(saturated, costs, 60.0) >= per_minute


def test_request_bigger_than_capacity_is_not_starved_and_overdraws() -> None:
    bucket = TokenBucket(per_minute=60, capacity=1, now=0.0)
    assert bucket.reserve(3, 0.0) == 0.0  # full bucket: granted, tokens go to -2
    assert bucket.reserve(1, 0.0) == pytest.approx(3.0)  # the debt is paid back at the rate


def test_clock_stepping_back_mints_no_tokens() -> None:
    bucket = TokenBucket(per_minute=60, capacity=1, now=100.0)
    assert bucket.reserve(1, 100.0) == 0.0
    assert bucket.reserve(1, 50.0) > 0  # earlier time: still empty
    assert bucket.reserve(1, 100.5) == pytest.approx(0.5)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="per_minute"):
        TokenBucket(per_minute=0)
    with pytest.raises(ValueError, match="max_in_flight"):
        RoleLimiter(0, 60)


async def test_role_limiter_caps_in_flight_and_rate_with_an_injected_clock() -> None:
    clock = FakeClock()
    limiter = RoleLimiter(max_in_flight=3, per_minute=600, clock=clock, sleep=clock.sleep)  # 10/s, cap 10
    seen: list[int] = []
    grants: list[float] = []

    async def one() -> None:
        async with limiter.acquire():
            grants.append(clock())
            seen.append(limiter.in_flight)
            await asyncio.sleep(0)  # let others try to get in while this one is "in flight"
            await asyncio.sleep(0)

    await asyncio.gather(*(one() for _ in range(40)))
    assert max(seen) <= 3 and limiter.peak_in_flight == 3
    assert limiter.in_flight == 0 and limiter.granted == 40
    span = grants[-1] - grants[0]
    assert span == pytest.approx((40 - 10) / 10, abs=1e-6)  # 10 from the full bucket, then 10 per second
    assert _max_in_window(sorted(grants), [1.0] * 40, 1.0) <= 10 + 10  # capacity + one second of rate


async def test_t2i_cost_counts_images() -> None:
    clock = FakeClock()
    limiter = RoleLimiter(max_in_flight=8, per_minute=60, capacity=4, clock=clock, sleep=clock.sleep)
    start = clock()
    for _ in range(3):
        async with limiter.acquire(cost=4):
            pass
    assert clock() - start == pytest.approx(8.0)  # 4 free, then 4 tokens per 4 s twice


async def test_slot_is_released_when_the_body_raises() -> None:
    limiter = RoleLimiter(max_in_flight=1, per_minute=6000)
    with pytest.raises(RuntimeError):
        async with limiter.acquire():
            raise RuntimeError("boom")
    assert limiter.in_flight == 0
    async with asyncio.timeout(1):
        async with limiter.acquire():
            assert limiter.in_flight == 1


async def test_a_waiter_gives_up_within_one_poll_once_abort_says_so() -> None:
    """1 token a minute: the second caller would wait 60 s; a stop 1 s in ends its wait at the next poll, and
    its body never runs. Without ``abort`` the same wait is one uninterrupted sleep (the rate bound holds)."""
    clock = FakeClock()
    limiter = RoleLimiter(max_in_flight=4, per_minute=1, capacity=1, clock=clock, sleep=clock.sleep)
    start = clock()
    stop = {"now": False}

    def abort() -> bool:
        stop["now"] = stop["now"] or clock() - start >= 1.0
        return stop["now"]

    async with limiter.acquire(abort=abort):  # the bucket's one token: no wait
        pass
    ran = []
    with pytest.raises(LimiterAborted):
        async with limiter.acquire(abort=abort):
            ran.append(1)
    assert ran == [] and limiter.in_flight == 0 and limiter.granted == 1
    assert clock() - start == pytest.approx(1.0, abs=ABORT_POLL_S + 1e-6)  # not the 60 s of a full token
    # Held slot and tokens, then told to stop: still not sent.
    answers = iter([False, True])  # no stop while taking tokens, a stop just before sending
    limiter2 = RoleLimiter(max_in_flight=1, per_minute=6000)
    with pytest.raises(LimiterAborted, match="before sending"):
        async with limiter2.acquire(abort=lambda: next(answers)):
            ran.append(2)
    assert ran == [] and limiter2.in_flight == 0 and limiter2.granted == 1
