"""``python -m agent.traces``: the trace inspector (the code lives in ``agent.readout.inspector``)."""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("agent.traces", "the run folder was not changed")

from agent.readout.inspector import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
