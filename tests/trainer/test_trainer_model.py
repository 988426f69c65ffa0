"""The classifier: LoRA really changes the output, and only LoRA + head (or what --tune says) get gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.trainer.trainer_helpers import TINY_CONFIG
from trainer.model import (
    Classifier,
    ModelConfig,
    ModelError,
    build_classifier,
    count_parameters,
    load_trainable_state,
    register_model,
    trainable_state,
)

NAMES = ["cat", "dog", "fox"]


def _build(**kw) -> Classifier:
    model, _ = build_classifier(ModelConfig(model=str(TINY_CONFIG), lora_r=4, lora_alpha=8, **kw), NAMES)
    return model


def _grad_names(model: Classifier) -> set[str]:
    model.train()
    loss = model(torch.randn(2, 3, 32, 32)).logsumexp(dim=-1).mean()
    loss.backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_lora_changes_the_output_and_only_lora_and_head_get_gradients() -> None:
    model = _build()
    model.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = model(x).detach()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 2 * 3 + 2  # attn (in_proj + out_proj), mlp.c_fc, mlp.c_proj per block; 2 blocks
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n and "out_proj" not in n:
                p.add_(0.5 * torch.randn_like(p))
    assert not torch.allclose(model(x), before, atol=1e-4)
    grads = _grad_names(model)
    assert grads, "something must train"
    assert all("lora_" in n or n.startswith("head.") for n in grads), grads
    assert {"head.weight", "head.log_scale"} <= grads
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("head.") for n in trainable)


def test_full_and_head_tuning() -> None:
    full = _build(tune="full")
    assert all(p.requires_grad for p in full.parameters())
    assert any(n.startswith("visual.transformer") for n in _grad_names(full))
    head = _build(tune="head")
    assert {n for n, p in head.named_parameters() if p.requires_grad} == {"head.weight", "head.log_scale"}
    assert _grad_names(head) == {"head.weight", "head.log_scale"}


def test_zeroshot_head_is_the_normalised_text_embedding_and_init_is_seeded() -> None:
    a, b = _build(seed=5), _build(seed=5)
    assert torch.allclose(a.head.weight.norm(dim=-1), torch.ones(3), atol=1e-5)
    for (n, p), (_, q) in zip(a.visual.named_parameters(), b.visual.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    rand = _build(head="random", seed=5)
    assert not torch.allclose(rand.head.weight, a.head.weight)


def test_trainable_state_round_trip() -> None:
    a, b = _build(seed=1), _build(seed=1)
    with torch.no_grad():
        a.head.weight.add_(1.0)
    load_trainable_state(b, trainable_state(a))
    assert torch.equal(a.head.weight, b.head.weight)
    t, total = count_parameters(a)
    assert 0 < t < total
    with pytest.raises(ModelError, match="does not match"):
        load_trainable_state(_build(tune="head"), trainable_state(a))


def test_bad_model_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown open_clip model 'ViT-Nope'"):
        register_model("ViT-Nope")
    with pytest.raises(ModelError, match="not found"):
        register_model(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ModelError, match="needs vision_cfg, text_cfg"):
        register_model(str(bad))
    with pytest.raises(ModelError, match="not a known tag"):
        _build(pretrained="no-such-tag")


def test_uncached_pretrained_weights_without_network_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    # Issue 21: not ~1 minute of hub retries and 25 lines, but one line naming the cache and the way out.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as err:
        build_classifier(ModelConfig(model="ViT-B-32", pretrained="openai", tune="head"), NAMES)
    text = str(err.value)
    assert "\n" not in text and "not in the local Hugging Face cache" in text and "--pretrained none" in text
