"""Image loading and datasets: transforms, a decoded-image cache, and the datasets the samplers index.

Contract
- Which images and labels a run uses is :mod:`trainer.samples` (list files, manifests, ImageFolder trees,
  class names); this module turns those samples into tensors.
- An image that cannot be decoded raises :class:`trainer.samples.DataError` (one line: ``file:line``, the
  path, the fix).
- Datasets take *keys* produced by the samplers in :mod:`trainer.balancemix`: ``PairDataset[(i, j, lam)]``
  returns the transformed pair; ``j < 0`` means "no partner" (an empty tensor stands in for ``x_j``).

Decoded images can be kept in memory (``cache_mb``): small datasets such as Fashion-MNIST-LT are decoded once
instead of once per epoch, which matters on a 2-core machine where PNG decoding would dominate a tiny model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T

from trainer.samples import DataError, Sample, reason_of


def build_transforms(image_size: int, mean: Sequence[float], std: Sequence[float],
                     crop_min_scale: float) -> tuple[Callable[[Image.Image], torch.Tensor],
                                                     Callable[[Image.Image], torch.Tensor]]:
    """(train, eval) transforms with the model's normalisation. Train: random resized crop + flip."""
    normalize = ToNormalizedTensor(mean, std)
    train = T.Compose([RandomResizedCropFlip(image_size, scale=(crop_min_scale, 1.0)), normalize])
    # Eval follows open_clip's preprocessing: resize the short side, centre crop.
    evaluate = T.Compose([
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        normalize,
    ])
    return train, evaluate


class RandomResizedCropFlip:
    """``T.RandomResizedCrop(size, scale, ratio, BICUBIC)`` then ``T.RandomHorizontalFlip()``, same law.

    Same algorithm as torchvision (up to 10 tries of area ~ U(scale) x H x W and log-aspect ~ U(log ratio),
    then the centre-crop fallback), but every random number of an image comes from ONE ``torch.rand`` call
    (so DataLoader's per-worker torch seeding still makes it reproducible) and the arithmetic is plain
    Python: torchvision's ~10 tensor ops per image cost more than the crop itself on small images.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size, self.scale = size, scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.ratio = ratio

    def box(self, width: int, height: int, u: Sequence[float]) -> tuple[int, int, int, int]:
        """(left, top, w, h) of the crop, from 40 uniforms in [0, 1) (4 per try). Pure: tests call it."""
        area = width * height
        for k in range(10):
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[4 * k])
            aspect = math.exp(self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * u[4 * k + 1])
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(u[4 * k + 3] * (width - w + 1)), int(u[4 * k + 2] * (height - h + 1)), w, h
        in_ratio = width / height  # fallback, as torchvision: the central crop within the ratio bounds
        w, h = width, height
        if in_ratio < self.ratio[0]:
            h = round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w = round(height * self.ratio[1])
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, image: Image.Image) -> Image.Image:
        u = torch.rand(41).tolist()
        left, top, w, h = self.box(image.width, image.height, u)
        out = image.crop((left, top, left + w, top + h)).resize((self.size, self.size), Image.Resampling.BICUBIC)
        return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if u[40] < 0.5 else out


class ToNormalizedTensor:
    """``T.ToTensor()`` then ``T.Normalize(mean, std)`` fused: RGB PIL -> float32 (3, H, W), bit-identical.

    The same float32 arithmetic ((x / 255 - mean) / std), minus the per-call work of the two torchvision
    ops (mean/std tensors rebuilt and checked every call): 30-40% cheaper per image, which matters where
    the data loader, not the model step, bounds training (the tiny config on CPU). Done in numpy: on a
    28 px image torch's per-op dispatch cost more than the arithmetic (~45 -> ~30 µs per image).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(list(mean), dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(list(std), dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        chw = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32, order="C")  # (3, H, W), new
        chw /= np.float32(255.0)
        chw -= self.mean
        chw /= self.std
        return torch.from_numpy(chw)


class ImageLoader:
    """Decode images to RGB PIL, keeping decoded copies in memory up to ``cache_mb`` megabytes."""

    def __init__(self, cache_mb: float = 0.0) -> None:
        self._budget = int(cache_mb * 1024 * 1024)
        self._used = 0
        self._cache: dict[tuple[Path, tuple[int, int] | None], Image.Image] = {}

    def preload(self, samples: Sequence[Sample]) -> int:
        """Decode ``samples`` now, in order, until the budget is full; returns how many are cached.

        Called in the main process before DataLoader workers start, so forked workers share the decoded
        images instead of each decoding (and re-decoding every epoch) on its own.
        """
        for s in samples:
            if self._used >= self._budget:
                break
            self.load(s)
        return len(self._cache)

    def load(self, sample: Sample) -> Image.Image:
        key = (sample.path, sample.part)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            with sample.open() as im:
                image = im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"{sample.where}: cannot read image {sample.path}: {reason_of(exc)} "
                            f"(replace the file, or pass --skip-bad-images)") from None
        size = image.width * image.height * 3
        if self._used + size <= self._budget:
            self._cache[key] = image
            self._used += size
        return image


class _ImageDataset:
    """Samples + transform + loader; subclasses say what one item is."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor],
                 loader: ImageLoader) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)


class PairDataset(_ImageDataset, Dataset[dict[str, Any]]):
    """Map-style dataset keyed by ``(i, j, lam)``: x_i, and x_j when ``j >= 0`` (indices into ``samples``)."""

    def __getitem__(self, key: tuple[int, int, float]) -> dict[str, Any]:  # type: ignore[override]
        i, j, lam = key
        x_i = self.transform(self.loader.load(self.samples[i]))
        x_j = self.transform(self.loader.load(self.samples[j])) if j >= 0 else torch.empty(0)
        y_j = self.samples[j].label if j >= 0 else -1
        return {"x_i": x_i, "y_i": self.samples[i].label, "x_j": x_j, "y_j": y_j,
                "lam": torch.tensor(lam, dtype=torch.float32)}


class EvalDataset(_ImageDataset, Dataset[tuple[torch.Tensor, int]]):
    """Plain (image, label) dataset for evaluation."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        s = self.samples[index]
        return self.transform(self.loader.load(s)), s.label


def dump_json(obj: Any) -> str:
    """Stable, human-readable JSON for output files."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
