"""``python -m trainer.train``: fine-tune CLIP's visual tower on D_o (+ D_g) with BalanceMix or an ablation mode.

Contract (issue 4; docs/DESIGN.md §9)
- Inputs: ``--train`` D_o and ``--generated`` D_g (list files, manifests or ImageFolder trees; whatever is
  passed as D_g is D_g), ``--test``, ``--class-names`` (optional when ``--train`` is an ImageFolder: its
  sorted folder names are the classes). Labels: :mod:`trainer.samples` (a manifest row's ``class_name`` and
  a folder's name decide their label). List-file paths are relative to ``--data-root`` (default: the
  list's own folder); manifest paths to the manifest's folder.
- ``main(argv) -> int``: 0 on success; 2 with one line on stderr for any bad input (or an ``--out`` that
  cannot be written); 1 with one line when a checkpoint or report cannot be written mid-run (the last
  complete checkpoint is intact: ``--resume``); never a traceback for user errors. Runs single-process or
  under ``torchrun --nproc_per_node=N`` (DDP).
- Outputs in ``--out``: ``config.json`` (resolved options), ``train_log.jsonl`` (one row per epoch),
  ``checkpoints/last/`` (see :mod:`trainer.loop`), ``metrics.json``, ``per_class.csv``, ``acc_vs_count.png``.
- ``--resume`` continues from ``checkpoints/last``: the options that shape training must match the run that
  wrote it; 2 epochs straight and 1 + resume 1 give the same weights on CPU.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("trainer.train", "finished epochs are in checkpoints/last of --out (continue with --resume)")

import argparse
from typing import Any

from trainer import cli
from trainer.choices import HEADS, LA_PRIORS, LOSSES, MODES, TUNES

# Options that shape the training trajectory: a resumed run must use the same values.
TRAJECTORY_KEYS = ("train", "generated", "data_root", "mode", "alpha", "gen_sampling", "samples_per_epoch",
                   "epochs", "batch_size", "lr", "weight_decay", "warmup_ratio", "clip_grad", "model",
                   "pretrained", "tune", "head", "lora_r", "lora_alpha", "lora_dropout", "image_size", "seed",
                   "loss", "la_tau", "la_prior", "crop_min_scale")


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m trainer.train", description=__doc__.split("\n")[0])
    d = p.add_argument_group("data")
    d.add_argument("--train", required=True,
                   help="original training data D_o: list file, manifest or ImageFolder (one folder per class)")
    d.add_argument("--generated", nargs="+", action="extend", default=[], metavar="LIST|MANIFEST|FOLDER",
                   help="generated data D_g (one or more list files / manifests / ImageFolders; repeatable)")
    d.add_argument("--test", required=True, help="test data: list file, manifest or ImageFolder")
    d.add_argument("--class-names", default=None,
                   help="class names, 'label<TAB>name' or one name per line (line = label); optional when "
                        "--train is an ImageFolder: then its sorted folder names are the classes")
    d.add_argument("--data-root", default=None, help="root of list-file paths (default: each list's folder)")
    d.add_argument("--out", required=True, help="output folder")
    s = p.add_argument_group("sampling and loss")
    s.add_argument("--mode", choices=MODES, default="balancemix", help="default: balancemix (the paper)")
    s.add_argument("--alpha", type=cli.positive_float, default=1.0, help="λ ~ Beta(α, α) (default 1.0)")
    s.add_argument("--gen-sampling", choices=("uniform", "balanced"), default="uniform",
                   help="how balancemix draws x_j from D_g (default uniform)")
    s.add_argument("--samples-per-epoch", type=cli.positive_int, default=None,
                   help="training samples per epoch (default |D_o| + |D_g|): equal compute across modes")
    s.add_argument("--loss", choices=LOSSES, default="ce", help="ce, or logit-adjust (Menon et al. 2020)")
    s.add_argument("--la-tau", type=float, default=1.0, help="logit-adjustment strength τ (default 1.0)")
    s.add_argument("--la-prior", choices=LA_PRIORS, default="sampler",
                   help="logit adjustment's class prior: the label prior the --mode's sampler produces "
                        "(default; trainer/losses.py derives it) or D_o's counts (original)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="ViT-B-32", help="open_clip model name or model-config JSON path")
    m.add_argument("--pretrained", default="openai", help="open_clip tag, weights file, or 'none' (random init)")
    m.add_argument("--tune", choices=TUNES, default="lora", help="lora (paper) | full | head (default lora)")
    m.add_argument("--head", choices=HEADS, default="zeroshot", help="head init (default zeroshot)")
    m.add_argument("--lora-r", type=cli.positive_int, default=8)
    m.add_argument("--lora-alpha", type=cli.positive_int, default=16)
    m.add_argument("--lora-dropout", type=cli.fraction, default=0.0)
    m.add_argument("--image-size", type=cli.positive_int, default=None, help="default: the model's")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=cli.positive_int, default=10)
    o.add_argument("--batch-size", type=cli.positive_int, default=128, help="per process")
    o.add_argument("--lr", type=cli.positive_float, default=5e-4)
    o.add_argument("--weight-decay", type=cli.nonneg_float, default=0.05)
    o.add_argument("--warmup-ratio", type=cli.fraction, default=0.05, help="share of steps for linear warm-up")
    o.add_argument("--clip-grad", type=cli.nonneg_float, default=1.0, help="max grad norm (0 = off)")
    o.add_argument("--crop-min-scale", type=cli.fraction, default=0.5, help="RandomResizedCrop min scale")
    o.add_argument("--seed", type=cli.nonneg_int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--resume", nargs="?", const="auto", default=None, metavar="DIR",
                   help="continue from DIR (default: OUT/checkpoints/last)")
    r.add_argument("--stop-after-epoch", type=cli.positive_int, default=None,
                   help="stop once this epoch is done (time-limited job slots); continue with --resume")
    r.add_argument("--eval-every", type=cli.nonneg_int, default=0, help="evaluate every N epochs (0 = at end)")
    cli.add_eval_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    return cli.run_main(build_parser(), argv, _train)


def _train(args: Any) -> int:
    from trainer.driver import run_training

    return run_training(args, TRAJECTORY_KEYS)


if __name__ == "__main__":
    raise SystemExit(main())
