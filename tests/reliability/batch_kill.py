"""``python -m tests.reliability.batch_kill POINT N AGENT_ARGS...``: ``python -m agent.run`` that SIGKILLs
itself the N-th time it reaches POINT of batch mode (the crash tests' precise kill points).

The points wrap methods of the real code from outside it, so nothing in ``agent/`` knows about the test:

- ``before_upload``: the submission's intent is committed, its file not uploaded yet.
- ``after_upload``: the file is uploaded and its id committed; ``batches.create`` not sent.
- ``after_create``: the batch exists server-side but its id is not committed (the local record is missing).
- ``polling``: right after a status check of a live batch.
- ``collecting``: the batch's output and error files are on disk, not yet indexed in the ledger.
- ``handing_out``: a batch's answers are being written to the call cache: some written, some not.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any

from agent.batch.client import BatchClient
from store.batches import BatchLedger
from store.cache import CallCache

POINTS: dict[str, tuple[type, str, str]] = {
    "before_upload": (BatchClient, "upload", "before"),
    "after_upload": (BatchLedger, "uploaded", "after"),
    "after_create": (BatchLedger, "submitted", "before"),
    "polling": (BatchClient, "retrieve", "after"),
    "collecting": (BatchLedger, "collected", "before"),
    "handing_out": (CallCache, "put", "after"),
}
MODEL_ROLES = ("lmm", "llm", "t2i")


def arm(point: str, nth: int, mark: str | None = None) -> None:
    """Make the process kill itself the ``nth`` time ``point`` is reached (appending ``point`` to the file
    ``mark`` first, so a test can tell where it died)."""
    owner, name, when = POINTS[point]
    original = getattr(owner, name)
    seen = 0

    def die() -> None:
        if mark:
            with open(mark, "a", encoding="utf-8") as fh:
                fh.write(point + "\n")
        os.kill(os.getpid(), signal.SIGKILL)

    @functools.wraps(original)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        counts = point != "handing_out" or kwargs.get("role") in MODEL_ROLES  # not the CLIP score cache
        if counts and when == "before":
            seen += 1
            if seen == nth:
                die()
        result = await original(*args, **kwargs)
        if counts and when == "after":
            seen += 1
            if seen == nth:
                die()
        return result

    setattr(owner, name, wrapped)


def main(argv: list[str]) -> int:
    point, nth, rest = argv[0], int(argv[1]), argv[2:]
    arm(point, nth, os.environ.get("LTGC_KILL_MARK"))
    from agent.run import main as run

    return run(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
