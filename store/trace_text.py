"""Trace text stored once: content-addressed segments for a trace row's request and reply (pure, no I/O).

A run's prompts and replies repeat each other: a render prompt is one line of an earlier extend reply,
extend / dedupe / summarize requests quote earlier descriptions line by line, template lines repeat per
class, and a warm rerun repeats every request and reply exactly. So ``traces.sqlite`` keeps each distinct
line once, in ``segments(h INTEGER PRIMARY KEY, body TEXT)``, and a row refers to its lines by id.

Segments. A text is split on ``"\\n"`` into lines (``"\\r"`` stays part of its line, so ``"\\r\\n"``
and a trailing newline round-trip), and a leading list marker (``1. ``, ``12) ``, ``- ``, ``* ``) is split
off each line: ``"3. A photo of X."`` in a reply and ``"A photo of X."`` in a later render prompt share the
segment ``"A photo of X."``. A line body of at least :data:`MIN_SEGMENT` characters becomes a segment; its
id ``h`` is the first 8 bytes of its UTF-8 sha256 as a signed big-endian integer (SQLite's INTEGER), and
its token in a row is those 8 bytes in unpadded URL-safe base64 (11 characters).

Packed string (one string value; the row's ``encoding`` column is :data:`PACKED`):

- A string not starting with ``~`` is itself (every short string, and a long one with no segment).
- ``~~rest`` is the literal ``~rest`` (a string of the original that starts with ``~``: the escape).
- ``~`` followed by lines joined with ``"\\n"``, each line either ``=text`` (that line as is) or
  ``@`` + marker + token (the marker then the segment's body). The original lines hold no ``"\\n"``, so
  the join is unambiguous, and ``@``/``=`` cannot be confused with the ``~`` escape.

A row's ``request`` column holds the request's JSON with every string value (at any depth; keys are left
as they are) packed, and ``response_text`` holds the packed reply. On the (astronomically unlikely)
collision of two different bodies on one id, the writer stores that row's text inline (``encoding`` =
:data:`INLINE`): a reader never gets wrong text back.

>>> segments = {}
>>> packed = pack_text("1. A photo of the class fox, by a river.\\nok", segments)
>>> packed
'~@1. FN-E-plc7Zs\\n=ok'
>>> unpack_text(packed, {token(h): body for h, (_, body) in segments.items()})
'1. A photo of the class fox, by a river.\\nok'
>>> pack_text("~short", {}), unpack_text("~~short", {})
('~~short', '~short')
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

INLINE, PACKED = 0, 1  # the row's ``encoding`` column: 0 = text inline (every row of an older file)
MIN_SEGMENT = 20  # a line body shorter than this stays in the row: its 12-byte reference saves too little
_TAG = "~"
_MARKER_RE = re.compile(r"(?:\d{1,4}[.)]|[-*]) ")
_TOKEN_LEN = 11

# A segment as the packer sees it: id -> (a second 64-bit check from the same sha256, body).
Segments = dict[int, tuple[int, str]]

SEGMENTS_SCHEMA = "CREATE TABLE IF NOT EXISTS segments (h INTEGER PRIMARY KEY, body TEXT NOT NULL);\n"
# Segments are content-addressed: a second insert of one id is the same body (or a collision the writer
# has already turned into an inline row), so IGNORE.
INSERT_SEGMENT_SQL = "INSERT OR IGNORE INTO segments (h, body) VALUES (?, ?)"
SEGMENT_BATCH = 500  # ids per SELECT ... IN (...): under SQLite's oldest bound-parameter limit (999)


def segments_sql(count: int) -> str:
    """``SELECT`` of ``count`` segments by id.

    >>> segments_sql(2)
    'SELECT h, body FROM segments WHERE h IN (?, ?)'
    """
    return f"SELECT h, body FROM segments WHERE h IN ({', '.join('?' for _ in range(count))})"


class SegmentError(ValueError):
    """A packed text that does not decode: a missing segment or a malformed token (a damaged file)."""


def segment_id(body: str) -> tuple[int, int]:
    """``(id, check)``: the first and second 8 bytes of ``body``'s UTF-8 sha256, as signed integers.

    >>> segment_id("A photo of X.")[0] == segment_id("A photo of X.")[0] != segment_id("A photo of Y.")[0]
    True
    """
    digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big", signed=True), int.from_bytes(digest[8:16], "big", signed=True)


def token(h: int) -> str:
    """The 11-character reference to segment ``h``.

    >>> token(0), from_token(token(-5))
    ('AAAAAAAAAAA', -5)
    """
    return base64.urlsafe_b64encode(h.to_bytes(8, "big", signed=True)).decode("ascii").rstrip("=")


def from_token(text: str) -> int:
    """The segment id of a token (:func:`token`'s inverse); :class:`SegmentError` for a malformed one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (ValueError, TypeError):
        raw = b""
    if len(text) != _TOKEN_LEN or len(raw) != 8:
        raise SegmentError(f"malformed segment token {text!r}")
    return int.from_bytes(raw, "big", signed=True)


def pack_text(text: str, segments: Segments) -> str:
    """``text`` packed (see the module docstring); the segments it refers to are added to ``segments``.

    >>> s = {}
    >>> pack_text("", s), pack_text("tiny", s), pack_text("~", s), s
    ('', 'tiny', '~~', {})
    >>> pack_text("- " + "x" * 20 + "\\r\\n", s).startswith("~@- ")
    True
    """
    if len(text) < MIN_SEGMENT:
        return _TAG + text if text.startswith(_TAG) else text
    lines: list[str] = []
    referred = False
    for line in text.split("\n"):
        marker = _MARKER_RE.match(line)
        cut = marker.end() if marker else 0
        body = line[cut:]
        if len(body) < MIN_SEGMENT:
            lines.append("=" + line)
            continue
        h, check, ref = _reference(body)
        segments[h] = (check, body)
        lines.append(f"@{line[:cut]}{ref}")
        referred = True
    if not referred:
        return _TAG + text if text.startswith(_TAG) else text
    return _TAG + "\n".join(lines)


@functools.lru_cache(maxsize=1 << 14)
def _reference(body: str) -> tuple[int, int, str]:
    # A line recurs in many rows (a reply line is quoted by the next requests, a warm rerun repeats all):
    # hash it once while it is hot. ~16k lines of ~100 characters: a few MB at most.
    h, check = segment_id(body)
    return h, check, token(h)


def unpack_text(packed: str, bodies: Mapping[str, str]) -> str:
    r"""The original text of ``packed``, given segment ``bodies`` by token; :class:`SegmentError` names a
    missing segment or a bad line.

    >>> unpack_text("plain", {}), unpack_text("~~x", {}), unpack_text("~=a\n@- AAAAAAAAAAA", {"AAAAAAAAAAA": "b"})
    ('plain', '~x', 'a\n- b')
    """
    if not packed.startswith(_TAG):
        return packed
    rest = packed[1:]
    if rest.startswith(_TAG):
        return rest
    out: list[str] = []
    for line in rest.split("\n"):
        kind = line[:1]
        if kind == "=":
            out.append(line[1:])
        elif kind == "@" and len(line) > _TOKEN_LEN:
            body = bodies.get(line[-_TOKEN_LEN:])
            if body is None:
                raise SegmentError(f"text segment {line[-_TOKEN_LEN:]} is missing")
            out.append(line[1:-_TOKEN_LEN] + body)
        else:
            raise SegmentError(f"malformed packed line {line[:20]!r}")
    return "\n".join(out)


# A reference as a stored column holds it (a packed text, or the JSON text of a packed request): "@", a
# marker, the token, then the line's end: a newline, JSON's escaped one, the string's closing quote or the
# end. Literal text of that shape is found too; it only costs a lookup that finds nothing.
_REF_RE = re.compile(r'@(?:\d{1,4}[.)] |[-*] )?([A-Za-z0-9_-]{11})(?=\\n|\n|"|$)')
# A JSON string literal that starts with ~ (a fake one may start at an escaped quote: unpack_json skips it).
_PACKED_STRING_RE = re.compile(r'"~[^"\\]*(?:\\.[^"\\]*)*"')


def tokens_in(stored: str | None) -> set[str]:
    r"""The tokens a stored ``request`` or ``response_text`` may refer to: a scan of the raw text, no
    parsing (a superset: every real reference is found).

    >>> sorted(tokens_in('{"p": "~@1. AAAAAAAAAAA\\n@BBBBBBBBBBB", "q": "x"}')), tokens_in(None)
    (['AAAAAAAAAAA', 'BBBBBBBBBBB'], set())
    """
    if not stored or "@" not in stored:
        return set()
    return set(_REF_RE.findall(stored))


def ids_of(tokens: Iterable[str]) -> dict[int, str]:
    """Segment id -> token for each well-formed token (literal look-alikes that are not are skipped)."""
    out: dict[int, str] = {}
    for text in tokens:
        with contextlib.suppress(SegmentError):
            out[from_token(text)] = text
    return out


def pack_json(request_text: str, segments: Segments) -> str:
    """A request's canonical JSON text with every string value packed (keys as they are).

    >>> pack_json('{"n": 1, "prompt": "short"}', {})
    '{"n": 1, "prompt": "short"}'
    """
    tree = _map_strings(json.loads(request_text), lambda s: pack_text(s, segments))
    return json.dumps(tree, sort_keys=True, ensure_ascii=False, allow_nan=False)


def unpack_json(packed: str, bodies: Mapping[str, str], memo: dict[str, str] | None = None) -> str:
    r"""The original JSON text of a packed request (:func:`pack_json`'s inverse), without parsing it.

    A string value that starts with ``~`` begins ``"~`` in the JSON text, after an even number of
    backslashes (inside a string a quote is escaped: odd), and is not followed by ``:`` (a key, never
    packed). Each is unpacked and written back as ``json.dumps`` writes it, so the result is the original
    text byte for byte. ``memo`` (one per read) keeps each distinct string's result: a warm rerun's rows
    repeat the earlier ones exactly.

    >>> unpack_json('{"~k": "~~v", "p": ["~@AAAAAAAAAAA", "a \\"~b"]}', {"AAAAAAAAAAA": 'a "b"'})
    '{"~k": "~v", "p": ["a \\"b\\"", "a \\"~b"]}'
    """
    if '"~' not in packed:
        return packed
    out: list[str] = []
    done = 0
    for match in _PACKED_STRING_RE.finditer(packed):
        start, end = match.span()
        first = start
        while first and packed[first - 1] == "\\":
            first -= 1
        if (start - first) % 2 or packed.startswith(":", end):
            continue  # an escaped quote inside a string, or a key
        literal = match.group(0)
        restored = memo.get(literal) if memo is not None else None
        if restored is None:
            restored = json.dumps(unpack_text(json.loads(literal), bodies), ensure_ascii=False)
            if memo is not None:
                memo[literal] = restored
        out += [packed[done:start], restored]
        done = end
    out.append(packed[done:])
    return "".join(out)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


class RecentSegments:
    """A bounded memory of segments known to be in the file (id -> check), least recently used out first,
    so a hot segment (a template line, a reply quoted by every later request) is not re-sent every flush.

    >>> recent = RecentSegments(limit=2)
    >>> recent.add({1: 10, 2: 20, 3: 30}); recent.get(1), recent.get(3)
    (None, 30)
    """

    def __init__(self, limit: int = 1 << 16):
        self.limit = limit
        self._known: OrderedDict[int, int] = OrderedDict()

    def get(self, h: int) -> int | None:
        check = self._known.get(h)
        if check is not None:
            self._known.move_to_end(h)
        return check

    def add(self, checks: Mapping[int, int]) -> None:
        for h, check in checks.items():
            self._known[h] = check
            self._known.move_to_end(h)
        while len(self._known) > self.limit:
            self._known.popitem(last=False)


Pending = tuple[dict[str, Any], dict[str, Any], Segments]  # (inline row, packed row, its segments)


def settle(pending: Iterable[Pending], recent: RecentSegments,
           stored: Mapping[int, str]) -> tuple[list[dict[str, Any]], dict[int, str], dict[int, int]]:
    """Which form of each row to write, given the ``recent`` segments and the ``stored`` bodies of the
    other ids the batch refers to: ``(rows, new segments to insert, id -> check now known stored)``.

    A row is written packed unless one of its ids already stands for a different body (in ``recent``, in
    the file, or earlier in this batch): then inline, so no reader is ever handed another text.

    >>> a = {"t": "a", "encoding": INLINE}; pa = {"t": "~@...", "encoding": PACKED}
    >>> rows, new, known = settle([(a, pa, {7: (1, "body one")}), (a, pa, {7: (2, "body two")})],
    ...                           RecentSegments(), {})
    >>> [r["encoding"] for r in rows], new, known
    ([1, 0], {7: 'body one'}, {7: 1})
    """
    # id -> (check, body): the body the id stands for; check None when only the file's body is known.
    claimed: dict[int, tuple[int | None, str]] = {}
    rows: list[dict[str, Any]] = []
    new: dict[int, str] = {}
    for inline, packed, segments in pending:
        agrees = True
        for h, (check, body) in segments.items():
            known = recent.get(h)
            if known is not None:
                agrees = agrees and known == check
                continue
            if h in stored:
                claimed.setdefault(h, (check if stored[h] == body else None, stored[h]))
            elif h not in claimed:
                new[h] = body
            agrees = claimed.setdefault(h, (check, body))[1] == body and agrees
        rows.append(packed if agrees else inline)
    return rows, new, {h: check for h, (check, _) in claimed.items() if check is not None}
