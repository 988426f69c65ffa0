"""``python -m agent.run``: generate LTGC data for the tail classes (paper §3.1) into one run folder.

Contract: ``main(argv) -> int`` parses flags, resolves settings (CLI > ``--config`` TOML ``[run]`` /
``[lmm]`` / ``[llm]`` / ``[t2i]`` > ``LTGC_<ROLE>_<FIELD>`` env for roles > the folder's saved settings on
``--resume`` > defaults), reads the inputs, and hands over to ``agent.lifecycle.driver.execute``. Every bad input or
setting is one line on stderr and exit code 2, before any model is called. Heavy imports (torch,
open_clip, langgraph) happen only after the inputs check out, so ``--help`` and input errors are instant.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("agent.run", "still starting up, nothing was sent")

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.batch.setup import BATCH_FLAGS, add_batch_arguments
from agent.lifecycle.controls import (
    RunControls,
    add_control_arguments,
    controls_from_args,
    dry_run,
    log_function,
)
from agent.lifecycle.inputs import InputError, check_images, load_inputs
from agent.lifecycle.lock import RunLock, RunLocked, holder
from agent.lifecycle.preflight import check_keys, check_reachable
from agent.lifecycle.resume import check_rerun, check_resume, config_doc
from agent.lifecycle.settings import RunSettings, SettingsError, resolve
from agent.lifecycle.shutdown import exit_code, graceful_stop
from agent.providers.config import (
    ROLES,
    add_role_arguments,
    load_providers_config,
    read_toml,
    role_fields,
    role_overrides_from_args,
)
from store.cli import OneLineParser
from store.errors import UsageError, usage_line
from store.logs import cli_logging

EXIT_CODES = """exit codes:
  0  every class complete
  1  at least one class failed or fell short (summary.json: status failed / short, error, missing_by_reason):
     items missing because calls failed or were refused; --resume asks them again; the others finished
  2  bad input, flag or config (one line on stderr; nothing was called)
  3  budget spent (--max-cost / --max-calls, where supported); continue with --resume
  130 / 143 stopped by SIGINT / SIGTERM (in-flight calls finish, nothing new is sent); continue with --resume"""

EPILOG = f"""{EXIT_CODES}

examples:
  # OpenAI API (OPENAI_API_KEY in the environment)
  python -m agent.run --classes tail.txt --images train/ --out runs/r1
  # resume an interrupted run: completed calls are cache hits, finished classes are skipped
  python -m agent.run --out runs/r1 --resume
"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m agent.run", description=__doc__.split("\n")[0].split(": ", 1)[1],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inputs = p.add_argument_group("inputs")
    inputs.add_argument("--classes", help="tail.txt: one class per line, a name or label<TAB>name")
    inputs.add_argument("--images", help="ImageFolder tree: one folder per class (name or slug)")
    inputs.add_argument("--train-list", help="list file: 'relative/path.jpg <label>' per line")
    inputs.add_argument("--data-root", help="folder the --train-list paths start from")
    inputs.add_argument("--class-names", help="label<TAB>name per line, or one name per line (index = label)")
    inputs.add_argument("--strict", action="store_true",
                        help="a corrupt real image is an error (default: skipped with a warning)")
    run = p.add_argument_group("run")
    run.add_argument("--out", help="run folder (created; holds caches, checkpoints, images, manifest)")
    run.add_argument("--run-id", help="id of this run (default: a timestamp); part of every thread id")
    run.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    run.add_argument("--overwrite", action="store_true",
                     help="start over in an --out that holds a run with other inputs or settings (its manifest "
                          "is replaced); without it such a folder is refused")
    run.add_argument("--config", help="TOML file: [run] settings (flag names with _) and [lmm]/[llm]/[t2i]")
    run.add_argument("--max-classes-in-flight", help="classes processed at once (default 8)")
    run.add_argument("--include-originals", action="store_true", default=None,
                     help="also write the tail classes' original images to manifest.jsonl")
    paper = p.add_argument_group("paper settings")
    paper.add_argument("--target-per-class", help="K_y: descriptions per class; N_y = K_y - M_y images (default 100)")
    paper.add_argument("--threshold", help="μ: accept score (default 0.25 for cosine, 0.6 for softmax)")
    paper.add_argument("--score", choices=("cosine", "softmax"), help="CLIP score (default cosine: raw cosine)")
    paper.add_argument("--max-rounds", help="R: refine rounds per low-scoring image (default 3)")
    paper.add_argument("--max-describe", help="describe at most this many real images per class (default all)")
    paper.add_argument("--max-extend-rounds", help="bound on number-check rounds per pass (default 50)")
    paper.add_argument("--clip-model", help="open_clip model name or config JSON path (default ViT-B-32)")
    paper.add_argument("--clip-pretrained", help="tag, weights file, or none (default openai)")
    add_role_arguments(p)
    add_batch_arguments(p)
    add_control_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli_logging()  # warnings in our words, once; never Python's "WARNING:root:" default
    try:
        settings, providers_config, inputs, notes = _prepare(args)
        controls = controls_from_args(args)
        notes["controls"] = {"max_cost_usd": controls.max_cost_usd, "max_calls": controls.max_calls,
                             "prices": controls.prices.source}
        if controls.dry_run:  # a plan needs no key, no server and no folder: nothing is opened or sent
            return dry_run(settings, providers_config, inputs, controls)
        # Before torch, open_clip and the scorer load: a missing key or a dead URL is one line, at once.
        check_keys(providers_config)
        check_reachable(providers_config)
    except UsageError as exc:
        print(usage_line(exc), file=sys.stderr)
        return 2
    for warning in inputs.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return _start(settings, providers_config, inputs, controls, notes)


def _start(settings: RunSettings, providers_config: Any, inputs: Any, controls: RunControls,
           notes: dict[str, Any]) -> int:
    """Load the scorer, then take the folder and run. The run folder is created only here, once the run
    can start: bad input, a CLIP model or local t2i pipeline that does not load, or a Ctrl-C during start-up
    write nothing."""
    in_use = holder(settings.out)
    if in_use is not None:  # refused at once, before seconds of model loading (checked again when locking)
        print(f"error: {RunLocked.message(settings.out, in_use)}", file=sys.stderr)
        return 2
    from agent.lifecycle import driver as runner  # heavy: torch, open_clip, langgraph
    from agent.providers.local_t2i import preload
    from agent.providers.scorer import ClipScorer

    try:
        scorer = ClipScorer.load(settings.clip_model, settings.pretrained_arg())
        preload(providers_config)  # a local t2i pipeline (agent/providers/local_t2i.py): loaded once, here
    except UsageError as exc:
        print(usage_line(exc), file=sys.stderr)
        return 2
    try:
        with RunLock(settings.out):  # one agent.run per folder; taken before anything is written
            return _run_locked(runner, settings, providers_config, inputs, controls, notes, scorer)
    except RunLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_locked(runner: Any, settings: RunSettings, providers_config: Any, inputs: Any, controls: RunControls,
                notes: dict[str, Any], scorer: Any) -> int:
    async def execute() -> tuple[Any, int | None]:
        with graceful_stop() as stop:
            outcome = await runner.execute(settings, providers_config, inputs, scorer=scorer,
                                           log=log_function(controls, _log), controls=controls, notes=notes)
        return outcome, stop.signum

    resume_hint = f"python -m agent.run --out {settings.out} --resume"
    try:
        outcome, signum = asyncio.run(execute())
    except UsageError as exc:  # e.g. a tampered checkpoint found before anything was sent
        print(usage_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; continue with: {resume_hint}", file=sys.stderr)
        return 130
    except (OSError, sqlite3.Error) as exc:  # the disk filled up (or went read-only) writing the run's files
        print(f"error: cannot write to {settings.out} ({getattr(exc, 'strerror', None) or exc}); nothing written so "
              "far is lost: "
              f"free space, then continue with: {resume_hint}", file=sys.stderr)
        return 1
    print(outcome.final_line, file=sys.stderr if outcome.exit_code else sys.stdout)
    if outcome.summary.get("disk_full"):
        print(f"error: the disk is full ({outcome.summary['disk_full']}); the unfinished classes stopped where "
              f"they were and nothing written so far is lost: free space, then continue with: {resume_hint}",
              file=sys.stderr)
    if signum is not None:
        print(f"stopped by signal {signum}; continue with: {resume_hint}", file=sys.stderr)
        return exit_code(signum)
    return int(outcome.exit_code)


def _prepare(args: argparse.Namespace) -> tuple[RunSettings, Any, Any, dict[str, Any]]:
    """Settings, providers config, inputs, and the notes config.json records (TOML used, resume changes).

    On ``--resume`` a change to what the run generates is refused here (agent/lifecycle/resume.py), before anything
    is loaded, opened or sent."""
    doc = read_toml(args.config) if args.config else {}
    toml_run = doc.get("run", {})
    if not isinstance(toml_run, dict):
        raise SettingsError(f"{args.config}: [run] must be a table")
    if args.config:  # relative paths in the TOML are relative to the TOML's folder, not to the shell's
        toml_run = _toml_paths(toml_run, Path(args.config).resolve().parent)
    cli = {k: v for k, v in vars(args).items() if k in _RUN_FLAGS and v is not None}
    saved_doc = _saved_config(args, toml_run)
    saved, saved_providers = _saved_settings(args, saved_doc)
    settings = resolve(cli, toml_run, saved)
    providers_config = load_providers_config(args.config, os.environ, role_overrides_from_args(args),
                                             toml_doc=_merge_roles(saved_providers, doc))
    try:
        _check_out(settings.out)
        if settings.images is None and settings.train_list is None:
            raise InputError("give the real images: --images DIR, or --train-list FILE --data-root DIR")
        inputs = load_inputs(settings.classes, images_dir=settings.images, train_list=settings.train_list,
                             data_root=settings.data_root, class_names_file=settings.class_names)
        inputs = check_images(inputs, strict=args.strict)  # opens every real image: after the cheap checks
    except UsageError as exc:
        raise _named_by_source(exc, toml_run, cli, args.config) from None
    notes: dict[str, Any] = {"config_file": str(Path(args.config).resolve()) if args.config else None}
    if saved_doc is None and not args.overwrite:  # a new run must not silently replace another run's rows
        earlier = _earlier_config(settings.out)
        if earlier is not None:
            check_rerun(earlier, config_doc(settings, providers_config, inputs), settings.out)
    if saved_doc is not None:
        changed = check_resume(saved_doc, config_doc(settings, providers_config, inputs))
        earlier = saved_doc.get("resumes")
        history: list[Any] = earlier if isinstance(earlier, list) else []
        notes["resumes"] = [*history, {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changed": changed}]
        if changed:
            print("resume: applying " + ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in changed.items()),
                  file=sys.stderr)
    return settings, providers_config, inputs, notes


def _earlier_config(out: Path) -> dict[str, Any] | None:
    """The config.json of a run already in ``out`` (finished or interrupted), or None (none, or unreadable:
    nothing to compare, so nothing to protect)."""
    try:
        doc = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("run"), dict) else None


def _saved_config(args: argparse.Namespace, toml_run: dict[str, Any]) -> dict[str, Any] | None:
    """On --resume: the folder's config.json (the run being continued); None for a fresh run."""
    if not args.resume:
        return None
    out = args.out or toml_run.get("out")
    if not out:
        raise SettingsError("--resume needs --out RUN_DIR (the folder of the run to continue)")
    path = Path(out) / "config.json"
    if not Path(out).is_dir():
        raise SettingsError(f"--resume: {out} does not exist; give the --out folder of an earlier run "
                            "(or drop --resume to start a new run there)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("run"), dict):
            raise TypeError
    except FileNotFoundError:
        raise SettingsError(f"--resume: {path} not found: the run in {out} never got past start-up, so there "
                            "is nothing to continue; run the full command again without --resume") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"--resume: {path} is not a run config ({type(exc).__name__}); start a new run") from None
    return doc


def _named_by_source(exc: UsageError, toml_run: dict[str, Any], cli: dict[str, Any], config: str | None) -> UsageError:
    """The error with its leading ``--flag`` replaced by where the value really came from, when that was the
    ``[run]`` table of ``--config`` (a user who never typed ``--classes`` should not be told about it)."""
    text = str(exc)
    flag = text.split(":", 1)[0].split(" ", 1)[0]
    key = flag[2:].replace("-", "_") if flag.startswith("--") else ""
    if config and key in toml_run and key not in cli:
        return type(exc)(f"{config} [run] {key}{text[len(flag):]}")
    return exc


def _toml_paths(toml_run: dict[str, Any], base: Path) -> dict[str, Any]:
    """``[run]`` path settings given relative in a TOML file, made relative to the file's folder."""
    out = dict(toml_run)
    for key in ("classes", "images", "train_list", "data_root", "class_names", "out"):
        value = out.get(key)
        if isinstance(value, str) and value.strip() and not Path(value).expanduser().is_absolute():
            out[key] = str(base / value)
    return out


def _saved_settings(args: argparse.Namespace, doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The run and providers blocks of the saved config.json: the lowest layer, so ``--out RUN --resume``
    alone continues a run with its own settings."""
    if doc is None:
        return None, {}
    saved, providers = doc["run"], doc.get("providers", {})
    if not isinstance(providers, dict):
        raise SettingsError("--resume: config.json has no providers table; start a new run")
    if args.run_id and args.run_id != saved.get("run_id"):
        raise SettingsError(
            f"--run-id {args.run_id}: the run in {args.out} is {saved.get('run_id')!r}; drop --run-id to resume it"
        )
    # A config.json from before settings were role-specific lists every field for every role: keep the ones
    # that apply (agent.providers.config.role_fields), so an older run folder still resumes.
    providers = {role: ({k: v for k, v in table.items() if k in role_fields(role)} if role in ROLES else table)
                 for role, table in providers.items() if isinstance(table, dict) or role not in ROLES}
    return {k: v for k, v in saved.items() if k != "resume"}, providers


def _merge_roles(saved: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The TOML document with the saved provider settings underneath it, role table by role table."""
    merged = dict(doc)
    for key, value in saved.items():
        if isinstance(value, dict):
            merged[key] = {**value, **(doc.get(key) or {})}
        elif key not in doc:
            merged[key] = value
    return merged


def _check_out(out: Path) -> None:
    """The run folder must be creatable and writable; checked without writing anything (bad input writes nothing)."""
    if out.exists() and not out.is_dir():
        raise SettingsError(f"--out {out}: exists and is not a folder, so the run folder cannot be created there; "
                            "pass a folder path")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SettingsError(f"--out {out}: cannot create the run folder ({parent} is not writable); "
                            "pass a writable folder")


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_RUN_FLAGS = frozenset({
    "classes", "images", "train_list", "data_root", "class_names", "out", "run_id", "resume",
    "max_classes_in_flight", "include_originals", "target_per_class", "threshold", "score", "max_rounds",
    "max_describe", "max_extend_rounds", "clip_model", "clip_pretrained", *BATCH_FLAGS,
})


if __name__ == "__main__":
    sys.exit(main())
