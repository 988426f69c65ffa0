"""Knobs and shared mutable state of the OpenAI-compatible simulator (``scripts/sim/server.py``).

THIS IS A SIMULATOR: it serves synthetic content; see ``scripts/sim/content.py``.

- ``SimConfig`` — every knob (frozen dataclass; ``validate()`` raises ``ValueError`` with one clear line).
- ``SimState`` — what the request threads share, all behind one lock: the config, counters for
  ``GET /sim/stats``, the fault decision (rpm window → injected queue → seeded random draw), the latency
  draw, files served under ``/sim/files/``, the JSONL request log and a stop event that ends hangs early.

Fault kinds (``FAULT_KINDS``) and where they can happen: ``429``, ``500``, ``503``, ``hang``, ``reset``,
``malformed_json`` on chat and images (and on models when injected); ``nontemplate`` on chat only;
``bad_image`` and ``refusal`` on images only. The ``rpm_limit`` answer is counted as fault ``rpm_429``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

FAULT_KINDS = ("429", "500", "503", "hang", "reset", "malformed_json", "nontemplate", "bad_image", "refusal")
ENDPOINTS = ("chat", "images", "models")
_GENERIC = frozenset({"429", "500", "503", "hang", "reset", "malformed_json"})
FAULTS_FOR: dict[str, frozenset[str]] = {
    "chat": _GENERIC | {"nontemplate"},
    "images": _GENERIC | {"bad_image", "refusal"},
    "models": _GENERIC,
}
_MAX_FILES = 4096  # URL-served images kept in memory; the oldest go first
_RPM_WINDOW_S = 60.0


@dataclass(frozen=True)
class SimConfig:
    """Every simulator knob. Rates are per-request probabilities for chat and image requests.

    >>> SimConfig(rate_429=0.1, retry_after_s=0.2).rate_429
    0.1
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port
    latency_ms: float = 0.0  # fixed latency, or the median of the log-normal
    latency_dist: str = "fixed"  # fixed | lognormal
    latency_sigma: float = 0.5  # log-normal shape
    rate_429: float = 0.0
    retry_after_s: float = 1.0  # sent as Retry-After (seconds) and retry-after-ms
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_hang: float = 0.0
    hang_s: float = 30.0  # how long a hang lasts: set it longer than the client's timeout
    rate_reset: float = 0.0
    rate_malformed_json: float = 0.0
    rate_nontemplate: float = 0.0
    rate_bad_image: float = 0.0
    rate_refusal: float = 0.0
    rpm_limit: int = 0  # chat + image requests accepted per sliding 60 s; 0 = no limit
    dedupe_invent: bool = False  # the dedupe answer adds one invented item
    reply_style_share: float = 0.0  # seeded share of chat answers written like real chat models (sim_styles)
    reject_response_format: bool = False  # answer 400 to a chat request with a response_format
    seed: int = 0
    image_side: int = 32
    log_path: str | None = None  # JSONL request log
    require_key: bool = False  # 401 unless an Authorization: Bearer header is present
    models: tuple[str, ...] = field(default=("sim-chat", "sim-vision", "sim-image"))
    # Batch API (scripts/sim/batch.py): seconds in each status, and the share of lines answered with a 500.
    batch_validating_s: float = 0.05
    batch_in_progress_s: float = 0.2
    batch_finalizing_s: float = 0.05
    rate_batch_line_error: float = 0.0

    def rate(self, kind: str) -> float:
        return float(getattr(self, f"rate_{kind}"))

    def validate(self) -> None:
        """Raise ``ValueError`` (one line: what, which knob, how to fix) on any impossible setting."""
        for kind in FAULT_KINDS:
            if not 0.0 <= self.rate(kind) <= 1.0:
                raise ValueError(f"simulator knob rate_{kind}={self.rate(kind)} must be in [0, 1]")
        for endpoint in ("chat", "images"):
            total = sum(self.rate(k) for k in FAULTS_FOR[endpoint])
            if total > 1.0 + 1e-9:
                raise ValueError(f"simulator fault rates for {endpoint} sum to {total:.3f}; lower them to <= 1")
        if not 0.0 <= self.reply_style_share <= 1.0:
            raise ValueError(f"simulator knob reply_style_share={self.reply_style_share} must be in [0, 1]")
        if self.latency_dist not in ("fixed", "lognormal"):
            raise ValueError(f"simulator knob latency_dist={self.latency_dist!r}: use 'fixed' or 'lognormal'")
        checks = {
            "latency_ms": self.latency_ms >= 0, "latency_sigma": self.latency_sigma >= 0,
            "retry_after_s": self.retry_after_s >= 0, "hang_s": self.hang_s >= 0,
            "rpm_limit": self.rpm_limit >= 0, "image_side": 1 <= self.image_side <= 4096,
            "port": 0 <= self.port <= 65535,
            "batch_validating_s": self.batch_validating_s >= 0, "batch_in_progress_s": self.batch_in_progress_s >= 0,
            "batch_finalizing_s": self.batch_finalizing_s >= 0,
            "rate_batch_line_error": 0.0 <= self.rate_batch_line_error <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"simulator knob {name}={getattr(self, name)!r} is out of range")


@dataclass
class _Injected:
    kind: str
    count: int
    endpoint: str | None


class SimState:
    """Thread-safe shared state of one simulator instance (one lock; every method is short)."""

    def __init__(self, config: SimConfig) -> None:
        config.validate()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.config = config
        self._fault_rng = random.Random(config.seed)
        self._latency_rng = random.Random(config.seed + 1)
        self._injected: list[_Injected] = []
        self._accepted: collections.deque[float] = collections.deque()  # rpm window
        self._files: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._log: IO[str] | None = None
        self._open_log()
        self.reset_stats()

    # --- config, log ---------------------------------------------------------------------------------

    def set_config(self, **knobs: Any) -> SimConfig:
        known = {f.name for f in dataclasses.fields(SimConfig)}
        for name in knobs:
            if name not in known:
                raise ValueError(f"unknown simulator knob {name!r}; known: {', '.join(sorted(known))}")
            if name in ("host", "port"):
                raise ValueError(f"simulator knob {name} cannot change while serving; start a new simulator")
        new = dataclasses.replace(self.config, **knobs)
        new.validate()
        with self.lock:
            old, self.config = self.config, new
            if "seed" in knobs:
                self._fault_rng, self._latency_rng = random.Random(new.seed), random.Random(new.seed + 1)
            if new.log_path != old.log_path:
                self._close_log()
                self._open_log()
        return new

    def _open_log(self) -> None:
        if self.config.log_path:
            # Line-buffered append: each request's line is on disk when the response is sent.
            self._log = open(self.config.log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            self._close_log()

    def log(self, **entry: Any) -> None:
        """One JSONL line per request. Callers pass fixed fields only: never headers, never keys."""
        with self.lock:
            if self._log is not None:
                self._log.write(json.dumps({"time": round(time.time(), 6), **entry}) + "\n")

    # --- stats ---------------------------------------------------------------------------------------

    def reset_stats(self) -> None:
        with self.lock:
            self._requests = {name: 0 for name in (*ENDPOINTS, "files")}
            self._by_kind: dict[str, int] = {}
            self._faults: dict[str, int] = {}
            self._images = 0
            self._styled = 0
            self._structured = 0
            self._in_flight = getattr(self, "_in_flight", 0)
            self._max_in_flight = self._in_flight

    def begin(self, endpoint: str) -> None:
        """A request to ``endpoint`` arrived (counted before any fault, so retries count too)."""
        with self.lock:
            self._requests[endpoint] = self._requests.get(endpoint, 0) + 1
            if endpoint in ENDPOINTS:
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def end(self, endpoint: str) -> None:
        if endpoint in ENDPOINTS:
            with self.lock:
                self._in_flight -= 1

    def count(self, *, kind: str | None = None, fault: str | None = None, images: int = 0,
              styled: int = 0, structured: int = 0) -> None:
        with self.lock:
            self._styled += styled
            self._structured += structured
            if kind is not None:
                self._by_kind[kind] = self._by_kind.get(kind, 0) + 1
            if fault is not None:
                self._faults[fault] = self._faults.get(fault, 0) + 1
            self._images += images

    def stats(self) -> dict[str, Any]:
        """The ``GET /sim/stats`` body; ``total`` counts /v1 requests (not /sim/files downloads)."""
        with self.lock:
            return {
                "requests": dict(self._requests),
                "total": sum(self._requests[e] for e in ENDPOINTS),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "by_kind": dict(sorted(self._by_kind.items())),
                "faults": dict(sorted(self._faults.items())),
                "images_generated": self._images,
                "styled_replies": self._styled,
                "structured_replies": self._structured,
            }

    # --- faults and latency ----------------------------------------------------------------------------

    def inject(self, kind: str, count: int = 1, endpoint: str | None = None) -> None:
        """The next ``count`` requests that can take fault ``kind`` (on ``endpoint`` if given) get it."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; use one of {', '.join(ENDPOINTS)}")
        if endpoint is not None and kind not in FAULTS_FOR[endpoint]:
            raise ValueError(f"fault {kind!r} cannot happen on endpoint {endpoint!r}")
        if count < 1:
            raise ValueError(f"inject count must be >= 1, got {count}")
        with self.lock:
            self._injected.append(_Injected(kind, count, endpoint))

    def decide_fault(self, endpoint: str, now: float) -> tuple[str | None, float]:
        """``(fault, retry_after_s)`` for one request: rpm window, then the injected queue, then chance."""
        with self.lock:
            cfg = self.config
            if endpoint != "models" and cfg.rpm_limit:
                while self._accepted and now - self._accepted[0] >= _RPM_WINDOW_S:
                    self._accepted.popleft()
                if len(self._accepted) >= cfg.rpm_limit:
                    # Wait until the oldest accepted request leaves the window.
                    return "rpm_429", max(0.001, _RPM_WINDOW_S - (now - self._accepted[0]))
                self._accepted.append(now)
            for entry in self._injected:
                if entry.kind in FAULTS_FOR[endpoint] and entry.endpoint in (None, endpoint):
                    entry.count -= 1
                    if entry.count == 0:
                        self._injected.remove(entry)
                    return entry.kind, cfg.retry_after_s
            if endpoint == "models":
                return None, 0.0
            draw, cumulative = self._fault_rng.random(), 0.0
            for kind in FAULT_KINDS:  # fixed order, so a seed replays the same fault sequence
                if kind in FAULTS_FOR[endpoint]:
                    cumulative += cfg.rate(kind)
                    if draw < cumulative:
                        return kind, cfg.retry_after_s
            return None, 0.0

    def latency_s(self) -> float:
        with self.lock:
            cfg = self.config
            if cfg.latency_ms <= 0:
                return 0.0
            if cfg.latency_dist == "lognormal":
                return cfg.latency_ms / 1000.0 * math.exp(cfg.latency_sigma * self._latency_rng.gauss(0, 1))
            return cfg.latency_ms / 1000.0

    # --- files served by URL ---------------------------------------------------------------------------

    def put_file(self, name: str, data: bytes) -> None:
        with self.lock:
            self._files[name] = data
            while len(self._files) > _MAX_FILES:
                self._files.popitem(last=False)

    def get_file(self, name: str) -> bytes | None:
        with self.lock:
            return self._files.get(name)
