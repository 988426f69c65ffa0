"""``python -m trainer.eval --checkpoint DIR --test LIST``: score a saved model on a test set.

Contract
- ``DIR`` is a ``checkpoints/last`` folder written by :mod:`trainer.train` (or the run's ``--out`` folder).
  The model is rebuilt from its ``model.json`` (model config, class names, original training counts), the
  trained parameters from ``trainable.pt``. A ``--pretrained none`` run is rebuilt from its seed; a tag or
  weights file must still be loadable on this machine.
- Writes ``metrics.json``, ``per_class.csv``, ``acc_vs_count.png`` to ``--out`` (default ``DIR/eval``);
  many / medium / few use the training run's original counts, thresholds from ``--many/--few`` if given.
- ``main(argv) -> int``: 0 on success, 2 with one line on stderr for bad input.
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
    p.add_argument("--test", required=True, help="test data: list file or manifest")
    p.add_argument("--data-root", default=None, help="root of list-file paths (default: the list's folder)")
    p.add_argument("--out", default=None, help="output folder (default: CHECKPOINT/eval)")
    p.add_argument("--batch-size", type=cli.positive_int, default=128)
    cli.add_eval_options(p)
    p.set_defaults(many=None, few=None)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    return cli.run_main(build_parser(), argv, _evaluate)


def _evaluate(args: Any) -> int:
    from trainer.data import DataError, check_images, read_samples, subset_round_robin
    from trainer.evaluate import compute_metrics, count_correct, write_reports
    from trainer.loop import setup_runtime
    from trainer.model import load_trainable_state
    from trainer.run import make_test_loader

    folder = _checkpoint_folder(Path(args.checkpoint))
    info = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    names: list[str] = info["class_names"]
    test = subset_round_robin(read_samples(args.test, len(names), args.data_root), args.max_test)
    test, problems = check_images(test, args.skip_bad_images)
    if problems:
        print(f"[eval] warning: skipped {len(problems)} unreadable image(s); first: {problems[0]}", file=sys.stderr)
    if not test:
        raise DataError(f"{args.test}: no usable test images")
    rt = setup_runtime(args.device, args.amp, lambda m: print(f"[eval] {m}", file=sys.stderr), args.threads,
                       args.workers)
    model = _rebuild(info)
    import torch

    load_trainable_state(model, torch.load(folder / "trainable.pt", map_location="cpu"))
    model.to(rt.device)
    loader = make_test_loader(args, test, info["preprocess"], rt)
    correct, total = count_correct(model, loader, rt, len(names))
    many = info["many"] if args.many is None else args.many
    few = info["few"] if args.few is None else args.few
    metrics = compute_metrics(correct, total, info["train_counts"], many, few)
    metrics["checkpoint"] = str(folder)
    out = Path(args.out) if args.out else folder / "eval"
    if rt.is_main:
        write_reports(out, metrics, correct, total, info["train_counts"], names)
        shown = {k: None if metrics[k] is None else round(metrics[k], 2) for k in ("overall", "many", "medium", "few")}
        print(f"[eval] {json.dumps(shown)} -> {out}", file=sys.stderr)
    return 0


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
    model, _ = build_classifier(ModelConfig(**fields), info["class_names"])
    return model


if __name__ == "__main__":
    raise SystemExit(main())
