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
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.batch.setup import BATCH_FLAGS, add_batch_arguments
from agent.errors import EXIT_FAILED, entry_point
from agent.graph.constants import DEFAULT_THRESHOLDS
from agent.lifecycle.controls import (
    RunControls,
    add_control_arguments,
    controls_from_args,
    dry_run,
    log_function,
)
from agent.lifecycle.folder import RunFolder, read_json
from agent.lifecycle.inputs import InputError, check_images, load_inputs
from agent.lifecycle.lock import RunLock, RunLocked, holder
from agent.lifecycle.preflight import check_keys, check_reachable
from agent.lifecycle.resume import check_rerun, check_resume, config_doc
from agent.lifecycle.settings import Layers, RunSettings, SettingsError, default_text, load_layers
from agent.lifecycle.shutdown import exit_code, graceful_stop
from agent.providers.config import add_role_arguments, load_providers_config, role_overrides_from_args
from store.cli import OneLineParser
from store.errors import UsageError
from store.logs import cli_logging

EXIT_CODES = """exit codes:
  0  every class complete
  1  at least one class failed or fell short (summary.json: status failed / short, error, missing_by_reason):
     items missing because calls failed or were refused; --resume asks them again; the others finished
  2  bad input, flag or config (one line on stderr; nothing was called)
  3  budget spent (--max-cost / --max-calls, where supported); continue with --resume
  4  --review: every class is finished or awaits review; review with python -m agent.review RUN, then --resume
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
    run.add_argument("--max-classes-in-flight", help=f"classes processed at once (default {default_text('max_classes_in_flight')})")
    run.add_argument("--include-originals", action="store_true", default=None,
                     help="also write the tail classes' original images to manifest.jsonl")
    run.add_argument("--replay", action="store_true", default=None,
                     help="on a fresh run into a finished folder, run the unchanged complete classes through the "
                          "graph again (each call a cache hit) instead of reusing their results as they are")
    run.add_argument("--review", action=argparse.BooleanOptionalAction, default=None,
                     help="pause each class before finalize for a human review (python -m agent.review RUN); "
                     "--no-review on --resume approves the waiting classes as they are")
    run.add_argument("--review-rounds", help="review rounds whose rejected images are re-rendered "
                     f"(default {default_text('review_rounds')})")
    run.add_argument("--ray", metavar="local|auto|ADDRESS",
                     help="run the diffusers renders and CLIP scoring on a Ray cluster, one actor per GPU (or per "
                          "--t2i-devices entry): local (this machine), auto (joins `ray start --head`), or "
                          "HOST:6379 / ray://HOST:10001; needs the cluster extra")
    paper = p.add_argument_group("paper settings")
    paper.add_argument("--target-per-class", help="K_y: descriptions per class; N_y = K_y - M_y images "
                       f"(default {default_text('target_per_class')})")
    paper.add_argument("--threshold", help="μ: accept score (default "
                       + ", ".join(f"{mu:g} for {score}" for score, mu in DEFAULT_THRESHOLDS.items()) + ")")
    paper.add_argument("--score", choices=("cosine", "softmax"), help=f"CLIP score (default {default_text('score')}: raw cosine)")
    paper.add_argument("--max-rounds", help=f"R: refine rounds per low-scoring image (default {default_text('max_rounds')})")
    paper.add_argument("--max-describe", help="describe at most this many real images per class (default all)")
    paper.add_argument("--max-extend-rounds", help="bound on number-check rounds per pass "
                       f"(default {default_text('max_extend_rounds')})")
    paper.add_argument("--clip-model", help="open_clip model name or config JSON path "
                       f"(default {default_text('clip_model')})")
    paper.add_argument("--clip-pretrained", help=f"tag, weights file, or none (default {default_text('clip_pretrained')})")
    add_role_arguments(p)
    add_batch_arguments(p)
    add_control_arguments(p)
    return p


@entry_point  # every UsageError, from flags to a tampered checkpoint: one line, exit 2 (agent/errors.py)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli_logging()  # warnings in our words, once; never Python's "WARNING:root:" default
    settings, providers_config, inputs, notes = _prepare(args)
    controls = controls_from_args(args, settings)
    notes["controls"] = {"max_cost_usd": controls.max_cost_usd, "max_calls": controls.max_calls,
                         "prices": controls.prices.source}
    if controls.dry_run:  # a plan needs no key, no server and no folder: nothing is opened or sent
        code = dry_run(settings, providers_config, inputs, controls)
        if settings.ray:  # the cluster is asked what it has; no actor is started
            from agent.lifecycle.cluster_run import cluster_plan

            print(cluster_plan(settings, providers_config, inputs))
        return code
    # Before torch, open_clip and the scorer load: a missing key or a dead URL is one line, at once.
    check_keys(providers_config)
    check_reachable(providers_config)
    for warning in inputs.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        return _start(settings, providers_config, inputs, controls, notes)
    except UsageError as exc:  # e.g. a CLIP model that does not load: named where its value came from
        raise _named_by_source(exc, load_layers(args, _RUN_FLAGS), args) from None


def _start(settings: RunSettings, providers_config: Any, inputs: Any, controls: RunControls,
           notes: dict[str, Any]) -> int:
    """Load the scorer, then take the folder and run. The run folder is created only here, once the run
    can start: bad input, a CLIP model or local t2i pipeline that does not load, or a Ctrl-C during start-up
    write nothing. A ``UsageError`` on the way (the folder in use, a model that does not load, a tampered
    checkpoint found before anything is sent) leaves through :func:`main`'s wrapper."""
    in_use = holder(settings.out)
    if in_use is not None:  # refused at once, before seconds of model loading (checked again when locking)
        raise RunLocked(RunLocked.message(settings.out, in_use))
    from agent.lifecycle import driver as runner  # heavy: torch, open_clip, langgraph
    from agent.providers.local_t2i import preload
    from agent.providers.scorer import ClipScorer

    pool: Any = None
    local: dict[str, Any] | None = None
    try:
        if settings.ray:  # the GPU-bound work on a Ray cluster's actors (Ray imported only here)
            from agent.lifecycle.cluster_run import open_cluster

            pool, scorer, local = open_cluster(settings, providers_config, _log)
        else:
            scorer = ClipScorer.load(settings.clip_model, settings.pretrained_arg())
            preload(providers_config)  # a local t2i pipeline (agent/providers/local_t2i.py): loaded once, here
        with RunLock(settings.out):  # one agent.run per folder; taken before anything is written
            return _run_locked(runner, settings, providers_config, inputs, controls, notes, scorer, local)
    finally:
        if pool is not None:  # the actors end with the run (a local Ray instance too)
            pool.close()


def _run_locked(runner: Any, settings: RunSettings, providers_config: Any, inputs: Any, controls: RunControls,
                notes: dict[str, Any], scorer: Any, local: dict[str, Any] | None = None) -> int:
    async def execute() -> tuple[Any, int | None]:
        with graceful_stop() as stop:
            outcome = await runner.execute(settings, providers_config, inputs, scorer=scorer,
                                           log=log_function(controls, _log), controls=controls, notes=notes,
                                           local=local)
        return outcome, stop.signum

    resume_hint = f"python -m agent.run --out {settings.out} --resume"
    try:
        outcome, signum = asyncio.run(execute())
    except KeyboardInterrupt:
        print(f"interrupted; continue with: {resume_hint}", file=sys.stderr)
        return exit_code(signal.SIGINT)
    except (OSError, sqlite3.Error) as exc:  # the disk filled up (or went read-only) writing the run's files
        print(f"error: cannot write to {settings.out} ({getattr(exc, 'strerror', None) or exc}); nothing written so "
              "far is lost: "
              f"free space, then continue with: {resume_hint}", file=sys.stderr)
        return EXIT_FAILED
    print(outcome.final_line, file=sys.stderr if outcome.exit_code else sys.stdout)
    waiting = sum(1 for c in outcome.classes if c.status == "review")
    if waiting:
        print(f"{waiting} class{'es' if waiting != 1 else ''} await{'s' if waiting == 1 else ''} review: "
              f"python -m agent.review {settings.out}", file=sys.stderr)
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

    The layers (flags, TOML, saved config.json, defaults) meet in agent/lifecycle/settings.py. On ``--resume`` a
    change to what the run generates is refused here (agent/lifecycle/resume.py), before anything is loaded,
    opened or sent."""
    layers = load_layers(args, _RUN_FLAGS)
    settings, saved_doc = layers.settings, layers.saved_doc
    providers_config = load_providers_config(args.config, os.environ, role_overrides_from_args(args),
                                             toml_doc=layers.providers_doc)
    try:
        _check_out(settings.out)
        if settings.images is None and settings.train_list is None:
            raise InputError("give the real images: --images DIR, or --train-list FILE --data-root DIR")
        inputs = load_inputs(settings.classes, images_dir=settings.images, train_list=settings.train_list,
                             data_root=settings.data_root, class_names_file=settings.class_names)
        inputs = check_images(inputs, strict=args.strict)  # opens every real image: after the cheap checks
    except UsageError as exc:
        raise _named_by_source(exc, layers, args) from None
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
        doc = read_json(RunFolder(out).config)
    except UsageError:
        return None
    return doc if isinstance(doc.get("run"), dict) else None


def _named_by_source(exc: UsageError, layers: Layers, args: argparse.Namespace) -> UsageError:
    """The error with its leading ``--flag`` replaced by where the value really came from, when that was the
    ``[run]`` table of ``--config`` (a user who never typed ``--classes`` should not be told about it)."""
    text = str(exc)
    flag = text.split(":", 1)[0].split(" ", 1)[0]
    key = flag[2:].replace("-", "_") if flag.startswith("--") else ""
    where = layers.where(key, args.config)
    if where and getattr(args, key, None) is None:
        return type(exc)(f"{where}{text[len(flag):]}")
    return exc


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
    "max_classes_in_flight", "include_originals", "replay", "target_per_class", "threshold", "score", "max_rounds",
    "max_describe", "max_extend_rounds", "clip_model", "clip_pretrained", "max_cost", "max_calls", "review",
    "review_rounds", "ray", *BATCH_FLAGS,
})


if __name__ == "__main__":
    sys.exit(main())
