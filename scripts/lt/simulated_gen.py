"""Simulated generated data D_g for benchmarks where no text-to-image model is available.

This is **not** LTGC's generator. It stands in for it so the training side (BalanceMix and its ablations)
can be measured on real images offline:

- D_g images are real training images that are *not* in the long-tailed split (the make-lt reserve, so
  D_g and D_o never share an image), labelled with their true class — like an ideal class-faithful
  generator;
- passed through ONE fixed domain shift (:func:`domain_shift`) so that D_g differs in domain from D_o the
  way rendered images differ from photos. ``shift=False`` writes the same images unshifted, the
  "ideal generator" control;
- each class is filled up to K images in D_o ∪ D_g: ``N_y = max(0, K - n_y)`` (paper §3.1, K_y = M_y + N_y),
  so head classes above K get none and D_o ∪ D_g stays imbalanced.

The output is a manifest (``store.manifest``) with ``source = "generated"``; the fields a real run fills
from the agent hold fixed values: ``description`` says what the image is, ``score`` is 1.0 (not scored),
``round`` 0, ``run_id`` ``simulated-shift`` or ``simulated-clean``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from scripts.lt.sources import ImageSource
from store.manifest import ManifestRow, write_manifest
from store.slug import slugify

# The shift, fixed once for every benchmark run (changing it changes what the benchmark measures):
BLUR_RADIUS = 1.0          # Gaussian blur: generated images are smoother than the real ones
CONTRAST = 0.7             # contrast scaled to 70% ...
BRIGHTNESS_LIFT = 40.0     # ... around a lifted black level: the black background becomes dark grey
STRIPE_AMPLITUDE = 15.0    # plus a diagonal cosine grating, a texture no real image has
STRIPE_PERIOD_PX = 5.0


def domain_shift(image: Image.Image) -> Image.Image:
    """The fixed shift: blur, then contrast 0.7 with black lifted to 40, then a diagonal stripe texture.

    Works on any size; returns an ``L`` image of the same size. Deterministic (no randomness), so every
    D_g image goes through exactly the same function.

    >>> px = np.asarray(domain_shift(Image.new("L", (6, 6), 0)))
    >>> int(px.min()) >= 25 and int(px.max()) <= 55 and len(np.unique(px)) > 1
    True
    """
    blurred = image.convert("L").filter(ImageFilter.GaussianBlur(radius=BLUR_RADIUS))
    pixels = np.asarray(blurred, dtype=np.float32)  # (H, W)
    rows, cols = np.indices(pixels.shape, dtype=np.float32)
    stripes = STRIPE_AMPLITUDE * np.cos(2 * np.pi * (rows + cols) / STRIPE_PERIOD_PX)
    shifted = CONTRAST * pixels + BRIGHTNESS_LIFT + stripes
    return Image.fromarray(np.clip(np.rint(shifted), 0, 255).astype(np.uint8), mode="L")


def fill_counts(train_counts: Mapping[int, int], k: int) -> dict[int, int]:
    """``N_y = max(0, K - n_y)``: generated images per class to fill each class up to K.

    >>> fill_counts({0: 1000, 1: 77, 2: 10}, 300)
    {0: 0, 1: 223, 2: 290}
    """
    return {label: max(0, k - n) for label, n in sorted(train_counts.items())}


def write_generated(
    out: Path,
    source: ImageSource,
    reserve: Mapping[int, Sequence[int]],
    wanted: Mapping[int, int],
    *,
    shift: bool,
) -> int:
    """Write D_g images and ``out/manifest.jsonl``; returns the number of images.

    ``reserve[label]`` lists source indices not in D_o in a seeded order; the first ``wanted[label]`` are
    used, so the shifted and clean variants hold the same underlying images.
    """
    rows: list[ManifestRow] = []
    run_id = "simulated-shift" if shift else "simulated-clean"
    what = "with the fixed domain shift (blur, contrast, stripes)" if shift else "unshifted (ideal generator)"
    for label, n in sorted(wanted.items()):
        if n > len(reserve[label]):
            raise ValueError(
                f"class {source.class_names[label]!r} has {len(reserve[label])} unused images, "
                f"D_g needs {n}; lower --k"
            )
        if n == 0:
            continue
        folder = Path("images") / slugify(source.class_names[label])
        (out / folder).mkdir(parents=True, exist_ok=True)
        for index in sorted(reserve[label][:n]):
            image = source.image(index)
            if shift:
                image = domain_shift(image)
            rel = (folder / f"{index:06d}.png").as_posix()
            image.save(out / rel, format="PNG")
            rows.append(ManifestRow(
                path=rel, label=label, class_name=source.class_names[label], source="generated",
                sha256=hashlib.sha256((out / rel).read_bytes()).hexdigest(),
                description=f"simulated: real image {source.describe(index)} {what}",
                score=1.0, round=0, run_id=run_id,
            ))
    return write_manifest(out / "manifest.jsonl", rows)
