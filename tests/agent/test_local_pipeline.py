"""The local t2i provider on a real (tiny, random) diffusers pipeline: no network, no weights, CPU.

The pipeline is built from small configs and saved with ``save_pretrained`` (scripts/sim/tiny_diffusers.py), then
loaded back by ``DiffusionPipeline.from_pretrained`` — the code path a hub id takes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
from pathlib import Path

import pytest
from PIL import Image

from agent.lifecycle.budget import CallMeter
from agent.lifecycle.preflight import check_keys, check_reachable
from agent.providers import local_pipeline
from agent.providers.client import CallContext, Providers
from agent.providers.config import ConfigError, ProvidersConfig, load_providers_config
from agent.providers.endpoints import unbilled_roles
from agent.providers.local_pipeline import LocalPipelineError, RenderOptions, dtype_name, resolve_devices
from agent.providers.local_t2i import DiffusersTransport, open_local_transports
from agent.readout.cost import load_prices
from scripts.sim.tiny_diffusers import build
from store.blobs import BlobStore
from store.cache import CallCache
from store.traces import TraceStore


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("tiny-sd") / "pipe")


def config(model: Path | str, **t2i: str) -> ProvidersConfig:
    overrides = {"provider": "diffusers", "model": str(model), "image_size": "32x32", "steps": "2", **t2i}
    return load_providers_config(env={}, overrides={"t2i": overrides})


def test_dtype_by_device_and_devices_that_exist() -> None:
    assert dtype_name("cuda:1") == "bfloat16" and dtype_name("cpu") == "float32"
    import torch

    assert resolve_devices(None) == (["cuda:0"] if torch.cuda.is_available() else ["cpu"])
    assert resolve_devices("cpu") == ["cpu"]
    with pytest.raises(LocalPipelineError, match="cuda:99 is not here"):
        resolve_devices("cuda:99")


def test_a_saved_pipeline_loads_once_in_fp32_on_cpu_and_renders_fixed_shape_batches(tiny_sd: Path) -> None:
    pipe = local_pipeline.load(str(tiny_sd), "cpu")
    assert local_pipeline.load(str(tiny_sd), "cpu") is pipe  # once per process
    assert type(pipe).__name__ == "StableDiffusionPipeline" and str(pipe.unet.dtype) == "torch.float32"
    options = RenderOptions(steps=2, guidance=1.0, width=32, height=32)
    prompts = [f"a photo of the class fox, variant {i}" for i in range(5)]
    first = local_pipeline.render(pipe, prompts[:4], [0, 1, 2, 3], options, 4)
    again = local_pipeline.render(pipe, [prompts[4], prompts[2], prompts[0]], [4, 2, 0], options, 4)
    assert again[1] == first[2] and again[2] == first[0]  # batch-mates and order do not change an image
    assert len({hashlib.sha256(png).hexdigest() for png in first}) == 4  # different prompts and seeds differ
    assert Image.open(io.BytesIO(first[0])).size == (32, 32)
    other_seed = local_pipeline.render(pipe, [prompts[0]], [99], options, 4)
    assert other_seed[0] != first[0]


def test_a_folder_that_is_no_pipeline_is_one_config_error_line(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        asyncio.run(DiffusersTransport(config(tmp_path).t2i).load())
    message = str(info.value)
    assert message.startswith(f"t2i model '{tmp_path}': cannot load a diffusers pipeline on cpu (")
    assert "\n" not in message and "model_index.json" in message


def test_preflight_asks_no_key_and_dials_no_server_for_a_local_role(tiny_sd: Path) -> None:
    cfg = config(tiny_sd, base_url="https://images.example.invalid/v1")
    dialled: list[tuple[str, int]] = []

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        dialled.append(address)
        return socket.socket()

    check_keys(cfg, env={"OPENAI_API_KEY": "sk-x"})  # the chat roles still need theirs
    check_reachable(cfg, connect=connect)
    assert dialled == [("api.openai.com", 443)]  # lmm and llm share one URL; t2i has none
    with pytest.raises(ConfigError, match="lmm: environment variable OPENAI_API_KEY is not set"):
        check_keys(cfg, env={})


async def test_providers_render_through_the_pipeline_into_blobs_cache_and_traces(tiny_sd: Path,
                                                                                tmp_path: Path) -> None:
    cfg = config(tiny_sd, batch_size="2", seed="5")
    blobs = BlobStore(tmp_path / "blobs")
    cache = await CallCache.open(tmp_path / "cache.sqlite")
    traces = await TraceStore.open(tmp_path / "traces.sqlite")
    local = await open_local_transports(cfg, log=lambda line: None)
    env = {"OPENAI_API_KEY": "sk-x"}  # for the chat roles' clients only
    providers = await Providers.open(cfg, cache=cache, traces=traces, blobs=blobs, env=env, transports=local,
                                     meter=CallMeter(prices=load_prices(), unbilled=unbilled_roles(cfg)))
    assert "t2i" not in providers.limiters  # no server, no limiter
    try:
        ctx = [CallContext(run_id="r", class_name="fox", node="render", sample_index=i) for i in range(3)]
        first = await asyncio.gather(*(providers.generate_image("a photo of a fox", ctx=c) for c in ctx))
        again = await asyncio.gather(*(providers.generate_image("a photo of a fox", ctx=c) for c in ctx))
    finally:
        await providers.close()
    assert local["t2i"].stats.forward_passes == 2 and local["t2i"].stats.images == 3
    assert [r.cache_hit for r in first] == [False] * 3 and [r.cache_hit for r in again] == [True] * 3
    assert [r.sha256 for r in first] == [r.sha256 for r in again]
    assert len({r.sha256 for r in first}) == 3  # a seed per sample index
    assert blobs.read(first[0].sha256)[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [r for r in await traces.query(run_id="r") if not r.cache_hit]
    await traces.close()
    await cache.close()
    assert len(rows) == 3 and all(r.cost_usd == 0.0 and r.status == "ok" and r.images == 1 for r in rows)
    assert {r.meta["device"] for r in rows} == {"cpu"} and all(r.meta["gpu_s"] > 0 for r in rows)
    assert rows[0].request["provider"] == "diffusers" and rows[0].request["seed"] == 5
