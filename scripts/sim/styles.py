"""Reply styles for the simulator: its answers re-written the way chat models write them.

THIS IS A SIMULATOR: the styles imitate the *form* of GPT-4o-, Claude-, Llama- and Qwen-like answers
(prefaces, closing remarks, label prefixes, markdown emphasis and headers, bold numbers, nested bullets,
straight and smart quotes, template braces left in, JSON in code fences, wrapped items, Windows line ends);
the content is the simulator's own synthetic text.

Contract (pure functions; all randomness from the ``rng`` passed in):

- ``style_reply(kind, answer, *, class_name, rng, removed=()) -> (style, text)``: ``answer`` is the plain
  answer (a numbered list for ``extend`` / ``dedupe``, one sentence otherwise). Every style keeps each
  description recoverable by an honest reader, except what a real model also gets wrong on purpose: about
  one extend reply in three carries one extra item about another class, and one describe style (not the
  re-ask) is a refusal. ``removed`` (dedupe): items the check removed, which some styles list under a
  "Removed" heading.
- ``structured_reply(schema, kind, answer, *, rng, styled) -> str``: a JSON text that validates against the
  request's ``response_format`` schema (object / array / string schemas), its strings taken from the plain
  answer; ``styled`` leaves markdown emphasis or a label inside some strings, as models in JSON mode do.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["LIST_STYLES", "SINGLE_STYLES", "SUMMARY_STYLES", "structured_reply", "style_reply"]

_ITEM = re.compile(r"^\s*\d+[.)]\s+(?P<item>.+?)\s*$")
_T1 = re.compile(r"^(?P<head>A photo of the class .+?), with (?P<f>.+?) in (?P<s>[^.]+)\.$")
_T2 = re.compile(r"^(?P<head>A photo of the class .+?) with (?P<f>.+)\.$")
OTHER_CLASS_EVERY = 3  # about one extend reply in three has one item about another class


def style_reply(kind: str, answer: str, *, class_name: str, rng: random.Random,
                removed: Sequence[str] = ()) -> tuple[str, str]:
    """``(style name, styled text)`` for one reply; see the module docstring."""
    if kind in ("extend", "dedupe"):
        items = [m.group("item") for line in answer.splitlines() if (m := _ITEM.match(line))]
        if kind == "extend" and items and rng.randrange(OTHER_CLASS_EVERY) == 0:
            items.insert(rng.randrange(len(items) + 1), _other_class_item(class_name, rng))
        name = rng.choice(sorted(LIST_STYLES))
        return name, LIST_STYLES[name](items, class_name, list(removed) if kind == "dedupe" else [])
    table = SUMMARY_STYLES if kind == "summarize" else SINGLE_STYLES
    names = sorted(n for n in table if n != "refusal" or kind == "describe")
    name = rng.choice(names)
    return name, table[name](answer.strip(), class_name)


def structured_reply(schema: Any, kind: str, answer: str, *, rng: random.Random, styled: bool) -> str:
    """A JSON answer for ``schema`` built from the plain ``answer`` (see the module docstring)."""
    items = [m.group("item") for line in answer.splitlines() if (m := _ITEM.match(line))] or [answer.strip()]
    if styled:
        items = [_json_style(item, rng) for item in items]
    return json.dumps(_instance(schema, items))


# ------------------------------------------------------------------------------------ list styles
ListStyle = Callable[[list[str], str, list[str]], str]


def _gpt_bold(items: list[str], y: str, removed: list[str]) -> str:
    lines = [f"{i}. {_bold_head(s)}" for i, s in enumerate(items, 1)]
    return f"Here are {len(items)} descriptions for the class {y}:\n\n" + "\n".join(lines) + \
        "\n\nLet me know if you'd like more variations!"


def _claude_quotes(items: list[str], y: str, removed: list[str]) -> str:
    lines = [f"{i}. “{s}”" for i, s in enumerate(items, 1)]
    text = "Sure — here they are, each following Template 1:\n\n" + "\n".join(lines)
    if removed:
        text += "\n\nRemoved (repeats an earlier description):\n" + "\n".join(f"- {s}" for s in removed)
    return text + "\n\nEach one varies either the features or the setting."


def _llama_braces(items: list[str], y: str, removed: list[str]) -> str:
    echo = f"Template 1: A photo of the class {y}, {{with distinctive features}}{{in specific scenes}}."
    return echo + "\n\n" + "\n".join(f"{i}. {_braces1(s)}" for i, s in enumerate(items, 1))


def _qwen_json(items: list[str], y: str, removed: list[str]) -> str:
    return "Here is the list in JSON format:\n```json\n" + json.dumps(items, indent=2, ensure_ascii=False) + "\n```"


def _headers_nested(items: list[str], y: str, removed: list[str]) -> str:
    lines = [f"### Descriptions of {y}"]
    for i, s in enumerate(items):
        lines.append(f"- {s}")
        if i % 2 == 0:
            lines.append("  - Varies the setting while keeping the class recognisable.")
    return "\n".join(lines)


def _bold_numbers(items: list[str], y: str, removed: list[str]) -> str:
    return "\n".join(f"**{i}.** {s}" for i, s in enumerate(items, 1))


def _wrapped_crlf(items: list[str], y: str, removed: list[str]) -> str:
    lines = [f"{i}. {_wrap(s) if i == 1 else s}" for i, s in enumerate(items, 1)]
    return ("Absolutely! Here you go:\n\n" + "\n".join(lines) + "\n").replace("\n", "\r\n")


def _labels(items: list[str], y: str, removed: list[str]) -> str:
    return "\n".join(f"Description {i}: {s}" for i, s in enumerate(items, 1))


LIST_STYLES: dict[str, ListStyle] = {
    "gpt-4o-bold": _gpt_bold, "claude-quotes": _claude_quotes, "llama-braces": _llama_braces,
    "qwen-json-fence": _qwen_json, "headers-nested": _headers_nested, "bold-numbers": _bold_numbers,
    "wrapped-crlf": _wrapped_crlf, "labels": _labels,
}

# ---------------------------------------------------------------------------------- single styles
SingleStyle = Callable[[str, str], str]

SINGLE_STYLES: dict[str, SingleStyle] = {
    "gpt-4o-bold": lambda s, y: _bold_head(s),
    "claude-quoted": lambda s, y: f'Here is a description following Template 1:\n\n"{s}"\n\n'
                                  "This captures the most visible features.",
    "llama-label-braces": lambda s, y: f"Template 1: {_braces1(s)}",
    "qwen-json-fence": lambda s, y: '```json\n{"description": ' + json.dumps(s, ensure_ascii=False) + "}\n```",
    "header-bold": lambda s, y: f"### Description\n**{s}**",
    "label-crlf": lambda s, y: f"Description: {s}\r\n",
    "wrapped": lambda s, y: _wrap(s),
    "refusal": lambda s, y: "I'm sorry, but I can't describe this image with confidence.",
}

SUMMARY_STYLES: dict[str, SingleStyle] = {
    "template-label": lambda s, y: f"Template 2: {s}",
    "bold-summary-dash": lambda s, y: f"**Summary —** {s}",
    "braces": lambda s, y: _braces2(s),
    "json-fence": lambda s, y: '```json\n{"template": ' + json.dumps(s, ensure_ascii=False) + "}\n```",
    "header-bold-closing": lambda s, y: f"### Class Feature Template\n\n**{s}**\n\n"
                                        "This summary focuses on the most recognisable visual traits.",
    "echo-then-answer": lambda s, y: f'Using Template 2 ("A photo of the class {y} with {{feature 1}}'
                                     f'{{feature 2}}{{...}}."), the summary is:\n\n{s}',
    "smart-quotes-crlf": lambda s, y: f"“{s}”\r\n",
    "wrapped": lambda s, y: _wrap(s),
}


# ------------------------------------------------------------------------------------------ helpers
def _bold_head(s: str) -> str:
    """``**A photo of the class y**, with ...`` (the class part in bold)."""
    match = _T1.match(s)
    return f"**{match.group('head')}**{s[len(match.group('head')):]}" if match else f"**{s}**"


def _braces1(s: str) -> str:
    """Template 1 with its slots still braced: ``..., {with F}{in S}.``"""
    match = _T1.match(s)
    return f"{match.group('head')}, {{with {match.group('f')}}}{{in {match.group('s')}}}." if match else s


def _braces2(s: str) -> str:
    """Template 2 with every feature braced: ``... with {a}{b}{c}.``"""
    match = _T2.match(s)
    if not match:
        return s
    features = [f.strip() for f in re.split(r",\s*|\s+and\s+", match.group("f")) if f.strip()]
    return f"{match.group('head')} with " + "".join(f"{{{f}}}" for f in features) + "."


def _wrap(s: str) -> str:
    """The sentence broken before its scene (or mid-way), the continuation indented."""
    at = s.rfind(" in ")
    if at <= 0:
        spaces = [i for i, ch in enumerate(s) if ch == " " and s[i - 1] not in ".,;:!?"]
        at = spaces[len(spaces) // 2] if spaces else -1
    return s if at <= 0 else f"{s[:at]}\n   {s[at + 1:]}"


def _other_class_item(y: str, rng: random.Random) -> str:
    other = "striped hyena" if y != "striped hyena" else "grey wolf"
    scene = rng.choice(("a dry savanna", "a rocky canyon", "a dusty road"))
    return f"A photo of the class {other}, with a sloping back and a spotted coat, in {scene}."


def _json_style(item: str, rng: random.Random) -> str:
    pick = rng.randrange(3)
    if pick == 0:
        return _bold_head(item)
    if pick == 1:
        return f"Description: {item}"
    return item


def _instance(schema: Any, items: list[str]) -> Any:
    """A value valid for ``schema``: strings from ``items`` (objects: every property filled)."""
    if not isinstance(schema, dict):
        return items[0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: _instance(sub, items) for name, sub in props.items()}
    if kind == "array":
        return [_instance(schema.get("items") or {"type": "string"}, [item]) for item in items]
    if kind in ("integer", "number"):
        return len(items)
    if kind == "boolean":
        return True
    return items[0] if items else ""
