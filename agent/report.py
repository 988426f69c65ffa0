"""``python -m agent.report``: write a run's report.html (the code lives in ``agent.readout.report``)."""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("agent.report", "report.html is written atomically: the old one, if any, is intact")

from agent.readout.report import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
