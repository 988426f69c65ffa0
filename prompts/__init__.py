"""The paper's five prompts and two templates, as data files, and the pure function that renders them.

Files (``prompts/*.txt``) use ``string.Template`` placeholders (``${class_name}``, ``${descriptions}``,
``${count}``, ``${description}``, ``${template1}``, ``${template2}``) so the paper's literal braces
(``{distinctive features}``) stay as written. The rendered text is part of every cache key: editing a
prompt file re-runs exactly the calls that used it.

A prompt's last line, ``${format}``, is its answer-format instruction, kept in ``prompts/formats.toml`` in
two forms: ``text`` (the default; byte-identical to the prompts as first written) and ``json`` (with
``structured=True``: the answer as a JSON object, for a JSON-schema ``response_format``; agent/providers/structured.py).

>>> render("prompt5_refine", class_name="red fox", description="A photo of the class red fox, blue.")
... # doctest: +ELLIPSIS
'Template 1: "A photo of the class red fox, {with distinctive features}{in specific scenes}."\\nThis...'
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from string import Template

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

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


@functools.cache
def formats() -> dict[str, dict[str, str]]:
    """``prompts/formats.toml``: per prompt, its ``text`` and ``json`` answer-format lines."""
    with (PROMPT_DIR / "formats.toml").open("rb") as fh:
        return tomllib.load(fh)


def render(name: str, *, class_name: str, structured: bool = False, **values: object) -> str:
    """Render prompt ``name`` for ``class_name``; every ``${...}`` must be supplied (else ``KeyError``).

    ``descriptions`` may be a sequence of strings: it is written as a numbered list. ``structured`` picks
    the ``json`` form of the prompt's ``${format}`` line (``KeyError`` for a prompt without one).
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
    raw = load(name)
    if "${format}" in raw:
        fields["format"] = Template(formats()[name]["json" if structured else "text"]).substitute(fields)
    elif structured:
        raise KeyError(f"prompt {name} has no ${{format}} line, so it has no structured form")
    return Template(raw).substitute(fields)


def numbered(items: Sequence[str]) -> str:
    """``["a", "b"] -> "1. a\\n2. b"``; an empty list reads ``(none yet)``."""
    if not items:
        return "(none yet)"
    return "\n".join(f"{i}. {text}" for i, text in enumerate(items, start=1))
