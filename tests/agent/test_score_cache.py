"""The CLIP score cache: a rerun encodes no image; model, weights, text or mode changes miss."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from PIL import Image

from agent.providers.score_cache import CachedScorer, image_sha256
from agent.providers.scorer import ClipScorer
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from store.blobs import BlobStore
from store.cache import CallCache
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.agent.test_scorer import TINY


def _counting(scorer: ClipScorer, counter: list[int]) -> ClipScorer:
    """Count the images ``scorer`` runs through the image tower."""
    original = scorer.model.encode_image

    def encode_image(pixels, *args, **kwargs):
        counter.append(int(pixels.shape[0]))
        return original(pixels, *args, **kwargs)

    scorer.model.encode_image = encode_image
    return scorer


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("clip")
    a, b = root / "tiny-a.json", root / "tiny-b.json"
    a.write_text(json.dumps(TINY))
    b.write_text(json.dumps({**TINY, "embed_dim": 32}))
    return a, b


@pytest.fixture
def blob_images(tmp_path) -> list[Path]:
    blobs = BlobStore(tmp_path / "blobs")
    paths = []
    for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]:
        image = tmp_path / "tmp.png"
        Image.new("RGB", (20, 28), colour).save(image)
        paths.append(blobs.path(blobs.put(image.read_bytes(), "png"), "png"))
    return paths


def test_hits_are_bit_identical_and_encode_nothing_and_inputs_change_misses(tmp_path, configs, blob_images):
    encoded: list[int] = []
    scorer = _counting(ClipScorer.load(str(configs[0]), None, batch_size=2, device="cpu"), encoded)

    async def go() -> None:
        async with await CallCache.open(tmp_path / "cache.sqlite") as cache:
            cached = CachedScorer(scorer, cache)
            first = await cached.cosine(blob_images, "a photo of a fox")
            assert sum(encoded) == 3 and first == await scorer.cosine(blob_images, "a photo of a fox")
            encoded.clear()
            again = await cached.cosine(blob_images, "a photo of a fox")
            assert again == first and [repr(x) for x in again] == [repr(x) for x in first]  # bit for bit
            assert encoded == [] and cached.hits == 3
            await cached.cosine(blob_images, "a photo of an owl")  # another text: every image misses
            assert sum(encoded) == 3
            encoded.clear()
            await cached.softmax(blob_images, ["a photo of a fox", "a photo of an owl"], 0)  # another mode
            assert sum(encoded) == 3
            encoded.clear()
            await cached.softmax(blob_images, ["a photo of a fox", "a photo of an owl"], 1)  # another target
            assert sum(encoded) == 3
            encoded.clear()
            other = CachedScorer(scorer, cache, identity="0" * 64)  # another model / weights: misses
            await other.cosine(blob_images, "a photo of a fox")
            assert sum(encoded) == 3

    asyncio.run(go())


def test_identity_follows_model_config_and_weights(configs, tmp_path):
    a = ClipScorer.load(str(configs[0]), None, device="cpu").cache_identity
    assert a and a == ClipScorer.load(str(configs[0]), None, device="cpu").cache_identity
    assert ClipScorer.load(str(configs[1]), None, device="cpu").cache_identity != a
    from agent.providers.score_cache import scorer_identity

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"1")
    before = scorer_identity("tiny-a", str(weights), "cpu")
    weights.write_bytes(b"22")
    assert scorer_identity("tiny-a", str(weights), "cpu") != before != scorer_identity("tiny-a", None, "cpu")
    assert scorer_identity("tiny-a", None, "cpu") != scorer_identity("tiny-a", None, "cuda")


def test_image_identity_is_the_content_hash(tmp_path, blob_images):
    loose = tmp_path / "loose.png"
    loose.write_bytes(blob_images[0].read_bytes())
    assert image_sha256(loose) == image_sha256(blob_images[0]) == blob_images[0].name.split(".")[0]


def test_a_warm_rerun_computes_zero_image_embeddings(tmp_path, monkeypatch):
    encoded: list[int] = []
    load = ClipScorer.load
    monkeypatch.setattr(ClipScorer, "load", classmethod(lambda cls, *a, **kw: _counting(load(*a, **kw), encoded)))
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    with Simulator(SimConfig(latency_ms=0, seed=0)) as sim:
        assert main(agent_argv(data, out, sim.base_url, k=6)) == 0
        assert sum(encoded) > 0
        manifest = (out / "manifest.jsonl").read_bytes()
        encoded.clear()
        sim.reset_stats()
        assert main(agent_argv(data, out, sim.base_url, k=6)) == 0
        assert sim.stats()["total"] == 0 and encoded == []
        assert (out / "manifest.jsonl").read_bytes() == manifest
        # Another CLIP model over the same folder: every score is recomputed.
        other = tmp_path / "other-clip.json"
        other.write_text(json.dumps({**json.loads((data / "tiny-clip.json").read_text()), "embed_dim": 32}))
        argv = agent_argv(data, out, sim.base_url, "--overwrite", k=6)  # another model: start over on purpose
        argv[argv.index("--clip-model") + 1] = str(other)
        main(argv)
        assert sum(encoded) > 0
