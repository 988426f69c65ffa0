"""One training run, wired from parsed options: data -> model -> loaders -> epochs -> checkpoint -> reports.

Contract: :func:`run_training` is called by :func:`trainer.train.main` with validated options; it raises
a :class:`store.errors.UsageError` (``DataError``, ``ModelError``, ``OutputError``) for bad input or an output
that cannot be written (main prints its one line; exit 2, or 1 once epochs were trained) and returns 0 on
success. Rank 0 writes every file; all ranks train and evaluate. Write order per epoch: checkpoint
(atomic folder swap), then the ``train_log.jsonl`` row (atomic rewrite), so a failed write never leaves a
half file and ``--resume`` continues from the last complete checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from store.manifest import atomic_write_text
from trainer.balancemix import PairSampler, SamplingConfig
from trainer.data import EvalDataset, ImageLoader, PairDataset, build_transforms, dump_json
from trainer.loop import (
    Runtime,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    setup_runtime,
    train_one_epoch,
)
from trainer.losses import TrainingLoss, sampler_prior
from trainer.metrics import StridedSampler, compute_metrics, count_correct, write_reports
from trainer.model import Classifier, ModelConfig, ModelError, build_classifier, count_parameters
from trainer.outputs import check_out_folder, write_log_row, writing
from trainer.samples import (
    DataError,
    Sample,
    check_images,
    class_counts,
    load_classes,
    read_listing,
    relabel_note,
    subset_round_robin,
)


@dataclass
class DataBundle:
    class_names: list[str]
    original: list[Sample]
    generated: list[Sample]
    test: list[Sample]
    train_counts: list[int]  # per class, original data only: defines many/medium/few (and --la-prior original)
    skipped: dict[str, int]  # images dropped by --skip-bad-images, per part (original, generated, test)


def run_training(args: argparse.Namespace, trajectory_keys: Sequence[str]) -> int:
    log = _logger()
    out = Path(args.out)
    check_out_folder(out)
    resume_dir = _resume_dir(args, out)
    if args.mode == "balancemix" and not args.generated:
        raise DataError("--mode balancemix mixes with generated data: pass --generated LIST|MANIFEST "
                        "(or use --mode plain/balanced for a run without D_g)")
    try:
        rt = setup_runtime(args.device, args.amp, log, args.threads, args.workers)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    log = _logger(rt.is_main)
    seed_everything(args.seed)
    data = load_data(args, log)
    cfg = ModelConfig(model=args.model, pretrained=args.pretrained, tune=args.tune, head=args.head,
                      lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      image_size=args.image_size, seed=args.seed)
    model, preprocess = build_classifier(cfg, data.class_names, log)
    if cfg.pretrained == "none":
        log(f"--pretrained none: the backbone starts from random weights (seed {cfg.seed}), not from CLIP")
    trainable, total = count_parameters(model)
    log(f"model {cfg.model} ({cfg.tune}): {trainable:,} trainable of {total:,} parameters")
    model.to(rt.device)
    seed_everything(args.seed + rt.rank)  # ranks augment differently; the sampler plan is shared
    sampler, train_loader = make_train_loader(args, data, preprocess, rt)
    test_loader = make_test_loader(args, data.test, preprocess, rt)
    net: torch.nn.Module = model
    if rt.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    steps = math.ceil(len(sampler) / args.batch_size) * args.epochs
    optimizer = build_optimizer(model, args.lr, args.weight_decay)
    scheduler = build_scheduler(optimizer, round(args.warmup_ratio * steps), steps)
    start = 0
    if resume_dir is not None:
        _check_resumable(resume_dir, args, trajectory_keys)
        start = load_checkpoint(resume_dir, net, optimizer, scheduler, sampler, rt)
        log(f"resumed from {resume_dir} after epoch {start}")
    prior = la_prior(args, data)
    config = _resolved_config(args, data, rt, len(sampler) * rt.world, trainable)
    config["la_prior_resolved"] = [round(p, 6) for p in prior]
    if rt.is_main:
        with writing(out / "config.json", done_work=False, safe="nothing was trained; free space or choose "
                                                               "another --out"):
            atomic_write_text(out / "config.json", dump_json(config))
    info = _model_info(cfg, data, args, preprocess)
    ctx = _EpochContext(args, rt, net, model, optimizer, scheduler, sampler, train_loader, test_loader,
                        build_loss(args, data, prior), data, out, info, log)
    end = min(args.epochs, args.stop_after_epoch or args.epochs)
    images, seconds = run_epochs(ctx, start, end)
    if end < args.epochs:
        log(f"stopped after epoch {end} of {args.epochs}; continue with --resume")
        return 0
    _report(ctx, images, seconds)
    return 0


def _report(ctx: _EpochContext, images: int, seconds: float) -> None:
    """Evaluate the trained model and write metrics.json, per_class.csv and acc_vs_count.png (rank 0)."""
    args, data, out = ctx.args, ctx.data, ctx.out
    correct, totals = count_correct(ctx.model, ctx.test_loader, ctx.rt, len(data.class_names))
    metrics = compute_metrics(correct, totals, data.train_counts, args.many, args.few)
    metrics.update({"epochs": args.epochs, "images_per_s": images / seconds if seconds else None,
                    "train_seconds": seconds, "mode": args.mode, "loss": args.loss, "skipped_images": data.skipped})
    if ctx.rt.is_main:
        with writing(out, done_work=True, safe=f"the trained model is in {out / 'checkpoints' / 'last'}: free "
                                                f"space and run the same command with --resume to write the reports"):
            write_reports(out, metrics, correct, totals, data.train_counts, data.class_names)
        shown = {k: None if metrics[k] is None else round(metrics[k], 2) for k in ("overall", "many", "medium", "few")}
        ctx.log(f"done: {json.dumps(shown)} -> {out}")


@dataclass
class _EpochContext:
    args: argparse.Namespace
    rt: Runtime
    net: torch.nn.Module
    model: Classifier
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: PairSampler
    train_loader: DataLoader[Any]
    test_loader: DataLoader[Any]
    loss_fn: TrainingLoss
    data: DataBundle
    out: Path
    model_info: dict[str, Any]
    log: Any


def run_epochs(ctx: _EpochContext, start: int, end: int) -> tuple[int, float]:
    """Train epochs ``start .. end-1``, checkpoint after each, log a row each; returns (images, seconds)."""
    from tqdm import tqdm

    images, seconds = 0, 0.0
    for epoch in range(start, end):
        ctx.sampler.set_epoch(epoch)
        bar = tqdm(total=len(ctx.sampler) * ctx.rt.world, desc=f"epoch {epoch + 1}/{ctx.args.epochs}",
                   unit="img", disable=(not ctx.rt.is_main) or None, file=sys.stderr, leave=False)
        with bar:
            stats = train_one_epoch(ctx.net, ctx.train_loader, ctx.optimizer, ctx.scheduler, ctx.loss_fn,
                                    ctx.rt, len(ctx.data.class_names), ctx.args.clip_grad, bar)
        images, seconds = images + stats.images, seconds + stats.seconds
        _save(ctx, epoch + 1)
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": stats.loss, "images": stats.images,
                               "seconds": round(stats.seconds, 3), "images_per_s": round(stats.images_per_s, 1),
                               "lr": ctx.scheduler.get_last_lr()[0]}
        every = ctx.args.eval_every
        if every and (epoch + 1) % every == 0 and epoch + 1 < ctx.args.epochs:
            correct, totals = count_correct(ctx.model, ctx.test_loader, ctx.rt, len(ctx.data.class_names))
            m = compute_metrics(correct, totals, ctx.data.train_counts, ctx.args.many, ctx.args.few)
            row.update({k: m[k] for k in ("overall", "many", "medium", "few")})
        if ctx.rt.is_main:
            with writing(ctx.out / "train_log.jsonl", done_work=True,
                         safe=f"checkpoints/last holds epoch {epoch + 1}: free space and continue with --resume "
                              f"(the log will lack that epoch's row)"):
                write_log_row(ctx.out / "train_log.jsonl", row)
            ctx.log(f"epoch {epoch + 1}/{ctx.args.epochs}: loss {stats.loss:.4f}, "
                    f"{stats.images_per_s:.0f} images/s")
    return images, seconds


def la_prior(args: argparse.Namespace, data: DataBundle) -> list[float]:
    """The class prior of the logit-adjusted loss: the sampler's label prior, or D_o's (``--la-prior``)."""
    counts_g = class_counts(data.generated, len(data.class_names))
    if args.la_prior == "original":
        return sampler_prior("plain", data.train_counts, [0] * len(counts_g))
    return sampler_prior(args.mode, data.train_counts, counts_g, args.gen_sampling)


def build_loss(args: argparse.Namespace, data: DataBundle, prior: list[float]) -> TrainingLoss:
    """The training loss; for logit adjustment, ``prior`` (from :func:`la_prior`) as expected pool counts."""
    # The prior in expected images of the training pool: a class the sampler never draws counts as one image.
    pool = len(data.original) + len(data.generated) if args.la_prior == "sampler" else len(data.original)
    return TrainingLoss(args.loss, [p * pool for p in prior], args.la_tau)


def _save(ctx: _EpochContext, epochs_done: int) -> None:
    """The checkpoint of ``epochs_done`` epochs; a failed write leaves the previous one and says so."""
    folder = ctx.out / "checkpoints" / "last"
    before = f"checkpoints/last still holds epoch {epochs_done - 1}" if epochs_done > 1 else "no epoch is saved"
    try:
        with writing(folder, done_work=True, safe=f"{before}: free space and continue with --resume"
                                                  if epochs_done > 1 else f"{before}: free space and run again"):
            save_checkpoint(folder, ctx.net, ctx.optimizer, ctx.scheduler, ctx.sampler, epochs_done,
                            ctx.model_info, ctx.rt)
    except BaseException:
        # save_checkpoint writes into "last.tmp" and swaps it in only when complete: drop the partial copy so
        # the space it took is free again (the next save would remove it too).
        shutil.rmtree(folder.with_name(folder.name + ".tmp"), ignore_errors=True)
        raise


def load_data(args: argparse.Namespace, log: Any) -> DataBundle:
    """Read class names, D_o, D_g and the test set; check images; say once what was relabelled or skipped."""
    classes = load_classes(args.class_names, args.train)
    c = len(classes.names)
    parts = {"original": [read_listing(args.train, classes, args.data_root)],
             "generated": [read_listing(spec, classes, args.data_root) for spec in args.generated],
             "test": [read_listing(args.test, classes, args.data_root)]}
    for note in dict.fromkeys(n for listings in parts.values() for listing in listings for n in listing.notes):
        log(f"note: {note}")
    samples = {name: [s for listing in listings for s in listing.samples] for name, listings in parts.items()}
    samples["test"] = subset_round_robin(samples["test"], args.max_test)
    relabelled = relabel_note([s for part in samples.values() for s in part], classes.source)
    if relabelled:
        log(relabelled)
    problems: list[str] = []
    skipped: dict[str, int] = {}
    for name, part in samples.items():
        part[:], bad = check_images(part, args.skip_bad_images)
        problems += bad
        skipped[name] = len(bad)
    if problems:
        log(f"warning: skipped {len(problems)} unreadable image(s) (--skip-bad-images); first: {problems[0]}")
    original, test = samples["original"], samples["test"]
    if not original or not test:
        raise DataError(f"no usable {'training' if not original else 'test'} images left after skipping")
    return DataBundle(list(classes.names), original, samples["generated"], test, class_counts(original, c),
                      skipped)


def make_train_loader(args: argparse.Namespace, data: DataBundle, preprocess: dict[str, Any],
                      rt: Runtime) -> tuple[PairSampler, DataLoader[Any]]:
    train_tf, _ = build_transforms(_size(preprocess), preprocess["mean"], preprocess["std"], args.crop_min_scale)
    samples = data.original + data.generated
    images = ImageLoader(args.cache_mb)
    images.preload(samples)
    sampling = SamplingConfig(mode=args.mode, alpha=args.alpha, gen_sampling=args.gen_sampling,
                              samples_per_epoch=args.samples_per_epoch, seed=args.seed)
    sampler = PairSampler(sampling, [s.label for s in data.original], [s.label for s in data.generated],
                          rank=rt.rank, world=rt.world)
    loader = DataLoader(PairDataset(samples, train_tf, images), batch_size=args.batch_size, sampler=sampler,
                        num_workers=args.workers, pin_memory=rt.device.type == "cuda")
    return sampler, loader


def make_test_loader(args: argparse.Namespace, test: list[Sample], preprocess: dict[str, Any],
                     rt: Runtime) -> DataLoader[Any]:
    _, eval_tf = build_transforms(_size(preprocess), preprocess["mean"], preprocess["std"], 1.0)
    images = ImageLoader(args.cache_mb)
    images.preload(test)
    return DataLoader(EvalDataset(test, eval_tf, images), batch_size=args.batch_size,
                      sampler=StridedSampler(len(test), rt.rank, rt.world), num_workers=args.workers,
                      pin_memory=rt.device.type == "cuda")


def _size(preprocess: dict[str, Any]) -> int:
    size = preprocess["size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _resume_dir(args: argparse.Namespace, out: Path) -> Path | None:
    last = out / "checkpoints" / "last"
    if args.resume is None:
        if last.exists():
            raise DataError(f"{out}: already holds a checkpoint: pass --resume to continue it, "
                            f"or choose another --out")
        return None
    folder = last if args.resume == "auto" else Path(args.resume)
    if not (folder / "state.pt").is_file():
        raise DataError(f"{folder}: no checkpoint to resume (expected state.pt there)")
    return folder


def _check_resumable(folder: Path, args: argparse.Namespace, keys: Sequence[str]) -> None:
    config_path = folder.parent.parent / "config.json"
    if not config_path.is_file():
        return
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    for key in keys:
        if key in saved and saved[key] != getattr(args, key):
            raise DataError(f"--resume: --{key.replace('_', '-')} is {getattr(args, key)!r} but the "
                            f"checkpoint's run used {saved[key]!r}; use the same value to resume")


def _resolved_config(args: argparse.Namespace, data: DataBundle, rt: Runtime, samples: int,
                     trainable: int) -> dict[str, Any]:
    config = dict(vars(args))
    config.update({"num_classes": len(data.class_names), "original_images": len(data.original),
                   "generated_images": len(data.generated), "test_images": len(data.test),
                   "samples_per_epoch_resolved": samples, "world_size": rt.world, "device": str(rt.device),
                   "trainable_parameters": trainable, "train_counts": data.train_counts,
                   "generated_counts": class_counts(data.generated, len(data.class_names)),
                   "class_names_used": data.class_names})
    return config


def _model_info(cfg: ModelConfig, data: DataBundle, args: argparse.Namespace,
                preprocess: dict[str, Any]) -> dict[str, Any]:
    """What trainer.eval needs to rebuild and score the model without the training data."""
    path = Path(cfg.model)
    oc_config = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" and path.is_file() else None
    return {"model_config": asdict(cfg), "open_clip_config": oc_config, "class_names": data.class_names,
            "train_counts": data.train_counts, "many": args.many, "few": args.few,
            "preprocess": {"size": _size(preprocess), "mean": list(preprocess["mean"]),
                           "std": list(preprocess["std"])}}


def _logger(enabled: bool = True) -> Any:
    def log(message: str) -> None:
        if enabled:
            print(f"[trainer] {message}", file=sys.stderr, flush=True)
    return log
