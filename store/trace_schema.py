"""The trace row: ``TraceRecord``, its SQLite columns, validation and SQL builders (pure, no I/O).

Split from ``store/traces.py`` so the I/O side stays small; import the public names from there.

Columns follow the OpenTelemetry GenAI semantic conventions where one exists (``gen_ai.*``,
``error.type``); ``gen_ai.response.finish_reasons`` holds this call's single finish reason as text.

Text stored once (``store/trace_text.py``): a row's ``encoding`` column says how its ``request`` and
``response_text`` are held: 0 inline (every row of an older file, and a row whose segment id collided), 1
packed, referring to lines in the ``segments`` table. ``PRAGMA user_version`` is :data:`FORMAT_VERSION` once a
file may hold packed rows. ``row_from_record`` gives the inline row (what the guards check); ``pack_row``
its packed form; ``record_from_row`` decodes either, given the bodies of the segments it refers to.

>>> COLUMNS["input_tokens"]
'gen_ai.usage.input_tokens'
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from store import trace_text
from store.errors import UsageError
from store.trace_text import INLINE, PACKED

OPERATIONS = ("chat", "image_generation")
# ok: answered. error: sent (attempts >= 1) and failed, or failed before it could be sent for a reason of its
# own (a bad input image). refused: our budget cap said no, nothing sent. stopped: a graceful stop came
# first, nothing sent. Unsent calls are never "error" (issue: one set of counts).
STATUSES = ("ok", "error", "refused", "stopped")
MAX_REQUEST_BYTES = 64 * 1024
# PRAGMA user_version of a traces.sqlite that may hold packed rows (0: an older file, every row inline).
FORMAT_VERSION = 1

# A data URI anywhere in the request text: ``data:image/png;base64,...`` or ``data:;base64,...``.
# The look-behind keeps words like "metadata:" from tripping it.
_DATA_URI_RE = re.compile(r"(?<![A-Za-z0-9_])data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*,", re.IGNORECASE)


class TraceStoreError(UsageError):
    """A trace store misuse or an unreadable trace file (one line: what, where, how to fix)."""


@dataclass(kw_only=True)
class TraceRecord:
    """One provider call. Only who/what is required; the rest default to an empty successful call."""

    run_id: str
    class_name: str
    node: str
    role: str
    operation: str  # "chat" | "image_generation"
    model: str
    round: int = 0
    request: dict[str, Any] = field(default_factory=dict)  # images as {"sha256": ...}, never bytes
    response_text: str | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    images: int = 0
    latency_s: float = 0.0  # the whole call, as the caller waited for it
    queue_s: float = 0.0  # of which: waiting for the role's limiter (in-flight slot, per-minute tokens)
    server_s: float = 0.0  # of which: requests on the wire, all attempts (the model server's latency)
    cache_hit: bool = False
    attempts: int = 0
    status: str = "ok"  # "ok" | "error"
    error: str | None = None
    error_kind: str | None = None
    parse_dropped: int | None = None
    cost_usd: float | None = None
    started_at: float = field(default_factory=time.time)
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Transport details, JSON: {"batch_id", "custom_id", ...} for the Batch API, {"gpu_s"} for a local
    # pipeline. Small, plain data only (same guard as ``request``).
    meta: dict[str, Any] = field(default_factory=dict)


# Field name -> SQLite column, in table order (the OpenTelemetry names where one exists).
_OTEL = {
    "operation": "gen_ai.operation.name",
    "model": "gen_ai.request.model",
    "finish_reason": "gen_ai.response.finish_reasons",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "error_kind": "error.type",
}
_ORDER = (
    "call_id", "run_id", "class_name", "node", "round", "role", "operation", "model", "request",
    "response_text", "finish_reason", "input_tokens", "output_tokens", "images", "latency_s",
    "cache_hit", "attempts", "status", "error", "error_kind", "parse_dropped", "cost_usd", "started_at",
    "queue_s", "server_s", "meta",
)
# Columns added after the first release: an older traces.sqlite gains them on open (ALTER TABLE), and a
# read-only reader of an older file sees their defaults.
ADDED_COLUMNS: dict[str, str] = {"queue_s": "0.0", "server_s": "0.0", "meta": "'{}'", "encoding": str(INLINE)}
COLUMNS: dict[str, str] = {name: _OTEL.get(name, name) for name in _ORDER}
assert set(_ORDER) == {f.name for f in fields(TraceRecord)}, "every TraceRecord field needs a column"
# What a row holds: the record's columns, then how its text is encoded (not a record field).
_STORED: dict[str, str] = {**COLUMNS, "encoding": "encoding"}

_FILTERS = ("call_id", "run_id", "class_name", "node", "status", "cache_hit", "round", "role",
            "operation", "model")
_SQL_TYPES = {"round": "INTEGER", "input_tokens": "INTEGER", "output_tokens": "INTEGER",
              "images": "INTEGER", "cache_hit": "INTEGER", "attempts": "INTEGER",
              "parse_dropped": "INTEGER", "latency_s": "REAL", "cost_usd": "REAL", "started_at": "REAL",
              "queue_s": "REAL", "server_s": "REAL", "encoding": "INTEGER"}


def _q(column: str) -> str:
    return f'"{column}"'


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS traces (\n"
    + ",\n".join(
        f"    {_q(col)} {_SQL_TYPES.get(name, 'TEXT')}{' PRIMARY KEY' if name == 'call_id' else ''}"
        for name, col in _STORED.items()
    )
    + "\n);\n"
    + trace_text.SEGMENTS_SCHEMA
    + "".join(
        f"CREATE INDEX IF NOT EXISTS traces_{name} ON traces ({_q(name)}, {_q('started_at')});\n"
        for name in ("run_id", "class_name", "node")
    )
)
# OR REPLACE makes a flush idempotent: a batch retried after an unclear failure cannot wedge the
# flusher on a primary-key conflict (call_ids are uuid4, so it never hides a real collision).
INSERT_SQL = (
    f"INSERT OR REPLACE INTO traces ({', '.join(_q(c) for c in _STORED.values())}) "
    f"VALUES ({', '.join('?' for _ in _STORED)})"
)
# Spend per class of one run (SUM / COUNT skip NULL costs: COUNT 0 = no row of the class is priced).
COST_BY_CLASS_SQL = (
    f"SELECT {_q('class_name')}, SUM({_q('cost_usd')}), COUNT({_q('cost_usd')}) FROM traces "
    f"WHERE {_q('run_id')} = ? GROUP BY {_q('class_name')} ORDER BY {_q('class_name')}"
)
# The calls of one run that left the process (agent/lifecycle/budget.py ``was_sent``: not a hit, not refused or
# stopped before sending) and carry a price: how many, and their sum. The budget's seed, one aggregate.
_WAS_SENT = (f"{_q('cache_hit')} = 0 AND COALESCE({_q('error.type')}, '') NOT IN ('budget', 'stopped') "
             f"AND NOT ({_q('status')} != 'ok' AND {_q('attempts')} = 0)")
SENT_SPEND_SQL = (f"SELECT COUNT(*), COALESCE(SUM({_q('cost_usd')}), 0.0) FROM traces WHERE {_q('run_id')} = ? "
                  f"AND {_WAS_SENT} AND {_q('cost_usd')} IS NOT NULL")
_SELECT = f"SELECT {', '.join(_q(c) for c in _STORED.values())} FROM traces"

# The one definition of a run's counts (counts_sql) (final line, summary.json, `agent.traces summary`, the report), per
# class and role. A row is one call the graph made:
#   cache_hits  answered from the call cache (nothing sent)
#   refused     refused by --max-cost / --max-calls before it was sent (status "refused")
#   stopped     not sent because a graceful stop came first (status "stopped")
#   sent        calls that left the process (not a hit, not refused or stopped, >= 1 attempt): billable
#   requests    HTTP requests those calls made, retries included (the sum of their attempts)
#   errors      sent calls that failed for good
#   tokens      usage reported for sent calls only (what was billed): chat and image calls apart
_SENT = f"({_q('cache_hit')} = 0 AND {_q('status')} IN ('ok', 'error') AND {_q('attempts')} > 0)"
_CHAT = f"{_q('gen_ai.operation.name')} = 'chat'"
COUNT_FIELDS = ("calls", "cache_hits", "refused", "stopped", "sent", "requests", "errors", "images",
                "chat_input_tokens", "chat_output_tokens", "image_input_tokens", "image_output_tokens")
_COUNTS_SELECT = (
    f"SELECT {_q('class_name')}, {_q('role')}, COUNT(*), SUM({_q('cache_hit')}), "
    f"SUM({_q('status')} = 'refused'), SUM({_q('status')} = 'stopped'), SUM({_SENT}), "
    f"SUM(CASE WHEN {_q('cache_hit')} = 0 THEN {_q('attempts')} ELSE 0 END), "
    f"SUM({_SENT} AND {_q('status')} = 'error'), SUM(CASE WHEN {_SENT} THEN {_q('images')} ELSE 0 END), "
    + ", ".join(f"SUM(CASE WHEN {_SENT} AND {'' if chat else 'NOT '}{_CHAT} THEN COALESCE({_q(col)}, 0) ELSE 0 END)"
                for chat in (True, False) for col in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"))
    + " FROM traces"
)


def counts_sql(filters: Mapping[str, Any], since: float = 0.0) -> tuple[str, list[Any]]:
    """The counts aggregate over rows matching ``filters`` (as :func:`select_sql`) started at or after
    ``since``, grouped by class and role."""
    where, params = _where(filters)
    clause = f"{where} AND " if where else " WHERE "
    return (f"{_COUNTS_SELECT}{clause}{_q('started_at')} >= ? GROUP BY {_q('class_name')}, {_q('role')} "
            f"ORDER BY {_q('class_name')}, {_q('role')}", [*params, since])


def counts_from_rows(rows: list[tuple[Any, ...]]) -> dict[str, dict[str, dict[str, int]]]:
    """``{class: {role: {count: n}}}`` from :func:`counts_sql`'s rows (see the definitions above it)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for class_name, role, *values in rows:
        out.setdefault(str(class_name), {})[str(role)] = {k: int(v or 0) for k, v in zip(COUNT_FIELDS, values,
                                                                                         strict=True)}
    return out


def sum_counts(parts: Any) -> dict[str, int]:
    """Add count dicts: ``sum_counts([{"sent": 1}, {"sent": 2, "calls": 3}])["sent"] -> 3``."""
    total = dict.fromkeys(COUNT_FIELDS, 0)
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + int(value)
    return total


def migrate_sql(present: set[str]) -> list[str]:
    """``ALTER TABLE`` statements adding the :data:`ADDED_COLUMNS` an older file lacks.

    >>> migrate_sql({"call_id"})[0]
    'ALTER TABLE traces ADD COLUMN "queue_s" REAL DEFAULT 0.0'
    """
    return [f"ALTER TABLE traces ADD COLUMN {_q(_STORED[name])} {_SQL_TYPES.get(name, 'TEXT')} DEFAULT {default}"
            for name, default in ADDED_COLUMNS.items() if _STORED[name] not in present]


def select_for(present: set[str] | None, sql: str) -> str:
    """``sql`` (from :func:`select_sql`) reading an older file: missing added columns read as defaults."""
    if present is None:
        return sql
    for name, default in ADDED_COLUMNS.items():
        if _STORED[name] not in present:
            sql = sql.replace(f"{_q(_STORED[name])}", f"{default} AS {_q(_STORED[name])}", 1)
    return sql


def row_from_record(record: TraceRecord) -> dict[str, Any]:
    """Validate ``record`` and return its inline column -> value row (``request`` as JSON text).

    Raises ``ValueError`` for a request with a ``data:`` URI or over 64 KB, or an invalid field.
    """
    problem = _record_problem(record)
    if problem:
        raise ValueError(f"trace {record.call_id} ({record.run_id}/{record.class_name}/{record.node}): {problem}")
    request_text = _request_json(record)
    meta_text = _meta_json(record)
    row: dict[str, Any] = {}
    for name, column in COLUMNS.items():
        value = getattr(record, name)
        if name == "request":
            value = request_text
        elif name == "meta":
            value = meta_text
        elif name == "cache_hit":
            value = int(bool(value))
        row[column] = value
    row["encoding"] = INLINE
    return row


def pack_row(row: Mapping[str, Any]) -> tuple[dict[str, Any], trace_text.Segments]:
    """The packed form of an inline row (from :func:`row_from_record`) and the segments it refers to.

    >>> packed, segments = pack_row(row_from_record(TraceRecord(run_id="r", class_name="c", node="n",
    ...     role="llm", operation="chat", model="m", response_text="1. A photo of the class c, at dawn.")))
    >>> packed["response_text"][:5], packed["encoding"], [body for _, body in segments.values()]
    ('~@1. ', 1, ['A photo of the class c, at dawn.'])
    """
    segments: trace_text.Segments = {}
    packed = dict(row)
    packed["request"] = trace_text.pack_json(row["request"], segments)
    if row["response_text"] is not None:
        packed["response_text"] = trace_text.pack_text(row["response_text"], segments)
    packed["encoding"] = PACKED
    return packed, segments


def row_tokens(row: tuple[Any, ...]) -> set[str]:
    """The segment tokens a row selected in stored order may refer to (none for an inline row)."""
    if row[-1] != PACKED:
        return set()
    values = dict(zip(_STORED, row, strict=True))
    return trace_text.tokens_in(values["request"]) | trace_text.tokens_in(values["response_text"])


def record_from_row(row: tuple[Any, ...], bodies: Mapping[str, str] | None = None,
                    memo: dict[str, str] | None = None) -> TraceRecord:
    """The inverse of ``row_from_record`` / ``pack_row`` for a row selected in stored order, given the
    ``bodies`` (by token) of the segments :func:`row_tokens` names (one missing: ``trace_text.SegmentError``);
    ``memo``, one per read, decodes each distinct packed text once."""
    values = dict(zip(_STORED, row, strict=True))
    encoding = values.pop("encoding")
    if encoding == PACKED:
        request = trace_text.unpack_json(values["request"], bodies or {}, memo) if values["request"] else ""
        values["request"] = json.loads(request) if request else {}
        packed = values["response_text"]
        if packed is not None and packed.startswith("~"):  # else it is the text itself
            # memo keys: packed texts start with ~, the request's JSON literals with a quote: never confused.
            reply = memo.get(packed) if memo is not None else None
            if reply is None:
                reply = trace_text.unpack_text(packed, bodies or {})
                if memo is not None:
                    memo[packed] = reply
            values["response_text"] = reply
    elif encoding not in (INLINE, None):
        raise TraceStoreError(f"traces: row {values['call_id']} has text encoding {encoding!r}, which this "
                              "ltgc does not know; read the file with the ltgc that wrote it")
    else:
        values["request"] = json.loads(values["request"]) if values["request"] else {}
    values["meta"] = json.loads(values["meta"]) if values["meta"] else {}
    values["cache_hit"] = bool(values["cache_hit"])
    return TraceRecord(**values)


def replace_fields(record: TraceRecord, changes: Mapping[str, Any]) -> TraceRecord:
    """``record`` with ``changes`` applied; ``ValueError`` for unknown fields or ``call_id``."""
    unknown = sorted(set(changes) - set(COLUMNS))
    if unknown:
        raise ValueError(f"traces: unknown field(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    if "call_id" in changes:
        raise ValueError("traces: call_id cannot be changed")
    return dataclasses.replace(record, **dict(changes))


def update_sql(call_id: str, current: TraceRecord, changes: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``UPDATE`` setting ``changes`` on ``current`` (validated as a whole record first)."""
    row = row_from_record(replace_fields(current, changes))
    names = list(changes)
    if {"request", "response_text"} & set(names):  # new text is written inline (rare: no segment upkeep)
        names = [*dict.fromkeys([*names, "request", "response_text", "encoding"])]
    columns = [_STORED[name] for name in names]
    sql = f"UPDATE traces SET {', '.join(f'{_q(c)} = ?' for c in columns)} WHERE {_q('call_id')} = ?"
    return sql, [row[c] for c in columns] + [call_id]


def cost_sql(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Per class, ``SUM(cost_usd)`` of the rows matching ``filters`` that carry a price.

    >>> cost_sql({"run_id": "r1"})[1]
    ['r1']
    """
    where, params = _where(filters)
    where = f"{where} AND " if where else " WHERE "
    return (f"SELECT {_q('class_name')}, SUM({_q('cost_usd')}) FROM traces{where}{_q('cost_usd')} IS NOT NULL "
            f"GROUP BY {_q('class_name')}", params)


def select_sql(filters: Mapping[str, Any], *, unpriced: bool = False) -> tuple[str, list[Any]]:
    """``SELECT`` of every column where each non-``None`` filter matches (and, with ``unpriced``, whose
    ``cost_usd`` is NULL), ordered by start then id.

    >>> select_sql({"run_id": "r1", "node": None})[1]
    ['r1']
    """
    where, params = _where(filters)
    if unpriced:
        where = f"{where} AND " if where else " WHERE "
        where += f"{_q('cost_usd')} IS NULL"
    return f"{_SELECT}{where} ORDER BY {_q('started_at')}, {_q('call_id')}", params


def _where(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    unknown = sorted(set(filters) - set(_FILTERS))
    if unknown:
        raise TraceStoreError(
            f"traces: cannot filter on {', '.join(unknown)}; filters are {', '.join(_FILTERS)}"
        )
    clauses: list[str] = []
    params: list[Any] = []
    for name, value in filters.items():
        if value is None:
            continue
        clauses.append(f"{_q(COLUMNS[name])} = ?")
        params.append(int(value) if name == "cache_hit" else value)
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _request_json(record: TraceRecord) -> str:
    try:
        text = json.dumps(record.request, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"trace {record.call_id}: request is not plain JSON ({exc})") from None
    size = len(text.encode("utf-8"))
    if size > MAX_REQUEST_BYTES:
        raise ValueError(
            f"trace {record.call_id}: request is {size} bytes of JSON (limit {MAX_REQUEST_BYTES}); "
            "store images as {'sha256': ...} and keep prompts out of bulk data"
        )
    # The substring test first: the regex costs ~45 us on a 1 KB request, the test ~2 us (once per call).
    if "data:" in text.casefold() and _DATA_URI_RE.search(text):
        raise ValueError(
            f"trace {record.call_id}: request contains a data: URI; traces hold image hashes "
            "({'sha256': ...}), never image bytes"
        )
    return text


def _meta_json(record: TraceRecord) -> str:
    if not isinstance(record.meta, Mapping):
        raise ValueError(f"trace {record.call_id}: meta must be a dict, got {type(record.meta).__name__}")
    try:
        text = json.dumps(record.meta, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"trace {record.call_id}: meta is not plain JSON ({exc})") from None
    if len(text) > 4096 or ("data:" in text.casefold() and _DATA_URI_RE.search(text)):
        raise ValueError(f"trace {record.call_id}: meta must be small plain data (<= 4 KB, no data: URIs)")
    return text


def _is_count(value: object, *, optional: bool) -> bool:
    if value is None:
        return optional
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _record_problem(r: TraceRecord) -> str | None:
    checks: list[tuple[bool, str]] = [
        (r.operation in OPERATIONS, f"operation must be one of {', '.join(OPERATIONS)}, got {r.operation!r}"),
        (r.status in STATUSES, f"status must be one of {', '.join(STATUSES)}, got {r.status!r}"),
        (isinstance(r.request, Mapping), f"request must be a dict, got {type(r.request).__name__}"),
        (all(isinstance(getattr(r, k), str) and getattr(r, k) for k in ("run_id", "node", "role", "model",
                                                                        "call_id")),
         "run_id, node, role, model and call_id must be non-empty strings"),
        (isinstance(r.class_name, str), "class_name must be a string"),
        (_is_count(r.round, optional=False), f"round must be an integer >= 0, got {r.round!r}"),
        (all(_is_count(getattr(r, k), optional=True) for k in ("input_tokens", "output_tokens",
                                                               "parse_dropped")),
         "input_tokens, output_tokens and parse_dropped must be integers >= 0 or None"),
        (_is_count(r.images, optional=False) and _is_count(r.attempts, optional=False),
         "images and attempts must be integers >= 0"),
    ]
    for ok, reason in checks:
        if not ok:
            return reason
    return None
