"""Command-line parsing shared by ``python -m trainer.train`` and ``python -m trainer.eval``.

Contract: a bad option is one line on stderr (``error: what (see <prog> --help)``, with "did you mean --x?" for
a mistyped flag) and exit code 2 — never a usage dump or a traceback. Numeric options are range-checked here so later code can trust them. Errors
raised while running are :class:`store.errors.UsageError` subclasses, caught once in :func:`run_main`.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from store.cli import OneLineParser
from store.errors import UsageError, usage_line


class DefaultsFormatter(argparse.HelpFormatter):
    """``--help`` shows every default: ``(default: X)`` after a flag's help unless its text already says it
    (``--epochs``, ``--lr``, ``--batch-size`` and ``--model`` showed none before, issue 21)."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings and self._shows_default(action):
            action = copy.copy(action)  # a flag with no help text at all still shows its default
            action.help = "default: %(default)s"
        return super()._format_action(action)

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        # By identity: a default of 0 is a default to show (0 == False would hide it).
        default = action.default
        return not (default is None or default is False or default == [] or default is argparse.SUPPRESS
                    or action.nargs == 0)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or not self._shows_default(action):
            return text
        return f"{text} (default: %(default)s)"


class Parser(OneLineParser):
    """The project's one-line parser (store/cli.py: no abbreviations, "did you mean", no usage dump), whose
    ``--help`` shows every default (:class:`DefaultsFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def default_workers() -> int:
    """Leave one core to the training process itself."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))


def add_eval_options(p: argparse.ArgumentParser, thresholds_from_run: bool = False) -> None:
    """Options that both train and eval understand; eval takes ``--many/--few`` from the training run."""
    many, few = (None, None) if thresholds_from_run else (100, 20)
    default = "default: the training run's value" if thresholds_from_run else "default {}"
    p.add_argument("--many", type=nonneg_int, default=many,
                   help=f"classes with MORE than this many original training images are 'many' "
                        f"({default.format(100)})")
    p.add_argument("--few", type=nonneg_int, default=few,
                   help=f"classes with FEWER than this many original training images are 'few' "
                        f"({default.format(20)})")
    p.add_argument("--max-test", type=nonneg_int, default=0,
                   help="evaluate on at most N test images, taken class by class (0 = all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = CUDA when available (default)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (a no-op with a note on CPU)")
    p.add_argument("--workers", type=nonneg_int, default=default_workers(),
                   help="DataLoader worker processes (default: cores - 1, at most 8)")
    p.add_argument("--threads", type=nonneg_int, default=0,
                   help="torch CPU threads per process (0 = auto: cores / local ranks - workers, at least 1)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="drop missing, changed (sha256) or corrupt images with a counted warning instead of "
                        "stopping; metrics.json records how many (skipped_images)")
    p.add_argument("--cache-mb", type=nonneg_float, default=1024.0,
                   help="keep up to this many MB of decoded images in memory (default 1024; 0 = off)")


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None


def run_main(parser: argparse.ArgumentParser, argv: Sequence[str] | None, body: Callable[[Any], int]) -> int:
    """Parse ``argv`` and run ``body(args)``: a :class:`UsageError` is its one ``error:`` line and its exit code
    (2 for bad input; 1 for an output that could not be saved after work was done).

    torch is imported only after parsing, so ``--help`` and option errors are instant.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return body(args)
    except UsageError as exc:
        print(usage_line(exc), file=sys.stderr)
        return int(exc.exit_code)
    finally:
        from trainer.loop import teardown_runtime

        teardown_runtime()
