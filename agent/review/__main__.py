"""``python -m agent.review RUN``: see agent/review/cli.py."""

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":
    exit_on_interrupt("agent.review", "nothing was changed")

import sys

from agent.review.cli import main

if __name__ == "__main__":
    sys.exit(main())
