"""``python -m trainer.eval --checkpoint DIR --test LIST``: score a saved model on a test set.

Contract
- ``DIR`` is a ``checkpoints/last`` folder written by :mod:`trainer.train` (or the run's ``--out`` folder).
  The model is rebuilt from its ``model.json`` (model config, class names, original training counts), the
  trained parameters from ``trainable.pt``. A ``--pretrained none`` run is rebuilt from its seed; a tag or
  weights file must still be loadable on this machine.
- ``--test`` is a list file, a manifest or an ImageFolder; labels follow the checkpoint's class names
  (a manifest row's ``class_name`` and a class folder's name pick their class by name, as in training).
- Writes ``metrics.json``, ``per_class.csv``, ``acc_vs_count.png`` to ``--out``, by default
  ``RUN/eval/<test name>`` (RUN = the training ``--out``; never inside ``checkpoints/last``, which the next
  ``--resume`` replaces), and prints where. many / medium / few use the training run's original counts and,
  unless ``--many/--few`` are given, its thresholds.
- The model is rebuilt as the training run built it — for a ``--pretrained none`` run that is a random
  start from the run's seed — and the trained parameters (``trainable.pt``) are loaded on top.
- ``main(argv) -> int``: 0 on success, 2 with one line on stderr for bad input, 1 when the results cannot
  be written.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("trainer.eval", "the evaluation did not finish")

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from trainer import cli


def build_parser() -> cli.Parser:
    p = cli.Parser(prog="python -m trainer.eval", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoints/last folder (or the training --out folder)")
    p.add_argument("--test", required=True, help="test data: list file, manifest or ImageFolder")
    p.add_argument("--data-root", default=None, help="root of list-file paths (default: the list's folder)")
    p.add_argument("--out", default=None,
                   help="output folder (default: RUN/eval/<test name>, RUN = the training run's --out)")
    p.add_argument("--batch-size", type=cli.positive_int, default=128)
    cli.add_eval_options(p, thresholds_from_run=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    return cli.run_main(build_parser(), argv, _evaluate)


def _evaluate(args: Any) -> int:
    from trainer.driver import make_test_loader
    from trainer.loop import setup_runtime
    from trainer.metrics import compute_metrics, count_correct, write_reports
    from trainer.model import ModelError
    from trainer.outputs import check_out_folder, writing

    folder = _checkpoint_folder(Path(args.checkpoint))
    info = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    out = Path(args.out) if args.out else default_out(folder, Path(args.test))
    check_out_folder(out)
    names: list[str] = info["class_names"]
    test, skipped = _test_samples(args, names, folder)
    try:
        rt = setup_runtime(args.device, args.amp, _log, args.threads, args.workers)
    except ValueError as exc:  # --device cuda without a GPU
        raise ModelError(str(exc)) from None
    model = _load_model(info, folder)
    model.to(rt.device)
    loader = make_test_loader(args, test, info["preprocess"], rt)
    correct, total = count_correct(model, loader, rt, len(names))
    many = info["many"] if args.many is None else args.many
    few = info["few"] if args.few is None else args.few
    metrics = compute_metrics(correct, total, info["train_counts"], many, few)
    metrics.update({"checkpoint": str(folder), "test": str(args.test), "skipped_images": {"test": skipped}})
    if rt.is_main:
        with writing(out, done_work=True, safe="the checkpoint is untouched: free space or pass another --out"):
            write_reports(out, metrics, correct, total, info["train_counts"], names)
        shown = {k: None if metrics[k] is None else round(metrics[k], 2) for k in ("overall", "many", "medium", "few")}
        _log(f"top-1 % {json.dumps(shown)}")
        _log(f"wrote metrics.json, per_class.csv and acc_vs_count.png to {out}")
    return 0


def default_out(checkpoint: Path, test: Path) -> Path:
    """``RUN/eval/<test name>`` for a run's ``checkpoints/last``; ``CHECKPOINT/../eval/<test name>`` otherwise.

    >>> default_out(Path("runs/t1/checkpoints/last"), Path("data/test.txt")).as_posix()
    'runs/t1/eval/test'
    """
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run / "eval" / (test.stem if test.suffix else test.name)


def _test_samples(args: Any, names: list[str], folder: Path) -> tuple[list[Any], int]:
    from trainer.samples import (
        Classes,
        DataError,
        check_images,
        read_listing,
        relabel_note,
        subset_round_robin,
    )

    classes = Classes(tuple(names), f"the classes of checkpoint {folder}")
    listing = read_listing(args.test, classes, args.data_root)
    for note in listing.notes:
        _log(f"note: {note}")
    relabelled = relabel_note(listing.samples, classes.source)
    if relabelled:
        _log(relabelled)
    test = subset_round_robin(listing.samples, args.max_test)
    test, problems = check_images(test, args.skip_bad_images)
    if problems:
        _log(f"warning: skipped {len(problems)} unreadable image(s) (--skip-bad-images); first: {problems[0]}")
    if not test:
        raise DataError(f"{args.test}: no usable test images")
    return test, len(problems)


def _load_model(info: dict[str, Any], folder: Path) -> Any:
    """The training run's model, then its trained parameters on top; says which base weights it rebuilt."""
    import torch

    from trainer.model import load_trainable_state

    model = _rebuild(info)
    load_trainable_state(model, torch.load(folder / "trainable.pt", map_location="cpu"))
    cfg = info["model_config"]
    base = (f"random weights from seed {cfg['seed']}, as in training (--pretrained none)"
            if cfg["pretrained"] == "none" else f"--pretrained {cfg['pretrained']}, as in training")
    _log(f"model {Path(cfg['model']).stem}: base {base}, with the trained parameters of "
         f"{folder / 'trainable.pt'} loaded on top")
    return model


def _log(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)


def _checkpoint_folder(path: Path) -> Path:
    from trainer.data import DataError

    for candidate in (path, path / "checkpoints" / "last"):
        if (candidate / "model.json").is_file() and (candidate / "trainable.pt").is_file():
            return candidate
    raise DataError(f"{path}: not a trainer checkpoint (expected model.json and trainable.pt, "
                    f"e.g. OUT/checkpoints/last)")


def _rebuild(info: dict[str, Any]) -> Any:
    """The classifier as the training run built it (before training), from ``model.json``."""
    from trainer.model import ModelConfig, build_classifier

    fields = dict(info["model_config"])
    if info.get("open_clip_config") is not None:
        # The run used a config file: register the copy saved in the checkpoint, under the same name.
        stem = Path(fields["model"]).stem
        tmp = Path(tempfile.mkdtemp(prefix="ltgc-eval-")) / f"{stem}.json"
        tmp.write_text(json.dumps(info["open_clip_config"]), encoding="utf-8")
        fields["model"] = str(tmp)
    model, _ = build_classifier(ModelConfig(**fields), info["class_names"], _log)
    return model


if __name__ == "__main__":
    raise SystemExit(main())
