"""The CLIP scorer: pure score maths, and a tiny random open_clip model (no weights, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from agent.providers.scorer import ClipScorer, ScorerError, cosine_scores, softmax_scores

TINY = {"embed_dim": 64,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "tiny-scorer.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def scorer(tiny_config) -> ClipScorer:
    return ClipScorer.load(str(tiny_config), None, batch_size=2, device="cpu")


@pytest.fixture
def images(tmp_path) -> list[Path]:
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9), (200, 100, 0)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 28), colour).save(path)
        paths.append(path)
    return paths


def test_cosine_is_raw_cosine_of_normalised_vectors():
    img = torch.tensor([[3.0, 4.0], [-1.0, 0.0]])
    assert cosine_scores(img, torch.tensor([1.0, 0.0])) == pytest.approx([0.6, -1.0])


def test_softmax_is_the_probability_of_the_target_text():
    img = torch.tensor([[1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p0 = softmax_scores(img, texts, 0, logit_scale=2.0)[0]
    p1 = softmax_scores(img, texts, 1, logit_scale=2.0)[0]
    assert p0 == pytest.approx(torch.softmax(torch.tensor([2.0, 0.0]), 0)[0].item())
    assert p0 + p1 == pytest.approx(1.0)


async def test_tiny_model_scores_in_batches_and_matches_one_by_one(scorer, images):
    together = await scorer.cosine(images, "a photo of a red fox.")
    alone = [(await scorer.cosine([p], "a photo of a red fox."))[0] for p in images]
    assert len(together) == 5 and all(-1.0 <= s <= 1.0 for s in together)
    assert together == pytest.approx(alone, abs=1e-5)  # batching (size 2 here) does not change a score
    assert len(set(round(s, 6) for s in together)) > 1  # different images, different scores


async def test_softmax_over_texts_sums_to_one(scorer, images):
    texts = ["a photo of a red fox.", "a photo of a snow owl.", "A photo of the class sea turtle with a shell."]
    per_target = [await scorer.softmax(images[:2], texts, t) for t in range(3)]
    for i in range(2):
        assert sum(p[i] for p in per_target) == pytest.approx(1.0, abs=1e-5)


async def test_random_weights_are_the_same_in_every_load(tiny_config, scorer, images):
    again = ClipScorer.load(str(tiny_config), None, device="cpu")
    assert await again.cosine(images, "x") == pytest.approx(await scorer.cosine(images, "x"), abs=1e-6)


def test_count_tokens_tells_when_clip_truncates(scorer):
    short = scorer.count_tokens("A photo of the class red fox with a bushy tail.")
    assert 5 < short < scorer.context_length == 77
    assert scorer.count_tokens(" ".join(["feature"] * 100)) == 102  # 100 words + start and end tokens


def test_bad_model_is_one_line_error(tmp_path):
    with pytest.raises(ScorerError, match="config file not found"):
        ClipScorer.load(str(tmp_path / "missing.json"), None)
    with pytest.raises(ScorerError, match="cannot build the model") as info:
        ClipScorer.load("no-such-model-xyz", None)
    assert "\n" not in str(info.value)
