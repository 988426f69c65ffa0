"""Long-tail data tools, one command each: ``inspect``, ``make-lt``, ``select-tail``, ``folder-to-list``.

    python -m scripts.lt_tools inspect --list train.txt --class-names classnames.txt
    python -m scripts.lt_tools make-lt --fashion-mnist /usr/share/datasets/fashion-mnist --out data/fmnist-lt
    python -m scripts.lt_tools select-tail --list train.txt --class-names classnames.txt --out tail.txt
    python -m scripts.lt_tools folder-to-list --images data/train --out data/train.txt

Each command is a ``main(argv) -> int`` in :mod:`scripts.lt` (``inspect_split``, ``make_lt``,
``select_tail``, ``folder_to_list``) and takes ``--help``. Exit status: 0 ok, 2 bad input (one line on stderr).
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("lt_tools", "the command did not finish; run it again")

import sys
from collections.abc import Callable, Sequence

from scripts.lt import folder_to_list, inspect_split, make_lt, select_tail

COMMANDS: dict[str, tuple[Callable[[Sequence[str] | None], int], str]] = {
    "inspect": (inspect_split.main, "per-class counts and the many/medium/few breakdown of a split"),
    "make-lt": (make_lt.main, "build a long-tailed split from an ImageFolder tree or Fashion-MNIST"),
    "select-tail": (select_tail.main, "write tail.txt for python -m agent.run --classes"),
    "folder-to-list": (folder_to_list.main, "write a list file and a class-names file from an ImageFolder tree"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command; ``--help`` (or nothing) lists the commands."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"lt_tools: error: unknown command {args[0]!r}; choose one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return command[0](args[1:])


def _usage() -> str:
    lines = [f"usage: python -m scripts.lt_tools {{{','.join(COMMANDS)}}} [--help] ...", ""]
    lines += [f"  {name:<15} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
