"""Reading a model's reply: the descriptions in it, repaired where the repair is unambiguous, all counted.

Contract (docs/INTERFACES.md § agent/reply): pure, deterministic, no I/O.

``read_reply(text, class_name, *, template=1, key=None) -> Reading`` returns the reply's descriptions of
``class_name`` that follow Template ``template`` (1 or 2), in order, and counters of what it did:

- *Entries* are list items (numbered, bulleted, nested), plain lines, or the strings of a JSON answer (bare,
  inside a code fence, or — with ``key`` — the ``key`` field of a structured-output object). A line that
  continues an unfinished item (indented, or starting in lower case) is joined to it.
- *Repairs* (each counted per kept item, ``repair_<kind>``), applied only where the intent is unambiguous:
  ``emphasis`` (markdown ``**``/``__``/``*``/``_``/backticks/headers), ``label`` (a short prefix before the
  sentence — "Template 2:", "Description:", "Summary —", "Here it is:" — or talk around a quoted sentence),
  ``quotes`` (quotes around the whole item), ``braces`` (the template's ``{...}`` left in, or ``[class]``),
  ``prefix`` ("A photo of a <class>" for "A photo of the class <class>"), ``fence`` (the item came from a
  markdown code fence), ``wrapped`` (an item broken over lines), ``table`` (the item was a cell of a markdown
  table row). An XML-style tag pair around the sentence (``<answer>...</answer>``) counts as a ``label``.
- An entry that mentions "photo of", every numbered entry and every JSON string is an *item*; an item that
  does not follow the template is *dropped* (``drop_other_class``: a template sentence about another class;
  ``drop_off_template``: anything else). Other lines (prefaces, closing remarks, headers, notes under an
  item, the template echoed back with its placeholders) are ``chatter``; a reply with no item that says it
  will not answer counts as a ``refusal``.

Counters: ``items``, ``kept``, ``repaired`` (kept items with >= 1 repair), ``dropped`` (= items - kept),
``chatter``, ``refusal``, ``repair_<kind>``, ``drop_<reason>``, ``structured_invalid`` (``key`` given but
the reply was not that JSON: read as text instead). Zero counters are left out.

>>> r = read_reply("Sure! Here they are:\\n1. **A photo of the class fox**, {with a red coat}{in snow}.", "fox")
>>> r.kept, r.counts["repair_braces"], r.counts["chatter"]
(['A photo of the class fox, with a red coat in snow.'], 1, 1)
>>> read_reply("Template 2: A photo of the class fox with {a bushy tail}{black legs}.", "fox", template=2).kept
['A photo of the class fox with a bushy tail, black legs.']
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agent.graph.checks import MAX_ITEM_CHARS, follows_template1, follows_template2, normalise

__all__ = ["DROPS", "REPAIRS", "Reading", "read_reply"]

REPAIRS = ("emphasis", "label", "quotes", "braces", "prefix", "fence", "wrapped", "table")
DROPS = ("other_class", "off_template")

_NUMBER = r"(?:item\s*)?#?\(?\d{1,4}[.):\]]"
_MARKER = re.compile(rf"^(?:(?P<num>{_NUMBER})|[-*+•–·]|\(?[a-z]\))\s+", re.IGNORECASE)
_HEADER = re.compile(r"^#{1,6}\s+")
_FENCE_LINE = re.compile(r"^\s*(?:```|~~~)")
_FENCED_BLOCK = re.compile(r"```[\w-]*[ \t]*\n(?P<body>.*?)\n[ \t]*```", re.DOTALL)
_BOLD = re.compile(r"\*\*|__")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])|(?<!\w)_(?!\s)([^_\n]+?)(?<!\s)_(?!\w)")
_CODE = re.compile(r"`([^`\n]+)`")
_PHOTO = re.compile(r"\ba\s+photo\s+of\b", re.IGNORECASE)
# A short label, then a separator, then the sentence: "Template 2: A photo ...", "Summary — “A photo ...".
_LABEL = re.compile(
    r"^(?P<label>[^\n\"“”]{1,80}?)\s*(?:[:—–=]|->|=>|\s-\s|[.!?])\s*(?=[\"“‘'(]?\s*a\s+photo\s+of\b)", re.IGNORECASE
)
_TAGGED = re.compile(r"^<(?P<tag>[A-Za-z_][\w-]*)>\s*(?P<body>.*?)\s*</(?P=tag)>$", re.DOTALL)
_TABLE_RULE = re.compile(r"^:?-{2,}:?$")
_QUOTED = re.compile(r"\"\s*(?P<q>a photo of[^\"]+?)\s*\"|“\s*(?P<s>a photo of[^”]+?)\s*”", re.IGNORECASE)
_WRAP_QUOTES = (('"', '"'), ("“", "”"), ("‘", "’"), ("'", "'"), ("«", "»"))
_BRACE_JOIN = re.compile(r"\}\s*,?\s*\{")
# Joining two filled-in slots: a scene slot starts with a preposition ("{with x}{in y}" -> "with x in y");
# two feature slots are a list ("{x}{y}" -> "x, y").
_PREPOSITIONS = frozenset("in on at near under by inside during among against beside behind across along "
                          "over through amid within while perched floating resting".split())
_PLACEHOLDER = re.compile(r"^(?:with\s+)?distinctive features$|^(?:in\s+)?specific scenes$|^feature\s*\d*$"
                          r"|^\.\.\.$|^…$|^feature\s+n$", re.IGNORECASE)
_REFUSAL = re.compile(r"\b(?:sorry|apologi[sz]e|can(?:no|['’])t|unable to|not able to|won['’]t|decline)\b",
                      re.IGNORECASE)
# A heading or label that says what follows is *not* kept ("Removed:", "Duplicates:", "Excluded (repeat):").
_EXCLUDING = re.compile(r"^(?:the\s+)?(?:following\s+)?(?:(?:descriptions?|items?)\s+)?(?:(?:were|was)\s+)?"
                        r"(?:removed|duplicates?|excluded|dropped|repeats?|repeated|repetitive|deleted|omitted)\b",
                        re.IGNORECASE)
_MAX_LABEL_WORDS = 8
_MAX_HEADING_WORDS = 6


@dataclass
class Reading:
    """What a reply yielded: the kept (repaired) descriptions and the counters (see the module docstring)."""

    kept: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Entry:
    text: str
    numbered: bool = False
    from_json: bool = False
    indent: int = 0
    excluded: bool = False  # listed under "Removed:" / labelled "Duplicate:": the model says it is not kept
    repairs: set[str] = field(default_factory=set)


def read_reply(text: str, class_name: str, *, template: int = 1, key: str | None = None) -> Reading:
    """Read ``text`` for descriptions of ``class_name`` (see the module docstring)."""
    counts: Counter[str] = Counter()
    body = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ").replace("\u200b", "")
    entries = _structured_entries(body, key) if key is not None else None
    if key is not None and entries is None:
        counts["structured_invalid"] += 1
    if entries is None:
        entries = _json_entries(body, counts)
    if entries is None:
        entries = _line_entries(body)
    kept: list[str] = []
    for entry in entries:
        verdict, cleaned = _judge(entry, class_name, template)
        if verdict == "chatter":
            counts["chatter"] += bool(entry.text.strip())
            continue
        counts["items"] += 1
        if verdict != "kept":
            counts[f"drop_{verdict}"] += 1
            continue
        kept.append(cleaned)
        counts["repaired"] += bool(entry.repairs)
        for kind in entry.repairs:
            counts[f"repair_{kind}"] += 1
    counts["kept"] = len(kept)
    counts["dropped"] = counts["items"] - len(kept)
    if not counts["items"] and _REFUSAL.search(body):
        counts["refusal"], counts["chatter"] = 1, 0
    return Reading(kept, {k: v for k, v in sorted(counts.items()) if v})


# ------------------------------------------------------------------------------------------ entries
def _structured_entries(body: str, key: str) -> list[_Entry] | None:
    """The ``key`` field of a structured-output answer, or None when the answer is not that JSON object."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
        return None
    return [_Entry(s.strip(), from_json=True) for s in strings]


def _json_entries(body: str, counts: Counter[str]) -> list[_Entry] | None:
    """Strings of a JSON answer: the whole reply, or the first code fence that holds JSON (the text around
    that fence is chatter). None when the reply holds no JSON."""
    stripped = body.strip()
    if stripped[:1] in "[{":
        data = _loads(stripped)
        if data is not None:
            return [_Entry(s, from_json=True) for s in _strings(data)]
    for match in _FENCED_BLOCK.finditer(body):
        data = _loads(match.group("body").strip())
        if data is None:
            continue
        outside = body[: match.start()] + "\n" + body[match.end():]
        counts["chatter"] += sum(1 for line in outside.splitlines() if line.strip())
        return [_Entry(s, from_json=True, repairs={"fence"}) for s in _strings(data)]
    return None


def _loads(text: str) -> Any:
    if text[:1] not in "[{":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _strings(data: Any) -> list[str]:
    """Every string of a JSON value, in order (lists and objects one level deep are walked)."""
    if isinstance(data, str):
        return [data.strip()] if data.strip() else []
    values = data.values() if isinstance(data, dict) else data if isinstance(data, list) else []
    out: list[str] = []
    for value in values:
        out.extend(_strings(value) if isinstance(value, (str, list, dict)) else [])
    return out


def _line_entries(body: str) -> list[_Entry]:
    """One entry per list item or line; wrapped continuation lines joined; code-fence lines removed."""
    entries: list[_Entry] = []
    current: _Entry | None = None
    in_fence = excluding = False
    for raw in body.split("\n"):
        if _FENCE_LINE.match(raw):
            in_fence, current = not in_fence, None
            continue
        if not raw.strip():
            current = None  # a blank line ends an item: what follows is never its continuation
            continue
        indent = len(raw) - len(raw.lstrip())
        line = raw.strip()
        several = _several_quoted(line, in_fence)
        if several:  # a JSON array cut off by max_tokens, or two quoted options on one line
            entries.extend(several)
            current = None
            continue
        if line.startswith("|") and line.endswith("|") and len(line) > 1:
            entries.append(_table_row(line, in_fence))
            current = None
            continue
        probe = _BOLD.sub("", line).strip()
        marker = _MARKER.match(probe)
        if current is not None and marker is None and _continues(current, line, indent):
            current.text = f"{current.text.rstrip()} {line}"
            current.repairs.add("wrapped")
            continue
        entry = _Entry(line, numbered=bool(marker and marker.group("num")), indent=indent)
        heading = _heading_text(line)
        if heading is not None:
            excluding = bool(_EXCLUDING.match(heading))  # a new section starts here
        entry.excluded = excluding
        if marker is not None:
            entry.text = probe[marker.end():].strip()
            if probe != line:
                entry.repairs.add("emphasis")
        if in_fence:
            entry.repairs.add("fence")
        entries.append(entry)
        current = entry
    return entries


def _table_row(line: str, in_fence: bool) -> _Entry:
    """A markdown table row: the cell holding a template sentence is the entry; other rows are chatter."""
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    photo = next((cell for cell in cells if _PHOTO.search(cell)), None)
    if photo is None or all(_TABLE_RULE.match(cell) for cell in cells):
        return _Entry(" ".join(cells))
    return _Entry(photo, repairs={"table", "fence"} if in_fence else {"table"})


def _several_quoted(line: str, in_fence: bool) -> list[_Entry]:
    """One entry per quoted template sentence when a line holds two or more (``quotes`` repaired), plus the
    cut-off last one of a truncated JSON line (it keeps its opening quote, so it is dropped, not kept)."""
    found = list(_QUOTED.finditer(line))
    if len(found) < 2:
        return []
    repairs = {"quotes", "fence"} if in_fence else {"quotes"}
    entries = [_Entry((m.group("q") or m.group("s")).strip(), from_json=True, repairs=set(repairs)) for m in found]
    tail = line[found[-1].end():].strip(" ,]}")
    if _PHOTO.search(tail):
        entries.append(_Entry(tail, from_json=True))
    return entries


def _heading_text(line: str) -> str | None:
    """The words of a section heading ("### Removed", "**Kept:**", "Duplicates:"), or None."""
    bare = _BOLD.sub("", _HEADER.sub("", line)).strip()
    bare = _MARKER.sub("", bare, count=1).strip()
    if _PHOTO.search(bare):
        return None
    if _HEADER.match(line) or bare.endswith(":") or re.fullmatch(r"(\*\*|__)[^*_]+\1:?", line):
        return bare.rstrip(":").strip()
    return None


def _continues(current: _Entry, line: str, indent: int) -> bool:
    """``line`` carries on ``current``: the item is unfinished and the line is indented or lower-case."""
    tail = _BOLD.sub("", current.text).rstrip(" \"'”’*_")
    opening = _BOLD.sub("", line).lstrip("\"“‘'(* ")
    if not tail or tail[-1] in ".!?:;" or _HEADER.match(current.text) or _PHOTO.match(opening):
        return False
    return indent > current.indent or line[0].islower()


# -------------------------------------------------------------------------------------------- judge
def _judge(entry: _Entry, class_name: str, template: int) -> tuple[str, str]:
    """(verdict, cleaned text): verdict is ``kept``, ``chatter`` or a drop reason."""
    text = _repair_markdown(entry)
    text = _repair_label(text, entry)
    text = _repair_quotes(text, entry)
    text, slots = _repair_braces(text, class_name, entry)
    text = _repair_prefix(text, class_name, entry)
    text = text.rstrip(",").strip()
    if slots == "echo" or entry.excluded:
        return "chatter", text  # the template read back with its placeholders: not an attempt
    if not _PHOTO.search(text) and not ((entry.numbered or entry.from_json) and not _is_heading(text)):
        return "chatter", text
    if slots == "partial":
        return "off_template", text  # some slots filled, some left as placeholders: no safe repair
    if text[:1] in "\"“‘'":
        return "off_template", text  # an opening quote never closed: the item was cut off (max_tokens)
    check = follows_template1 if template == 1 else follows_template2
    if check(text, class_name):
        return "kept", text
    if normalise(text).startswith("a photo of the class ") and len(text) <= MAX_ITEM_CHARS:
        own = normalise(f"A photo of the class {class_name}")
        return ("off_template" if normalise(text).startswith(own + " ") or normalise(text) == own
                else "other_class"), text
    return "off_template", text


def _is_heading(text: str) -> bool:
    """A short unpunctuated line ("Winter coats", "red fox"): a heading or a JSON label, not an attempt."""
    return len(text.split()) <= _MAX_HEADING_WORDS and not text.rstrip().endswith((".", "!", "?"))


def _repair_markdown(entry: _Entry) -> str:
    text = entry.text.strip()
    new = _HEADER.sub("", text)
    new = _BOLD.sub("", new)
    new = _CODE.sub(r"\1", new)
    new = _ITALIC.sub(lambda m: m.group(1) or m.group(2), new)
    new = re.sub(r"\s{2,}", " ", new) if new != text else new
    if new != text:
        entry.repairs.add("emphasis")
    return new.strip()


def _repair_label(text: str, entry: _Entry) -> str:
    """Drop a short label before the sentence, or the talk around one quoted template sentence."""
    start = _PHOTO.search(text)
    if start is None:
        return text
    tagged = _TAGGED.match(text)
    if tagged is not None and _PHOTO.match(tagged.group("body")):
        entry.repairs.add("label")  # <answer>A photo of ...</answer>: the tag names the content
        text = tagged.group("body")
        start = _PHOTO.search(text)
        if start is None or start.start() == 0:
            return text
    quoted = _QUOTED.search(text)
    if quoted is not None and (text[: quoted.start()] + text[quoted.end():]).strip(" .,;:"):
        entry.repairs.add("label")  # talk around one quoted sentence: keep the sentence
        entry.excluded = entry.excluded or bool(_EXCLUDING.match(text[: quoted.start()].strip(" *_(")))
        return (quoted.group("q") or quoted.group("s")).strip()
    if start.start() == 0 or text[: start.start()].strip() in ('"', "“", "‘", "'", "("):
        return text
    label = _LABEL.match(text)
    if label is not None and len(label.group("label").split()) <= _MAX_LABEL_WORDS:
        entry.excluded = entry.excluded or bool(_EXCLUDING.match(label.group("label").strip(" *_(")))
        entry.repairs.add("label")
        return text[label.end():].strip()
    return text


def _repair_quotes(text: str, entry: _Entry) -> str:
    for left, right in _WRAP_QUOTES:
        if len(text) >= 2 and text.startswith(left):
            inner = text[1:]
            end = inner.rfind(right)
            # "…." or "…"." : the closing quote may sit before a final full stop.
            if end >= 0 and inner[end + 1:].strip() in ("", ".", ","):
                entry.repairs.add("quotes")
                stop = "." if inner[end + 1:].strip() == "." and not inner[:end].rstrip().endswith(".") else ""
                return inner[:end].strip() + stop
            if inner.count(right) == 0 and inner.rstrip().endswith((".", "!")):
                entry.repairs.add("quotes")  # an opening quote whose closing one the model forgot
                return inner.strip()
    return text


def _repair_braces(text: str, class_name: str, entry: _Entry) -> tuple[str, str]:
    """Fill-in braces removed: ``(text, "")``; ``"echo"`` when every slot is still a placeholder (the
    template read back), ``"partial"`` when only some are."""
    bracketed = re.compile(r"\[\s*" + re.escape(class_name) + r"\s*\]", re.IGNORECASE)
    new = bracketed.sub(class_name, text)
    if "{" in new or "}" in new:
        slots = [_PLACEHOLDER.match(slot.strip()) is not None for slot in re.findall(r"\{([^{}]*)\}", new)]
        if slots and all(slots):
            return text, "echo"
        if any(slots):
            return text, "partial"
        new = _BRACE_JOIN.sub(lambda m: _join(new, m), new)
        new = new.replace("{", "").replace("}", "")
        new = re.sub(r"\s+([,.;])", r"\1", re.sub(r"\s{2,}", " ", new)).strip()
    if new != text:
        entry.repairs.add("braces")
    return new, ""


def _join(text: str, match: re.Match[str]) -> str:
    following = text[match.end():].split(maxsplit=1)
    word = following[0].lower() if following else ""
    return " " if word in _PREPOSITIONS or word == "with" else ", "


def _repair_prefix(text: str, class_name: str, entry: _Entry) -> str:
    """ "A photo of a red fox, ..." -> "A photo of the class red fox, ..." (only for this exact class name)."""
    pattern = re.compile(r"^a\s+photo\s+of\s+(?:a|an|the)\s+(?=" + re.escape(class_name) + r"(?:\W|$))",
                         re.IGNORECASE)
    if normalise(text).startswith("a photo of the class ") or not pattern.match(text):
        return text
    entry.repairs.add("prefix")
    return pattern.sub("A photo of the class ", text, count=1)
