"""Image sources for make-lt: an ImageFolder tree, or Fashion-MNIST's IDX files.

An :class:`ImageSource` is the class names, one label per image, and a loader ``image(i)``. Images are
loaded lazily, so only the images a split uses are decoded.

- **ImageFolder** (torchvision's layout): ``root/<class name>/<image>``, read by
  :func:`store.lists.read_image_folder` — the rule the agent and the trainer use: classes are the
  non-hidden sub-folders in sorted order (label = position), images the files directly inside with an
  image extension, sorted by path. Here a class folder without images is an error.
- **Fashion-MNIST IDX** (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-…``):
  the IDX format of LeCun et al. (big-endian magic 0x00000803 for images, 0x00000801 for labels, then the
  dimensions, then uint8 data). Gzip is detected by the file's magic bytes, not its name.

Every problem is a :class:`SourceError` with one line naming the file and the fix.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from store.errors import UsageError
from store.lists import IMAGE_EXTENSIONS, ListFileError, read_image_folder

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


class SourceError(UsageError):
    """An image source that cannot be read; the message names the file and how to fix it."""


@dataclass(frozen=True)
class ImageSource:
    """Images with labels; ``image(i)`` decodes image ``i`` (``L`` or ``RGB`` mode)."""

    class_names: list[str]
    labels: list[int]
    image: Callable[[int], Image.Image]
    describe: Callable[[int], str]  # where image i came from, for error messages and provenance


def image_folder(root: Path) -> ImageSource:
    """Scan ``root/<class>/<image>``; a class folder without images is an error (it would get label gaps)."""
    try:
        folders = read_image_folder(root)
    except ListFileError as exc:
        raise SourceError(str(exc)) from None
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        if not folder.images:
            raise SourceError(f"{root / folder.name}: class folder has no images directly inside "
                              f"({', '.join(IMAGE_EXTENSIONS)})")
        paths.extend(folder.images)
        labels.extend([label] * len(folder.images))
    classes = [folder.name for folder in folders]

    def load(i: int) -> Image.Image:
        try:
            with Image.open(paths[i]) as img:
                img.load()
                return img if img.mode in ("L", "RGB") else img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise SourceError(f"{paths[i]}: cannot read image ({exc}); remove or replace the file") from None

    return ImageSource(classes, labels, load, lambda i: str(paths[i]))


def fashion_mnist(folder: Path, part: str) -> ImageSource:
    """Fashion-MNIST's ``train`` or ``t10k`` part from ``folder`` (files with or without ``.gz``)."""
    images = read_idx(_find_idx(folder, f"{part}-images-idx3-ubyte"), _IDX_IMAGES_MAGIC)
    labels = read_idx(_find_idx(folder, f"{part}-labels-idx1-ubyte"), _IDX_LABELS_MAGIC)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise SourceError(
            f"{folder}: {part} images {images.shape} and labels {labels.shape} do not match; "
            "re-install the dataset"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise SourceError(f"{folder}: {part} labels go up to {int(labels.max())}; Fashion-MNIST has 10")

    def load(i: int) -> Image.Image:
        return Image.fromarray(images[i], mode="L")

    return ImageSource(
        list(FASHION_MNIST_CLASSES), [int(x) for x in labels], load, lambda i: f"{part}[{i}]"
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file as a uint8 array of its stored shape; checks magic number and size."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != magic:
        raise SourceError(f"{path}: not an IDX file of the expected kind (magic {magic:#010x})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise SourceError(f"{path}: truncated or oversized IDX data ({len(raw) - header} bytes, want {expected})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise SourceError(
        f"{folder}: missing {stem}.gz; point --fashion-mnist at the dataset folder "
        "(apt-get install -y dataset-fashion-mnist puts it in /usr/share/datasets/fashion-mnist)"
    )
