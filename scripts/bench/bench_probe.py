"""Helpers of scripts/bench/bench_agent.py: a simulator subprocess, a synthetic input set, and timing probes.

* :class:`SimProcess` runs ``python -m scripts.simulator`` in its own process, so its HTTP threads never
  compete with the agent for one GIL (a server in the agent's process would inflate the agent's cost).
* :func:`make_inputs` writes ``tail.txt`` + an ImageFolder tree of small distinct PNGs + a tiny CLIP config.
* :class:`Probe` wraps, for the duration of a ``with`` block, the few methods whose time we attribute:
  ``Providers.chat`` / ``Providers.generate_image`` (the whole call: cache, limiter, retry, trace), the
  openai SDK's ``create`` / ``generate`` (the request itself), ``RoleLimiter.acquire`` (time queued for a
  slot) and the checkpointer's ``aput`` / ``aput_writes``. Per call: overhead = provider wall - SDK wall -
  time queued at the limiter (queueing is waiting for other requests, not cost). Optionally the role limiters are
  replaced by ONE shared limiter of ``shared_cap`` slots, so "concurrency c" means exactly c requests in
  flight in total (the product's per-role caps would allow up to 3c).
Nothing here changes what the agent does; it only measures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


class SimProcess:
    """``with SimProcess(median_ms=...) as sim: sim.base_url, sim.stats()`` — a simulator subprocess."""

    def __init__(self, *, median_ms: float, sigma: float = 0.5, seed: int = 0) -> None:
        dist = ["--latency-dist", "lognormal", "--latency-sigma", str(sigma)] if median_ms > 0 else []
        self.cmd = [sys.executable, "-m", "scripts.simulator", "--port", "0", "--latency-ms", str(median_ms),
                    "--seed", str(seed), *dist]
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> SimProcess:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.base_url = line.removeprefix("listening on ")
        return self

    def stats(self) -> dict[str, Any]:
        root = self.base_url.removesuffix("/v1")
        with urllib.request.urlopen(f"{root}/sim/stats", timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass(frozen=True)
class Inputs:
    tail: Path
    images: Path
    clip_config: Path
    classes: int


def make_inputs(root: Path, classes: int, per_class: int) -> Inputs:
    """``classes`` tail classes with ``per_class`` real 32x32 PNGs each (all distinct, so the describe
    calls are distinct requests), a tail.txt and the tiny CLIP config."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    names = [f"bench class {i:03d}" for i in range(classes)]
    for c, name in enumerate(names):
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            colour = ((c * 53 + j * 17) % 256, (c * 29 + j * 101) % 256, (c * 7 + j * 211) % 256)
            Image.new("RGB", (32, 32), colour).save(folder / f"{j:02d}.png")
    tail = root / "tail.txt"
    tail.write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(names)), encoding="utf-8")
    clip = root / "tiny-clip.json"
    clip.write_text(json.dumps(TINY_CLIP), encoding="utf-8")
    return Inputs(tail, root / "images", clip, classes)


@dataclass
class CallTiming:
    kind: str  # chat | image
    wall_s: float  # the whole provider call
    sdk_s: float  # time inside the openai SDK call(s): request + response parsing
    queued_s: float  # time waiting for a limiter slot / tokens
    hit: bool

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.sdk_s - self.queued_s


@dataclass
class Probe:
    """Timing probes and (optionally) one shared limiter; use as a context manager around a run."""

    shared_cap: int | None = None
    calls: list[CallTiming] = field(default_factory=list)
    checkpoint_s: list[float] = field(default_factory=list)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def __enter__(self) -> Probe:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from openai.resources.chat.completions import AsyncCompletions
        from openai.resources.images import AsyncImages

        from agent.providers.client import Providers
        from agent.providers.limiter import RoleLimiter

        spans: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("spans", default=None)
        self._wrap(Providers, "chat", self._provider_wrapper("chat", spans))
        self._wrap(Providers, "generate_image", self._provider_wrapper("image", spans))
        self._wrap(AsyncCompletions, "create", _sdk_wrapper(spans))
        self._wrap(AsyncImages, "generate", _sdk_wrapper(spans))
        self._wrap(RoleLimiter, "acquire", _acquire_wrapper(spans))
        self._wrap(AsyncSqliteSaver, "aput", _timed_into(self.checkpoint_s))
        self._wrap(AsyncSqliteSaver, "aput_writes", _timed_into(self.checkpoint_s))
        if self.shared_cap is not None:
            self._share_limiter(Providers, self.shared_cap)
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _wrap(self, owner: type, name: str, make: Callable[[Any], Any]) -> None:
        original = owner.__dict__[name]
        setattr(owner, name, make(original))
        self._undo.append(lambda: setattr(owner, name, original))

    def _provider_wrapper(self, kind: str, spans: contextvars.ContextVar[dict[str, float] | None]
                          ) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            @functools.wraps(original)
            async def timed(*args: Any, **kwargs: Any) -> Any:
                spent = {"sdk": 0.0, "queued": 0.0}
                token = spans.set(spent)
                start = time.perf_counter()
                try:
                    result = await original(*args, **kwargs)
                finally:
                    spans.reset(token)
                self.calls.append(CallTiming(kind, time.perf_counter() - start, spent["sdk"], spent["queued"],
                                             bool(getattr(result, "cache_hit", False))))
                return result
            return timed
        return make

    def _share_limiter(self, providers_cls: type, cap: int) -> None:
        from agent.providers.limiter import RoleLimiter

        original = providers_cls.__dict__["open"]

        async def open_shared(cls: type, *args: Any, **kwargs: Any) -> Any:
            providers = await original.__func__(cls, *args, **kwargs)
            shared = RoleLimiter(cap, 1e9)  # per-minute effectively off: the bound is about latency
            providers.limiters = {role: shared for role in providers.limiters}
            for transport in providers.transports.values():  # the HTTP transports hold their role's limiter
                if hasattr(transport, "limiter"):
                    transport.limiter = shared
            return providers

        providers_cls.open = classmethod(open_shared)  # type: ignore[attr-defined]
        self._undo.append(lambda: setattr(providers_cls, "open", original))


def _sdk_wrapper(spans: contextvars.ContextVar[dict[str, float] | None]) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                spent = spans.get()
                if spent is not None:
                    spent["sdk"] += time.perf_counter() - start
        return timed
    return make


def _acquire_wrapper(spans: contextvars.ContextVar[dict[str, float] | None]) -> Callable[[Any], Any]:
    """``RoleLimiter.acquire`` is an async context manager: time only the wait to enter it."""
    def make(original: Any) -> Any:
        def acquire(limiter: Any, cost: int = 1, **kwargs: Any) -> Any:
            @contextlib.asynccontextmanager
            async def timed() -> AsyncIterator[None]:
                start = time.perf_counter()
                async with original(limiter, cost, **kwargs):
                    spent = spans.get()
                    if spent is not None:
                        spent["queued"] += time.perf_counter() - start
                    yield
            return timed()
        return acquire
    return make


def _timed_into(sink: list[float]) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                sink.append(time.perf_counter() - start)
        return timed
    return make


async def sdk_floor(base_url: str, *, chats: int, images: int, concurrency: int,
                    client: str = "sdk") -> tuple[float, float]:
    """``(wall s, CPU s of this process)`` of ``chats`` + ``images`` requests sent straight through the openai
    SDK (``client="sdk"``) or a plain ``httpx.AsyncClient`` posting the same JSON (``client="httpx"``) at
    ``concurrency`` (no agent): what this machine, client library and simulator allow, the agent's floor."""
    slots = asyncio.Semaphore(concurrency)
    chat_body = {"model": "sim-llm", "messages": [{"role": "user", "content": ""}]}
    if client == "sdk":
        import openai

        sdk = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=60,
                                 http_client=openai.DefaultAsyncHttpxClient(limits=_pool_limits(concurrency)))

        async def send(i: int, image: bool) -> None:
            if image:
                await sdk.images.generate(model="sim-t2i", prompt=f"A photo of the class floor {i}.")
            else:
                await sdk.chat.completions.create(**{**chat_body, "messages": [{"role": "user", "content": (
                    f"Please summarize the most distinctive features of class [floor {i}]")}]})
        close = sdk.close
    else:
        import httpx

        plain = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", timeout=60,
                                  headers={"Authorization": "Bearer sk-bench"},
                                  limits=httpx.Limits(max_connections=max(100, 2 * concurrency),
                                                      max_keepalive_connections=max(20, concurrency)))

        async def send(i: int, image: bool) -> None:
            if image:
                resp = await plain.post("images/generations", json={
                    "model": "sim-t2i", "prompt": f"A photo of the class floor {i}.", "response_format": "b64_json"})
            else:
                resp = await plain.post("chat/completions", json={**chat_body, "messages": [{"role": "user", "content": (
                    f"Please summarize the most distinctive features of class [floor {i}]")}]})
            resp.raise_for_status()
            resp.json()
        close = plain.aclose

    async def one(i: int) -> None:
        async with slots:
            await send(i, i < images)

    start, cpu0 = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(one(i) for i in range(chats + images)))
    finally:
        await close()
    return time.perf_counter() - start, time.process_time() - cpu0


def _pool_limits(concurrency: int) -> Any:
    import httpx2

    # The same pool sizing as agent/providers/client.py, so the floor pays the same connection-pool costs.
    return httpx2.Limits(max_connections=max(100, 2 * concurrency), max_keepalive_connections=max(20, concurrency))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: ``percentile([1, 2, 3, 4], 50) -> 2``; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least the first
    return float(ordered[int(rank) - 1])


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
