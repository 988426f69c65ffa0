"""Command-line parsing shared by every entry point: one error line, a suggestion, no usage dump.

Contract:

- :class:`OneLineParser` is ``argparse.ArgumentParser`` with ``allow_abbrev=False`` (``--target 12`` is not
  quietly read as ``--target-per-class 12``) and an ``error()`` that prints **one** line — what is wrong,
  a "did you mean --x?" for a mistyped flag when a close one exists, and where to look (``--help``) —
  then exits with status 2, instead of argparse's usage dump. Subparsers created through it behave the same.
- Every parser that has ``--help`` also has ``--version``: ``ltgc <version>`` from the installed package's
  metadata (:func:`package_version`), so a bug report can say which release it ran.
- :func:`suggest` is the pure part: the closest known flag, or ``None``.
- Standard library only: the trainer uses it.

>>> suggest("--target", ["--target-per-class", "--threshold", "--out"])
'--target-per-class'
>>> suggest("--zzz", ["--out"]) is None
True
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

from store.errors import EXIT_USAGE

__all__ = ["OneLineParser", "package_version", "suggest"]

_UNRECOGNIZED = re.compile(r"unrecognized arguments?: (.+)$")


class OneLineParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line with a suggestion (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        if self.add_help:  # parent parsers (add_help=False) would clash with the child's own --version
            self.add_argument("--version", action="version", version=f"ltgc {package_version()}",
                              help="print the ltgc version and exit")

    def error(self, message: str) -> NoReturn:
        unknown = _UNRECOGNIZED.search(message)
        if unknown:
            first = unknown.group(1).split()[0]
            flag = first.split("=", 1)[0]
            close = suggest(flag, self._known_flags()) if flag.startswith("-") else None
            message = f"unknown argument {first}" + (f"; did you mean {close}?" if close else "")
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)

    def _known_flags(self) -> list[str]:
        return [flag for action in self._actions for flag in action.option_strings]


def package_version() -> str:
    """The installed ``ltgc`` distribution's version (``pip install -e .`` included), from its metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ltgc")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed; pip install -e . records it)"


def suggest(flag: str, known: Iterable[str]) -> str | None:
    """The known flag closest to a mistyped ``flag``: a prefix of exactly one flag, else difflib's best."""
    options = list(known)
    prefixed = [k for k in options if k.startswith(flag) and k != flag]
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
    return close[0] if close else (prefixed[0] if prefixed else None)
