"""Pure text checks: normalisation, the paper's two template checks, near-duplicates.

Contract (docs/INTERFACES.md, ``agent/graph/checks.py``): no I/O, no state, deterministic. Reading a model's whole
reply (lists, markdown, labels, JSON, ...) is ``agent/graph/reply.py``, which uses these checks.

- ``normalise(text)`` is the comparison key used by the repetition check: case, accents-as-written,
  punctuation and whitespace differences do not make two descriptions different.
- ``follows_template1`` / ``follows_template2`` check the paper's Template 1 ("A photo of the class [y],
  {with distinctive features}{in specific scenes}.") and Template 2 ("A photo of the class [y] with
  {feature 1}{feature 2}{...}.") on normalised text, so a model's punctuation quirks are tolerated but a
  sentence about another class, or with nothing after the class name, is not.

>>> normalise("  A Photo of the class FOX,   red! ")
'a photo of the class fox red'
>>> follows_template1("A photo of the class fox, with a bushy tail.", "fox")
True
>>> follows_template1("A photo of the class fox.", "fox")
False
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_ITEM_CHARS", "follows_template1", "follows_template2", "near_duplicate", "normalise", "signature",
           "similar"]

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
# A description longer than this is not "one sentence"; it is usually several items run together.
MAX_ITEM_CHARS = 400


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
