"""The training loop: runtime (device, DDP), AdamW + warm-up/cosine schedule, one epoch, checkpoints.

Contract
- :func:`setup_runtime` starts DDP when launched by ``torchrun`` (``WORLD_SIZE`` > 1): gloo on CPU, nccl on
  CUDA; :func:`teardown_runtime` ends it. Without torchrun everything runs in one process.
- :func:`train_one_epoch` draws the epoch's batches (the sampler shards by rank), mixes, applies the loss,
  clips gradients and steps the optimizer and the per-step schedule; the returned stats are summed over ranks.
- :func:`save_checkpoint` writes ``checkpoints/last/`` atomically (temp folder + rename): ``trainable.pt``
  (LoRA/visual + head parameters), ``state.pt`` (optimizer, scheduler, sampler, epoch), ``rng_rank{r}.pt``
  (torch / numpy / python RNG of each rank), ``model.json`` (how to rebuild the model), and for LoRA a peft
  ``adapter/`` folder. :func:`load_checkpoint` restores all of it, so 2 epochs straight and 1 + resume 1 end
  with the same weights.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from trainer.balancemix import PairSampler, mix_batch
from trainer.model import load_trainable_state, trainable_state


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: device, DDP rank/world, and whether bf16 autocast is on."""

    device: torch.device
    rank: int = 0
    world: int = 1
    amp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class EpochStats:
    loss_sum: float = 0.0
    batches: int = 0
    images: int = 0
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.batches, 1)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def setup_runtime(device: str, amp: bool, log: Callable[[str], None], threads: int = 0,
                  workers: int = 0) -> Runtime:
    """Resolve ``auto|cpu|cuda``, join the DDP group under torchrun, and set deterministic flags.

    CPU threads: ``threads`` when > 0; otherwise this process's share of the cores minus its DataLoader
    workers (at least 1). Oversubscribed OpenMP threads wait on each other: on a busy 2-core machine the tiny
    model ran 14x slower with 2 threads than with 1 (scripts/bench/bench_trainer.py).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible (use --device cpu or auto)")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    if threads > 0:
        torch.set_num_threads(threads)
    elif not use_cuda:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world - workers))
    if amp and not use_cuda and rank == 0:
        log("note: --amp (bf16 autocast) is CUDA-only; training in fp32 on CPU")
    return Runtime(device=dev, rank=rank, world=world, amp=amp and use_cuda)


def teardown_runtime() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_factor`` at ``total_steps``.

    >>> [round(lr_factor(s, 2, 6), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on 0-/1-d parameters (biases, norms, the head's scale), as is usual."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps))


def train_one_epoch(model: nn.Module, loader: Iterable[dict[str, Any]], optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rt: Runtime,
                    num_classes: int, clip_grad: float, progress: Any = None) -> EpochStats:
    """One pass over the loader; returns loss / image counts summed over all ranks."""
    model.train()
    stats = EpochStats()
    start = time.perf_counter()
    for batch in loader:
        x, target = mix_batch(batch["x_i"], batch["y_i"], batch["x_j"], batch["y_j"], batch["lam"],
                              num_classes)
        x, target = x.to(rt.device, non_blocking=True), target.to(rt.device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=rt.amp):
            logits = model(x)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip_grad)
        optimizer.step()
        scheduler.step()
        stats.loss_sum += float(loss.detach())
        stats.batches += 1
        stats.images += x.shape[0]
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress.update(x.shape[0] * rt.world)
            progress.set_postfix(loss=f"{stats.loss:.3f}", img_s=f"{stats.images * rt.world / elapsed:.0f}")
    stats.seconds = time.perf_counter() - start
    return _reduce_stats(stats, rt)


def _reduce_stats(stats: EpochStats, rt: Runtime) -> EpochStats:
    if rt.world == 1:
        return stats
    t = torch.tensor([stats.loss_sum, stats.batches, stats.images], dtype=torch.float64)
    dist.all_reduce(t)
    seconds = torch.tensor([stats.seconds], dtype=torch.float64)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
    return EpochStats(float(t[0]), int(t[1]), int(t[2]), float(seconds[0]))


def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, sampler: PairSampler, epoch: int,
                    model_info: dict[str, Any], rt: Runtime) -> None:
    """Write ``folder`` (``.../checkpoints/last``) atomically. Every rank saves its RNG state; rank 0 the rest."""
    tmp = folder.with_name(folder.name + ".tmp")
    if rt.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(rt)
    torch.save(_rng_state(), tmp / f"rng_rank{rt.rank}.pt")
    if rt.is_main:
        core = _unwrap(model)
        torch.save(trainable_state(core), tmp / "trainable.pt")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "sampler": sampler.state_dict(), "epoch": epoch, "world": rt.world}, tmp / "state.pt")
        (tmp / "model.json").write_text(_dump(model_info), encoding="utf-8")
        save_adapter = getattr(core.visual, "save_pretrained", None)
        if callable(save_adapter):  # a peft adapter, loadable without this project
            save_adapter(str(tmp / "adapter"))
    _barrier(rt)
    if rt.is_main:
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    _barrier(rt)


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, sampler: PairSampler,
                    rt: Runtime) -> int:
    """Restore everything :func:`save_checkpoint` wrote; returns the number of finished epochs."""
    load_trainable_state(_unwrap(model), torch.load(folder / "trainable.pt", map_location="cpu"))
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    if state["world"] != rt.world:
        raise ValueError(f"{folder}: written by {state['world']} process(es), resumed with {rt.world}; "
                         f"resume with the same --nproc_per_node")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    _set_rng_state(torch.load(folder / f"rng_rank{rt.rank}.pt", map_location="cpu", weights_only=False))
    return int(state["epoch"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier(rt: Runtime) -> None:
    if rt.world > 1:
        dist.barrier()


def _dump(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
