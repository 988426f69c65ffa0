"""Every error an ltgc command can end with, drawn in one tree, and the one wrapper that turns them into exit codes.

The hierarchy (module in brackets; ``tests/agent/test_errors.py`` checks this drawing against the code)::

    ValueError
    ├── UsageError (store.errors) — bad input, flag, setting or file: one line, exit 2, nothing lost
    │   ├── BlobError (store.blobs) — a bad blob request: extension, hash, or not stored
    │   ├── CacheError (store.cache) — a cache input that cannot be used
    │   ├── ListFileError (store.lists) — a list or class-names file, file:line: reason
    │   ├── ManifestError (store.manifest) — a manifest.jsonl line, file:line: reason
    │   ├── TraceStoreError (store.trace_schema) — a trace store misuse or an unreadable traces.sqlite
    │   ├── WeightsNotCached (store.hub) — hub weights not in the local cache while the hub cannot be reached
    │   ├── SettingsError (agent.lifecycle.settings) — a [run] setting or run flag
    │   ├── InputError (agent.lifecycle.inputs) — --classes, --images, --train-list, --class-names
    │   ├── ResumeError (agent.lifecycle.resume) — --resume with a change to what the run generates
    │   ├── RerunError (agent.lifecycle.resume) — a new run into a folder holding a run with other inputs
    │   ├── BudgetError (agent.lifecycle.budget) — --max-cost / --max-calls values
    │   ├── UnsafeCheckpointError (agent.lifecycle.checkpoints) — a checkpoint naming a type ltgc never writes
    │   ├── RunLocked (agent.lifecycle.lock) — the run folder is in use by another agent.run
    │   ├── RunFolderError (agent.lifecycle.folder) — a run folder JSON file that cannot be read
    │   ├── ConfigError (agent.providers.config) — a provider setting ([lmm]/[llm]/[t2i], env, flags, keys)
    │   │   └── LocalPipelineError (agent.providers.local_pipeline) — a local t2i model or device
    │   ├── ScorerError (agent.providers.scorer) — a CLIP model or weights that do not load
    │   ├── PricesError (agent.readout.cost) — a price table
    │   ├── InspectError (agent.readout.status) — bad input to agent.traces
    │   ├── ReportError (agent.readout.report) — a folder agent.report cannot build from
    │   ├── BatchInspectError (agent.batch.cli) — agent.traces RUN batches
    │   ├── ExportError (agent.export.source) — a run folder or option agent.export cannot use
    │   ├── ReviewError (agent.review.cli) — bad input to agent.review (not a run folder, a port it cannot bind)
    │   ├── DataError (trainer.samples) — the trainer's data flags and files
    │   ├── ModelError (trainer.model) — the trainer's model flags
    │   ├── OutputError (trainer.outputs) — an output that cannot be written (exit 2, or 1 once work was done)
    │   ├── ProfileError (scripts.lt.profile) — settings that cannot give a long-tailed split
    │   └── SourceError (scripts.lt.sources) — an image source that cannot be read
    ├── SegmentError (store.trace_text) — internal: a packed trace text that does not decode (a damaged file)
    └── InputImageError (agent.providers.images) — internal: a real image PIL cannot read, met while sending it
    Exception
    ├── ProviderError (agent.providers.retry) — one call's final failure: its kind says what happens next
    ├── BadResponse (agent.providers.retry) — internal: an answer that cannot be used
    └── LimiterAborted (agent.providers.limiter) — internal: a limiter wait given up because of a stop

``ProviderError.kind`` (agent.providers.retry ``ErrorKind``) decides the item's or class's fate, never the exit
code directly: ``refused``, ``bad_request``, ``auth``, ``not_found``, ``exhausted``, ``bad_response`` fail one
item; ``budget``, ``quota``, ``stopped`` stop its class resumably (``STOP_KINDS``); ``rate_limited``,
``server``, ``timeout``, ``connection`` are retried and end an item only as ``exhausted``.

Why the four internal ones are not ``UsageError``: none reaches a user. ``SegmentError`` becomes a one-line
``TraceStoreError`` naming the file and the call where trace rows are decoded (store/traces.py ``_records``);
each of the others is turned into a ``ProviderError`` at its one catch site — ``InputImageError`` into ``bad_request`` (agent/providers/client.py: the
item fails, the run goes on; a bad real image is a user error only at start-up, ``agent.lifecycle.inputs``),
``BadResponse`` into ``bad_response`` (``classify``), ``LimiterAborted`` into ``stopped``
(agent/providers/transport.py).

Exit codes of ``python -m agent.run`` (the same numbers in its ``--help``): :data:`EXIT_OK` every class
complete; :data:`EXIT_FAILED` a class failed or fell short (``short``: items missing because calls failed
or were refused; ``--resume`` asks them again), or the disk filled up; :data:`EXIT_USAGE` any ``UsageError``
(one line, before or instead of any call; the trainer's ``OutputError`` says 1 once work was done);
:data:`EXIT_BUDGET` the budget refused a call; :data:`EXIT_REVIEW` (``--review``) every class is finished
or awaits review (``python -m agent.review RUN``, then ``--resume``); 128 + signal (130, 143) after a graceful stop
(agent/lifecycle/shutdown.py). ``agent.traces`` and ``agent.report``: 0 or 2.

:func:`entry_point` is the one place a command maps a ``UsageError`` to its line and exit code:

>>> @entry_point
... def main(argv=None):
...     raise UsageError("--size: must be WxH, got '12'")
>>> main([])  # and "error: --size: must be WxH, got '12'" on stderr
2
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from store.errors import EXIT_USAGE, UsageError, usage_line

__all__ = ["EXIT_BUDGET", "EXIT_FAILED", "EXIT_OK", "EXIT_REVIEW", "EXIT_USAGE", "UsageError", "entry_point"]

EXIT_OK, EXIT_FAILED, EXIT_BUDGET, EXIT_REVIEW = 0, 1, 3, 4

class Main(Protocol):
    """A command's ``main(argv=None) -> int``."""

    def __call__(self, argv: Sequence[str] | None = None, /) -> int: ...


def entry_point(main: Callable[[Sequence[str] | None], int]) -> Main:
    """``main(argv) -> int`` that prints a ``UsageError`` as one ``error: ...`` line on stderr and returns its
    ``exit_code`` (:data:`EXIT_USAGE`) instead of a traceback. Anything else passes through unchanged."""

    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except UsageError as exc:
            print(usage_line(exc), file=sys.stderr)
            return int(getattr(exc, "exit_code", EXIT_USAGE))

    return run
