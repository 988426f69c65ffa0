"""Shared by the simulator tests: an SDK client on the test's simulator (``sim`` fixture of each module)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from scripts.sim.server import Simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AsyncOpenAI]:
    c = AsyncOpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, timeout=10)
    yield c
    await c.close()
