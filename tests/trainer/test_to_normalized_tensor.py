"""The data-loading speed fixes in trainer.data: drop-ins for ToTensor + Normalize and RandomResizedCrop + flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from trainer.data import RandomResizedCropFlip, ToNormalizedTensor, build_transforms

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.mark.parametrize(("side", "mode"), [(28, "RGB"), (33, "L"), (64, "RGBA")])
def test_matches_totensor_then_normalize_bit_for_bit(side: int, mode: str) -> None:
    rng = np.random.default_rng(side)
    image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).convert(mode)
    reference = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(image.convert("RGB"))
    fused = ToNormalizedTensor(MEAN, STD)(image)
    assert fused.shape == (3, side, side) and fused.dtype == torch.float32 and fused.is_contiguous()
    assert torch.equal(fused, reference)


def test_build_transforms_output_shape_and_scale() -> None:
    train, evaluate = build_transforms(32, MEAN, STD, crop_min_scale=0.5)
    white = Image.new("RGB", (40, 40), (255, 255, 255))
    for tf in (train, evaluate):
        x = tf(white)
        assert x.shape == (3, 32, 32)
        expected = (1.0 - torch.tensor(MEAN)) / torch.tensor(STD)  # a white image, per channel
        assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-5)


def test_crop_box_follows_the_random_resized_crop_law() -> None:
    crop = RandomResizedCropFlip(32, scale=(0.35, 1.0))
    rng = np.random.default_rng(0)
    for _ in range(500):
        width, height = (int(v) for v in rng.integers(8, 300, 2))
        u = rng.random(41).tolist()
        left, top, w, h = crop.box(width, height, u)
        assert 0 <= left and left + w <= width and 0 <= top and top + h <= height and w > 0 and h > 0
    # First try accepted: area fraction and aspect ratio come from the first two uniforms.
    left, top, w, h = crop.box(100, 100, [0.0, 0.5, 0.0, 0.0] + [0.9] * 37)
    assert (w, h) == (59, 59) and (left, top) == (0, 0)  # sqrt(0.35 * 100 * 100) = 59.2, aspect 1
    # No try fits (a 1000:1 strip): torchvision's centre-crop fallback within the ratio bounds.
    assert crop.box(1000, 1, [1.0, 1.0, 0.5, 0.5] * 10 + [0.0]) == (499, 0, 1, 1)


def test_crop_flip_is_reproducible_under_torch_seeding_and_flips_half_the_time() -> None:
    crop = RandomResizedCropFlip(16, scale=(0.5, 1.0))
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    torch.manual_seed(3)
    first = [np.asarray(crop(image)) for _ in range(5)]
    torch.manual_seed(3)
    again = [np.asarray(crop(image)) for _ in range(5)]
    assert all(a.shape == (16, 16, 3) and np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # Full-image crop (scale 1, ratio 1, square input): the output is the image or its mirror, ~half each.
    whole = RandomResizedCropFlip(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    square = image.crop((0, 0, 30, 30))
    plain = np.asarray(square.resize((16, 16), Image.Resampling.BICUBIC))
    outs = [np.asarray(whole(square)) for _ in range(200)]
    flips = sum(np.array_equal(o, plain[:, ::-1]) for o in outs)
    assert all(np.array_equal(o, plain) or np.array_equal(o, plain[:, ::-1]) for o in outs)
    assert 60 < flips < 140
