"""``python -m scripts.simulator``: the OpenAI-compatible loopback simulator (the code lives in ``scripts.sim.server``)."""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("simulator", "it was not serving yet")

from scripts.sim.server import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
