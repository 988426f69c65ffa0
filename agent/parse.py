"""Pure parsing of model text: lists, normalisation, and the paper's two template checks.

Contract (docs/INTERFACES.md, ``agent/parse.py``): no I/O, no state, deterministic.

- ``parse_list(text)`` splits an LLM answer into items, whatever list style the model chose: numbered
  (``1.``, ``2)``, ``(3)``), bulleted (``-``, ``*``, ``•``), a JSON array, or plain lines. Numbering,
  bullets and wrapping quotes are stripped; blank lines are dropped.
- ``normalise(text)`` is the comparison key used by the repetition check: case, accents-as-written,
  punctuation and whitespace differences do not make two descriptions different.
- ``follows_template1`` / ``follows_template2`` check the paper's Template 1 ("A photo of the class [y],
  {with distinctive features}{in specific scenes}.") and Template 2 ("A photo of the class [y] with
  {feature 1}{feature 2}{...}.") on normalised text, so a model's punctuation quirks are tolerated but a
  sentence about another class, or with nothing after the class name, is not.

>>> parse_list('1. A photo of the class fox, red.\\n2) "A photo of the class fox, in snow."')
['A photo of the class fox, red.', 'A photo of the class fox, in snow.']
>>> normalise("  A Photo of the class FOX,   red! ")
'a photo of the class fox red'
>>> follows_template1("A photo of the class fox, with a bushy tail.", "fox")
True
>>> follows_template1("A photo of the class fox.", "fox")
False
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable

__all__ = [
    "first_following",
    "follows_template1",
    "follows_template2",
    "near_duplicate",
    "normalise",
    "parse_list",
    "signature",
    "similar",
]

# "1." "12)" "(3)" "3:" "#4" "Item 5:" at the start of a line; bullets "-", "*", "•", "–".
_MARKER = re.compile(r"^\s*(?:(?:item\s*)?#?\(?\d{1,4}[.):\]]|[-*•–·]|\(?[a-z]\))\s+", re.IGNORECASE)
_QUOTES = "\"'“”‘’`"
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
# A description longer than this is not "one sentence"; it is usually several items run together.
MAX_ITEM_CHARS = 400


def parse_list(text: str) -> list[str]:
    """Items of an LLM list answer, in order (see the module docstring for the accepted styles)."""
    stripped = text.strip()
    as_json = _json_list(stripped)
    if as_json is not None:
        return as_json
    items: list[str] = []
    for line in stripped.splitlines():
        item = _clean_item(line)
        if item:
            items.append(item)
    return items


def normalise(text: str) -> str:
    """Comparison key: NFKC, case-folded, every run of punctuation/whitespace turned into one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", folded).strip()


def follows_template1(text: str, class_name: str) -> bool:
    """True for "A photo of the class <y>, <something>." (one sentence, something after the name)."""
    return _follows(text, class_name, joiner="", max_chars=MAX_ITEM_CHARS)


def follows_template2(text: str, class_name: str) -> bool:
    """True for "A photo of the class <y> with <features>." (one sentence, features after "with")."""
    # No length cap: an over-long C_y is still the model's summary; summarize records CLIP's truncation.
    return _follows(text, class_name, joiner="with", max_chars=None)


def first_following(items: Iterable[str], class_name: str, *, template: int = 1) -> str | None:
    """The first item that follows Template ``template`` (1 or 2), or ``None``.

    >>> first_following(["Sure!", "A photo of the class fox, in snow."], "fox")
    'A photo of the class fox, in snow.'
    """
    check = follows_template1 if template == 1 else follows_template2
    for item in items:
        if check(item, class_name):
            return item
    return None


def near_duplicate(a: str, b: str, *, jaccard: float = 0.9) -> bool:
    """Exact or near-exact duplicates: equal after ``normalise``, or word sets overlapping >= ``jaccard``.

    The word-set test catches reorderings and a changed article ("in the snow" / "in snow") while two
    descriptions that differ by a real feature ("red fur" / "grey fur") stay distinct for short texts.

    >>> near_duplicate("A photo of the class fox, in the snow.", "a photo of the class fox in snow")
    True
    >>> near_duplicate("A photo of the class fox, red fur.", "A photo of the class fox, grey fur.")
    False
    """
    return similar(signature(a), signature(b), jaccard=jaccard)


Signature = tuple[str, frozenset[str]]


def signature(text: str) -> Signature:
    """What near-duplicate checks compare: the normalised text and its content words (computed once)."""
    norm = normalise(text)
    return norm, frozenset(norm.split()) - _STOPWORDS


def similar(a: Signature, b: Signature, *, jaccard: float = 0.9) -> bool:
    """``near_duplicate`` on precomputed signatures (O(words), for O(n^2) scans of long lists)."""
    if a[0] == b[0]:
        return True
    if not a[1] or not b[1]:
        return False
    return len(a[1] & b[1]) / len(a[1] | b[1]) >= jaccard


# Articles and linking words: their presence or absence never makes two descriptions different.
_STOPWORDS = frozenset({"a", "an", "the", "of", "and", "with", "in", "on", "at", "its", "it", "is"})


def _follows(text: str, class_name: str, *, joiner: str, max_chars: int | None) -> bool:
    if not text or (max_chars is not None and len(text) > max_chars) or "\n" in text.strip():
        return False
    prefix = normalise(f"A photo of the class {class_name} {joiner}")
    body = normalise(text)
    if not body.startswith(prefix + " "):
        return False
    # Something real must follow: Template 1/2 describe features or scenes after the class name.
    return bool(body[len(prefix):].strip())


def _clean_item(line: str) -> str:
    item = line.strip()
    # Markdown emphasis around a whole item ("**1. A photo ...**") is presentation, not content.
    item = item.strip("*_ ").strip() if item.startswith(("**", "__")) else item
    item = _MARKER.sub("", item, count=1).strip()
    if len(item) >= 2 and item[0] in _QUOTES and item[-1] in _QUOTES:
        item = item[1:-1].strip()
    elif item and item[0] in _QUOTES and item.count(item[0]) == 1:
        item = item[1:].strip()  # an opening quote whose closing one the model forgot
    return item.rstrip(",").strip()


def _json_list(text: str) -> list[str] | None:
    """A JSON array of strings (possibly inside a ```json fence), or None when the text is not one."""
    body = text
    if body.startswith("```"):
        body = body.strip("`")
        body = body[4:] if body.lower().startswith("json") else body
        body = body.strip()
    if not body.startswith("["):
        return None
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        return None
    return [x.strip() for x in data if x.strip()]
