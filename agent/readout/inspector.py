"""The trace inspector: ``python -m agent.traces RUN_DIR summary|calls|show CALL_ID|export|status|batches``.

Contract:

- Reads a run folder without changing it: ``traces.sqlite`` through ``store.traces.read_traces``
  (read-only), ``summary.json`` / ``config.json`` when present, and ``checkpoints.sqlite`` read-only through
  ``agent.readout.status`` (``status``; strict and read-only; works on a running or a killed run).
- ``summary``: per class — state, calls per role (with cache hits), tokens, cost, accepted / rejected,
  missing (per reason: a ``short`` class), rounds, warnings — plus a total row. ``calls``: one row per call, filtered by ``--class``, ``--node``,
  ``--role``, ``--status ok|error``, ``--cache-hit`` / ``--no-cache-hit``, ``--round``. ``show CALL_ID``
  (or a unique prefix): full prompt, response, timings, attempts, error. ``export --format jsonl``: one
  JSON object per (filtered) call; ``--format csv``: a header row (:data:`CSV_FIELDS`), then one row per
  call (nested values as JSON text). ``status``: per class — done, last node, next node(s), and what is
  missing (``short`` classes, per reason).
- Tables are rich tables on stdout; ``--json`` prints the same data as JSON instead (one document; JSON
  lines for ``export``). Exit codes: 0 ok, 2 bad input (missing folder, unknown call id) with one line.
- Calls whose trace row has no ``cost_usd`` are priced from the price table (``--prices FILE`` or the
  packaged one); a model with no price shows as unknown cost, never as 0.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("agent.traces", "the run folder was not changed")

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.batch.cli import age_text, batch_rows, cancel_live
from agent.errors import entry_point
from agent.lifecycle.folder import RunFolder, read_json
from agent.lifecycle.lock import holder
from agent.readout.cost import PriceTable, load_prices
from agent.readout.status import InspectError, status_rows
from store.cli import OneLineParser
from store.logs import cli_logging
from store.trace_schema import sum_counts
from store.traces import TraceRecord, iter_traces, read_costs, read_counts, read_traces

__all__ = ["CSV_FIELDS", "call_cost", "class_costs", "main"]

# The columns of `export --format csv`: every field of a trace row, then the derived ones (_record_json).
CSV_FIELDS = (*(f.name for f in fields(TraceRecord)), "started", "prompt")


@entry_point  # InspectError, TraceStoreError, PricesError, a tampered checkpoint: one line, exit 2 (agent/errors.py)
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cli_logging()  # warnings in our words, once; never Python's "WARNING:root:" default
    try:
        return int(_COMMANDS[args.command](args) or 0)
    except BrokenPipeError:  # `... | head`: the reader left, nothing is wrong
        return 0


# ------------------------------------------------------------------------------------ commands
def cmd_summary(args: argparse.Namespace) -> int:
    prices = _prices(args)
    run = RunFolder(args.run_dir)
    filters = _filters(args)
    summary = read_json(run.summary, error=InspectError).get("classes", {})
    counts = read_counts(run.traces, **filters)
    # Recorded costs summed in SQL; only rows without one are read (and priced now): 10^5 rows stay on disk.
    costs = class_costs(iter_traces(run.traces, unpriced=True, **filters), prices,
                        recorded=read_costs(run.traces, **filters))
    rows = _summary_rows(costs, counts, summary)
    if args.json:
        _print_json({"run_dir": str(args.run_dir), "classes": rows, "total": _total_row(rows)})
        return 0
    table = _table(f"run {args.run_dir}: calls per role (requests sent, cache hits, refused by the budget, "
                   "stopped unsent, failed)",
                   ["class", "state", "lmm", "llm", "t2i", "tokens in", "tokens out", "cost USD", "accepted",
                    "rejected", "missing", "rounds", "warnings"])
    for row in [*rows, _total_row(rows)]:
        calls = row["calls"]
        table.add_row(row["class_name"], row["state"], *(_calls_text(calls.get(r)) for r in ("lmm", "llm", "t2i")),
                      f"{row['input_tokens']:,}", f"{row['output_tokens']:,}", _money(row["cost_usd"]),
                      *(_dash(row.get(k)) for k in ("accepted", "rejected")), _missing_text(row),
                      *(_dash(row.get(k)) for k in ("rounds", "warnings")))
    _print(table)
    return 0


def cmd_calls(args: argparse.Namespace) -> int:
    records = _records(args)
    prices = _prices(args)
    if args.json:
        _print_json([_record_json(r, prices) for r in records])
        return 0
    table = _table(f"{len(records)} call(s) (ids cut to 12 characters: `show` takes a prefix; queue s = waiting "
                   "for the role's limits, server s = time on the wire)",
                   ["call_id", "class", "node", "rnd", "role", "model", "status", "hit", "in", "out", "queue s",
                    "server s", "cost USD", "error"])
    for r in records:
        table.add_row(r.call_id[:12], r.class_name, r.node, str(r.round), r.role, r.model, r.status,
                      "yes" if r.cache_hit else "", _dash(r.input_tokens), _dash(r.output_tokens),
                      f"{r.queue_s:.3f}", f"{r.server_s:.3f}", _money(call_cost(r, prices), 6), (r.error or "")[:60])
    _print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    record = _find_call(args.run_dir, args.call_id)
    data = _record_json(record, _prices(args))
    if args.json:
        _print_json(data)
        return 0
    from rich.panel import Panel

    table = _table(f"call {record.call_id}", ["field", "value"])
    for key, value in data.items():
        if key not in ("request", "response_text", "prompt"):
            table.add_row(key, _dash(value))
    _print(table)
    _print(Panel(data["prompt"] or "(no text)", title="prompt", expand=False))
    _print(Panel(record.response_text or "(no text)", title="response", expand=False))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    prices = _prices(args)
    out = sys.stdout
    if args.format == "csv":  # one row per call, the same fields as jsonl; nested values as JSON text
        writer = csv.DictWriter(out, fieldnames=[*CSV_FIELDS], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for record in iter_traces(RunFolder(args.run_dir).traces, **_filters(args)):  # streamed: 10^6 rows fit
            data = _record_json(record, prices)
            writer.writerow({k: json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else v
                             for k, v in data.items()})
        return 0
    for record in iter_traces(RunFolder(args.run_dir).traces, **_filters(args)):
        out.write(json.dumps(_record_json(record, prices), ensure_ascii=False, default=str) + "\n")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = status_rows(args.run_dir)
    running = holder(args.run_dir)
    if args.json:
        _print_json({"run_dir": str(args.run_dir), "running": running is not None, "holder": running,
                     "classes": rows})
        return 0
    state = f"running ({running})" if running else "not running (finished, interrupted or killed)"
    table = _table(f"status of {args.run_dir}: {state}", ["class", "done", "status", "last node", "next", "step",
                                                          "items", "accepted", "missing"])
    for row in rows:
        table.add_row(row["class_name"], "yes" if row["done"] else "no", row["status"], ", ".join(row["last"]),
                      ", ".join(row["next"]) or "–", _dash(row["step"]), _dash(row["items"]),
                      _dash(row["accepted"]), _missing_text(row))
    _print(table)
    return 0


def cmd_batches(args: argparse.Namespace) -> int:
    rows = batch_rows(args.run_dir)
    cancelled = cancel_live(args.run_dir, rows) if args.cancel else None
    if args.json:
        _print_json({"batches": rows, **({"cancelled": cancelled} if cancelled is not None else {})})
        return 0
    table = _table(f"Batch API batches of {args.run_dir}", ["batch", "role", "requests", "completed", "failed",
                                                           "status", "state", "age", "run"])
    for r in rows:
        table.add_row(r["batch_id"] or f"({r['submission_id'][:12]})", r["role"], str(r["requests"]),
                      _dash(r["completed"]), _dash(r["failed"]), _dash(r["status"]), r["state"],
                      age_text(r["age_s"]), r["run_id"])
    _print(table)
    for c in cancelled or []:
        print(f"cancel {c['batch_id']} ({c['role']}): {c['status']}; --resume sends what it did not answer again")
    if cancelled == []:
        print("no live batch to cancel")
    return 0


_COMMANDS = {"summary": cmd_summary, "calls": cmd_calls, "show": cmd_show, "export": cmd_export,
             "status": cmd_status, "batches": cmd_batches}


# -------------------------------------------------------------------------------- public helpers
def call_cost(record: TraceRecord, prices: PriceTable | None) -> float | None:
    """The row's cost, priced now from ``prices`` when the run did not record one."""
    if record.cost_usd is not None or prices is None:
        return record.cost_usd
    return prices.record_cost(record)


def class_costs(records: Iterable[TraceRecord], prices: PriceTable | None,
                recorded: Mapping[str, float] | None = None) -> dict[str, float | None]:
    """Cost per class (``None`` when any of its billed calls has no price); ``recorded``: per class, the sum
    of recorded costs of rows not in ``records`` (store.traces.read_costs)."""
    out: dict[str, float | None] = {name: round(total, 8) for name, total in (recorded or {}).items()}
    for r in records:
        cost = call_cost(r, prices)
        prior = out.get(r.class_name, 0.0)
        out[r.class_name] = None if cost is None or prior is None else round(prior + cost, 8)
    return out


# -------------------------------------------------------------------------------------- helpers
def _records(args: argparse.Namespace) -> list[TraceRecord]:
    return read_traces(RunFolder(args.run_dir).traces, **_filters(args))


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    if not args.run_dir.is_dir():
        raise InspectError(f"{args.run_dir}: no such run folder (give the --out folder of python -m agent.run)")
    return {"class_name": getattr(args, "class_name", None), "node": getattr(args, "node", None),
            "status": getattr(args, "status", None), "cache_hit": getattr(args, "cache_hit", None),
            "round": getattr(args, "round", None), "role": getattr(args, "role", None)}


def _find_call(run_dir: Path, call_id: str) -> TraceRecord:
    traces = RunFolder(run_dir).traces
    if not traces.is_file():
        raise InspectError(f"{run_dir}: no {traces.name} here (give the --out folder of python -m agent.run)")
    matches = [r for r in read_traces(traces) if r.call_id.startswith(call_id.lower())]
    if len(matches) != 1:
        what = "no call" if not matches else f"{len(matches)} calls"
        raise InspectError(f"{what} with id {call_id!r} in {run_dir}; list ids with `calls` (a unique prefix works)")
    return matches[0]


def _prices(args: argparse.Namespace) -> PriceTable:
    return load_prices(args.prices)


def _summary_rows(costs: Mapping[str, float | None], counts: dict[str, dict[str, dict[str, int]]],
                  summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per class: the counts (store.trace_schema.counts_sql, the run's one definition), billed
    tokens, cost, and the results from summary.json."""
    rows = []
    for name in [*summary, *sorted(set(counts) - set(summary))]:
        by_role, entry = counts.get(name, {}), summary.get(name, {})
        flat = sum_counts(by_role.values())
        rows.append({
            "class_name": name, "state": entry.get("status", "running or interrupted"), "calls": by_role,
            "input_tokens": flat["chat_input_tokens"] + flat["image_input_tokens"],
            "output_tokens": flat["chat_output_tokens"] + flat["image_output_tokens"],
            "cost_usd": costs.get(name, 0.0), "accepted": entry.get("accepted"), "rejected": entry.get("rejected"),
            "missing": entry.get("missing"), "missing_by_reason": entry.get("missing_by_reason") or {},
            "rounds": entry.get("rounds"), "warnings": len(entry.get("warnings") or []) if entry else None,
        })
    return rows


def _total_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    roles = sorted({role for row in rows for role in row["calls"]})
    calls = {role: sum_counts(row["calls"][role] for row in rows if role in row["calls"]) for role in roles}
    costs = [row["cost_usd"] for row in rows]
    return {"class_name": "total", "state": "", "calls": calls,
            "input_tokens": sum(r["input_tokens"] for r in rows), "output_tokens": sum(r["output_tokens"] for r in rows),
            "cost_usd": None if any(c is None for c in costs) else round(sum(costs), 8),
            **{k: sum(r.get(k) or 0 for r in rows) for k in ("accepted", "rejected", "missing", "warnings")},
            "missing_by_reason": _sum_reasons(r.get("missing_by_reason") for r in rows),
            "rounds": max((r.get("rounds") or 0 for r in rows), default=0)}


def _record_json(record: TraceRecord, prices: PriceTable | None) -> dict[str, Any]:
    data = asdict(record)
    data["cost_usd"] = call_cost(record, prices)
    data["started"] = datetime.fromtimestamp(record.started_at, tz=timezone.utc).isoformat(timespec="milliseconds")
    data["prompt"] = _prompt_text(record.request)
    return data


def _prompt_text(request: dict[str, Any]) -> str:
    """The text a call sent: the image prompt, or the chat messages' text parts (images as hashes)."""
    if isinstance(request.get("prompt"), str):
        return str(request["prompt"])
    parts: list[str] = []
    for message in request.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    parts.append(f"[image sha256={(part.get('image_url') or {}).get('sha256', '?')}]")
    return "\n".join(parts)


def _calls_text(c: dict[str, int] | None) -> str:
    """``"12 sent, 3 hit, 1 refused"``: the calls of one role by what became of them (counts_sql)."""
    if not c:
        return "–"
    parts = [f"{c['sent']} sent"] + [f"{c[k]} {label}" for k, label in (
        ("cache_hits", "hit"), ("refused", "refused"), ("stopped", "stopped"), ("errors", "failed")) if c.get(k)]
    return ", ".join(parts)


def _money(value: float | None, digits: int = 4) -> str:
    return "unknown" if value is None else f"{value:.{digits}f}"


def _missing_text(row: dict[str, Any]) -> str:
    """``"12 (server_errors 12)"``: what fell short, per reason (agent/graph/finalize.py REASONS)."""
    if row.get("missing") is None:
        return "–"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted((row.get("missing_by_reason") or {}).items()))
    return f"{row['missing']} ({reasons})" if reasons else str(row["missing"])


def _sum_reasons(parts: Iterable[dict[str, int] | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in parts:
        for key, value in (part or {}).items():
            out[key] = out.get(key, 0) + int(value)
    return dict(sorted(out.items()))


def _dash(value: Any) -> str:
    return "–" if value is None else str(value)


def _table(title: str, columns: list[str]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _print(renderable: Any) -> None:
    from rich.console import Console

    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=200)  # piped or captured: no terminal width to respect
    console.print(renderable)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _parser() -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("--prices", type=Path, default=None, help="price table TOML (default: agent/prices.toml)")
    filters = OneLineParser(add_help=False)
    filters.add_argument("--class", dest="class_name", help="only this class")
    filters.add_argument("--node", help="only this graph node (describe, extend, dedupe, ...)")
    filters.add_argument("--role", choices=("lmm", "llm", "t2i"), help="only this model role")
    filters.add_argument("--status", choices=("ok", "error", "refused", "stopped"),
                         help="only calls that succeeded / failed / were refused by the budget / stopped unsent")
    filters.add_argument("--cache-hit", action=argparse.BooleanOptionalAction, default=None,
                         help="only cache hits (--cache-hit) or only real requests (--no-cache-hit)")
    filters.add_argument("--round", type=int, help="only this round (refinement / re-ask number)")
    parser = OneLineParser(prog="python -m agent.traces", description=__doc__.splitlines()[0],
                                     epilog="exit codes: 0 ok, 2 bad input")
    parser.add_argument("run_dir", type=Path, help="a run folder (the --out of python -m agent.run)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("summary", parents=[common, filters], help="per class: calls, tokens, cost, results")
    sub.add_parser("calls", parents=[common, filters], help="one row per call")
    show = sub.add_parser("show", parents=[common], help="one call in full")
    show.add_argument("call_id", help="a call id (or a unique prefix) from `calls`")
    export = sub.add_parser("export", parents=[common, filters], help="calls as JSON lines on stdout")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl",
                        help="jsonl: one JSON object per call; csv: a header, then one row per call (default jsonl)")
    sub.add_parser("status", parents=[common], help="per class: done, last node, next node (checkpoints)")
    batches = sub.add_parser("batches", parents=[common], help="the run's Batch API batches: id, role, counts, "
                             "status, age")
    batches.add_argument("--cancel", action="store_true", help="cancel the run's live batches (server-side)")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
