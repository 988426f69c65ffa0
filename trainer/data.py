"""Training and test data: list files, manifests, class names, image loading and datasets.

Contract
- A data spec is either a *list file* (ImageNet-LT / Places-LT / iNat18 style: ``relative/path.jpg <label>``
  per line, paths relative to ``data_root``, which defaults to the list file's folder) or a *manifest*
  (``*.jsonl``, read with :func:`store.manifest.read_manifest`; paths relative to the manifest's folder).
  Blank lines and ``#`` comments in list files are ignored.
- Every problem with user input raises :class:`DataError` whose message is one line:
  ``file:line: reason`` for a row, ``file: reason`` for a whole file.
- :func:`read_samples` validates labels against the class count; :func:`check_images` checks that files exist
  (and, with ``skip_bad``, that they decode), dropping and counting bad ones only when asked to.
- Datasets take *keys* produced by the samplers in :mod:`trainer.balancemix`: ``PairDataset[(i, j, lam)]``
  returns the transformed pair; ``j < 0`` means "no partner" (an empty tensor stands in for ``x_j``).

Decoded images can be kept in memory (``cache_mb``): small datasets such as Fashion-MNIST-LT are decoded once
instead of once per epoch, which matters on a 2-core machine where PNG decoding would dominate a tiny model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T

from store import manifest  # also the list-file and class-names readers (store.lists), re-exported
from store.manifest import ListFileError, ManifestError, read_manifest


class DataError(ValueError):
    """Unusable input data; the message is one line that names the file (and line) and the fix."""


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``where`` is ``file:line`` of the row that listed it, for error messages."""

    path: Path
    label: int
    where: str


def read_class_names(path: Path | str) -> list[str]:
    """Read a class-names file: ``label<TAB>name`` lines, or one name per line (line index = label).

    Both ``"1<TAB>dog\\n0<TAB>cat\\n"`` and ``"cat\\ndog\\n"`` give ``["cat", "dog"]``
    (:func:`store.manifest.read_class_names`, with :class:`DataError` for its errors).
    """
    try:
        return manifest.read_class_names(path)
    except ListFileError as exc:
        raise _data_error(exc) from None


def read_samples(spec: Path | str, num_classes: int, data_root: Path | str | None = None) -> list[Sample]:
    """Read a list file or a manifest (``.jsonl``) into samples, checking every label is < ``num_classes``."""
    spec = Path(spec)
    if not spec.is_file():
        raise DataError(f"{spec}: no such file (expected a list file 'path label' or a manifest .jsonl)")
    samples = _read_manifest(spec) if is_manifest(spec) else read_list_file(spec, data_root)
    for s in samples:
        if s.label >= num_classes:
            raise DataError(f"{s.where}: label {s.label} is out of range: the class-names file has "
                            f"{num_classes} classes (labels 0..{num_classes - 1})")
    return samples


def is_manifest(path: Path) -> bool:
    """A manifest is a ``.jsonl`` file, or any file whose first non-blank character is ``{``."""
    if path.suffix == ".jsonl":
        return True
    head = _read_text(path)[:4096].lstrip()
    return head.startswith("{")


def read_list_file(path: Path | str, data_root: Path | str | None = None) -> list[Sample]:
    """Parse ``path label`` lines (:func:`store.manifest.read_list_file`); paths are joined to ``data_root``."""
    path = Path(path)
    root = Path(data_root) if data_root is not None else path.parent
    try:
        entries = manifest.read_list_file(path)
    except ListFileError as exc:
        raise _data_error(exc) from None
    if not entries:
        raise DataError(f"{path}: no samples listed (expected lines 'relative/path.jpg <label>')")
    return [Sample(root / e.path, e.label, e.where) for e in entries]


def class_counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    """Images per class. ``[Sample(.., 0, ..), Sample(.., 2, ..)], 3 -> [1, 0, 1]``."""
    counts = [0] * num_classes
    for s in samples:
        counts[s.label] += 1
    return counts


def check_images(samples: Sequence[Sample], skip_bad: bool) -> tuple[list[Sample], list[str]]:
    """Return (usable samples, problems). Without ``skip_bad`` the first missing file raises.

    With ``skip_bad`` every image is also opened and verified, so corrupt files are dropped up front rather
    than failing mid-epoch.
    """
    kept: list[Sample] = []
    problems: list[str] = []
    for s in samples:
        problem = None
        if not s.path.is_file():
            problem = f"{s.where}: image not found: {s.path}"
        elif skip_bad:
            problem = _verify_image(s)
        if problem is None:
            kept.append(s)
        elif skip_bad:
            problems.append(problem)
        else:
            raise DataError(problem + " (fix the path or --data-root, or pass --skip-bad-images)")
    return kept, problems


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
        self._cache: dict[Path, Image.Image] = {}

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
        cached = self._cache.get(sample.path)
        if cached is not None:
            return cached
        try:
            with Image.open(sample.path) as im:
                image = im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"{sample.where}: cannot read image {sample.path}: {_reason(exc)} "
                            f"(replace the file, or pass --skip-bad-images)") from None
        size = image.width * image.height * 3
        if self._used + size <= self._budget:
            self._cache[sample.path] = image
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


def subset_round_robin(samples: Sequence[Sample], limit: int) -> list[Sample]:
    """First ``limit`` samples taken class by class in turn, so a quick test subset keeps every class.

    Labels ``[0, 0, 0, 1, 1, 2]`` with ``limit=4`` give labels ``[0, 1, 2, 0]``.
    """
    if limit <= 0 or limit >= len(samples):
        return list(samples)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    queues = [by_class[k] for k in sorted(by_class)]
    picked: list[Sample] = []
    depth = 0
    while len(picked) < limit:
        for q in queues:
            if depth < len(q) and len(picked) < limit:
                picked.append(q[depth])
        depth += 1
    return picked


def _read_manifest(path: Path) -> list[Sample]:
    try:
        rows = read_manifest(path)
    except ManifestError as exc:
        raise DataError(str(exc)) from None
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    return [Sample(row.resolve(path.parent), row.label, f"{path}: row {n}")
            for n, row in enumerate(rows, start=1)]


def _verify_image(s: Sample) -> str | None:
    try:
        with Image.open(s.path) as im:
            im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return f"{s.where}: cannot read image {s.path}: {_reason(exc)}"
    return None


def _data_error(exc: ListFileError) -> DataError:
    if exc.label is not None:  # the trainer's wording for a bad label since issue 4 (users grep for it)
        return DataError(f"{exc.where}: label must be a non-negative integer, got {exc.label!r}")
    return DataError(str(exc))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def dump_json(obj: Any) -> str:
    """Stable, human-readable JSON for output files."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
