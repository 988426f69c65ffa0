"""``python -m agent.export``: see :mod:`agent.export.cli`."""

from store.interrupt import exit_on_interrupt

exit_on_interrupt("agent.export", "the export did not finish; nothing half-written is left under --out; run it again")

from agent.export.cli import main  # noqa: E402  (after the Ctrl-C handler: an interrupt while importing is one line)

raise SystemExit(main())
