"""The paper's five prompts and two templates, as data files, and the pure function that renders them.

Files (``prompts/*.txt``) use ``string.Template`` placeholders (``${class_name}``, ``${descriptions}``,
``${count}``, ``${description}``, ``${template1}``, ``${template2}``) so the paper's literal braces
(``{distinctive features}``) stay as written. The rendered text is part of every cache key: editing a
prompt file re-runs exactly the calls that used it.

>>> render("prompt5_refine", class_name="red fox", description="A photo of the class red fox, blue.")
... # doctest: +ELLIPSIS
'Template 1: "A photo of the class red fox, {with distinctive features}{in specific scenes}."\\nThis...'
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from string import Template

PROMPT_DIR = Path(__file__).resolve().parent

PROMPT_NAMES = (
    "prompt1_describe",
    "prompt1_reminder",
    "prompt2_extend",
    "prompt3_dedupe",
    "prompt4_summarize",
    "prompt5_refine",
)


@functools.cache
def load(name: str) -> str:
    """The raw text of ``prompts/<name>.txt`` (trailing newline removed)."""
    path = PROMPT_DIR / f"{name}.txt"
    if not path.is_file():
        raise KeyError(f"no prompt file {path.name} in {PROMPT_DIR}")
    return path.read_text(encoding="utf-8").rstrip("\n")


def render(name: str, *, class_name: str, **values: object) -> str:
    """Render prompt ``name`` for ``class_name``; every ``${...}`` must be supplied (else ``KeyError``).

    ``descriptions`` may be a sequence of strings: it is written as a numbered list.
    """
    fields: dict[str, object] = {
        "class_name": class_name,
        "template1": Template(load("template1")).substitute(class_name=class_name),
        "template2": Template(load("template2")).substitute(class_name=class_name),
    }
    for key, value in values.items():
        if key == "descriptions" and not isinstance(value, str):
            value = numbered(value)  # type: ignore[arg-type]
        fields[key] = value
    return Template(load(name)).substitute(fields)


def numbered(items: Sequence[str]) -> str:
    """``["a", "b"] -> "1. a\\n2. b"``; an empty list reads ``(none yet)``."""
    if not items:
        return "(none yet)"
    return "\n".join(f"{i}. {text}" for i, text in enumerate(items, start=1))
