"""An OpenAI-compatible loopback server for tests, benchmarks and the offline demo.

THIS IS A SIMULATOR. Its content is synthetic: no model runs here. Chat answers are deterministic
functions of the request that merely *follow the LTGC templates* (``scripts/sim/content.py``); images are
small PNGs drawn from a hash of the prompt. Never read a number produced against it as a result about
LTGC; use it to test plumbing (caching, retries, rate limits, resume, parsing) without a network.

Serves on 127.0.0.1 (port chosen by the OS unless given):
``POST /v1/chat/completions`` (text and ``image_url`` data-URI parts), ``POST /v1/images/generations``
(``b64_json`` PNG, or ``response_format="url"`` served from ``/sim/files/<id>.png``), ``GET /v1/models``,
``GET /sim/stats``, ``POST /sim/reset``, ``POST /sim/config``, and the Batch API (``/v1/files``,
``/v1/batches``: ``scripts/sim/batch.py``). See ``scripts/sim/http_server.py`` for shapes and
``scripts/sim/state.py`` for every knob (``SimConfig``) and fault kind.

Python::

    with Simulator(SimConfig(latency_ms=50)) as sim:
        client = AsyncOpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        sim.inject("429", count=2, endpoint="chat")   # the next two chat requests get 429
        sim.set_config(rate_500=0.1)                   # knobs change at runtime
        sim.stats()["requests"]["chat"]                # exact counts for assertions

Chat requests with a JSON-schema ``response_format`` get JSON valid for the schema; ``--reply-style-share``
writes a seeded share of answers the way chat models do (``scripts/sim/styles.py``).

CLI: ``python -m scripts.simulator --port 0 --latency-ms 200 --rate-429 0.1 --log sim.jsonl`` prints
exactly ``listening on http://127.0.0.1:<port>/v1`` once it accepts connections, then serves until
interrupted (SIGINT/SIGTERM → exit 0). Bad flags exit 2 with one error line.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("simulator", "it was not serving yet")

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from scripts.sim.batch import BATCH_FAULT_KINDS
from scripts.sim.http_server import SimServer
from scripts.sim.state import FAULT_KINDS, SimConfig, SimState
from store.cli import OneLineParser

__all__ = ["BATCH_FAULT_KINDS", "FAULT_KINDS", "SimConfig", "Simulator", "main"]


class Simulator:
    """One running simulator. A context manager: ``__enter__`` starts serving, ``__exit__`` stops it."""

    def __init__(self, config: SimConfig | None = None, **knobs: Any) -> None:
        base = config or SimConfig()
        self._state = SimState(dataclasses.replace(base, **knobs) if knobs else base)
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Simulator:
        """Bind and serve on a background thread (idempotent)."""
        if self._server is None:
            cfg = self._state.config
            self._server = SimServer((cfg.host, cfg.port), self._state)
            self._thread = threading.Thread(target=self._server.serve_forever, name="ltgc-simulator",
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: end hangs, drop keep-alive connections, close the log."""
        self._state.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.drop_connections()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator is not running; use `with Simulator(...) as sim:` or sim.start()")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the server root, where ``/sim/...`` lives)."""
        return f"http://{self._state.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url``: ``http://127.0.0.1:<port>/v1``."""
        return f"{self.url}/v1"

    @property
    def config(self) -> SimConfig:
        return self._state.config

    def set_config(self, **knobs: Any) -> SimConfig:
        """Change knobs while serving (``ValueError`` on an unknown knob or a bad value)."""
        return self._state.set_config(**knobs)

    def inject(self, kind: str, count: int = 1, endpoint: str | None = None) -> None:
        """Make the next ``count`` requests that can take fault ``kind`` (on ``endpoint``) fail with it;
        a Batch API kind (``BATCH_FAULT_KINDS``) applies to the next ``count`` batches (lines for
        ``batch_line_error``)."""
        if kind in BATCH_FAULT_KINDS:
            self._batches().inject(kind, count)
        else:
            self._state.inject(kind, count, endpoint)

    def stats(self) -> dict[str, Any]:
        """Same body as ``GET /sim/stats`` (``batch``: the Batch API's counts, ``submitted`` per custom_id)."""
        return {**self._state.stats(), "batch": self._batches().stats()}

    def reset_stats(self) -> None:
        self._state.reset_stats()
        self._batches().reset_stats()

    def _batches(self) -> Any:
        if self._server is None:
            raise RuntimeError("simulator is not running; use `with Simulator(...) as sim:` or sim.start()")
        return self._server.batches


# --- CLI ------------------------------------------------------------------------------------------------

_HELP = {
    "port": "TCP port (0: chosen by the OS)", "latency_ms": "latency per request (median if lognormal)",
    "latency_dist": "fixed | lognormal", "retry_after_s": "Retry-After sent with 429s (seconds)",
    "hang_s": "how long a hang lasts (longer than the client timeout)",
    "rpm_limit": "chat + image requests per sliding minute, 429 beyond (0: off)",
    "dedupe_invent": "the dedupe answer adds an invented item", "log_path": "JSONL request log file",
    "require_key": "answer 401 without an Authorization header", "image_side": "generated PNG side (pixels)",
    "reply_style_share": "seeded share of chat answers written like GPT-4o / Claude / Llama / Qwen (0..1)",
    "reject_response_format": "answer 400 to chat requests that carry a response_format",
}


def build_parser() -> argparse.ArgumentParser:
    """Flags are generated from ``SimConfig`` fields, so every knob has one (``rate_429`` → ``--rate-429``)."""
    parser = OneLineParser(prog="python -m scripts.simulator",
                            description="OpenAI-compatible simulator (synthetic content) for tests and demos.")
    for f in dataclasses.fields(SimConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        names = [flag, "--log"] if f.name == "log_path" else [flag]
        if f.name == "models":
            parser.add_argument(flag, nargs="+", default=list(SimConfig().models), help="names in /v1/models")
        elif isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=_HELP.get(f.name))
        elif f.name == "latency_dist":
            parser.add_argument(flag, choices=["fixed", "lognormal"], default=default, help=_HELP.get(f.name))
        else:
            kind = str if default is None else type(default)
            parser.add_argument(*names, dest=f.name, type=kind, default=default,
                                help=_HELP.get(f.name, f"default {default}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; 2 with one error line on bad input."""
    args = vars(build_parser().parse_args(argv))
    args["models"] = tuple(args["models"])
    done = threading.Event()
    # Handlers go in before the URL is printed: a caller may signal as soon as it reads the line.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: done.set())
    try:
        config = SimConfig(**args)
        config.validate()
        sim = Simulator(config).start()
    except (ValueError, OSError) as exc:
        print(f"simulator: error: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"listening on {sim.base_url}", flush=True)
        done.wait()
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
