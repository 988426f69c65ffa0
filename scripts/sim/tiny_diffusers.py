"""A tiny random Stable Diffusion pipeline written to a folder: the local t2i provider with no weights, no network.

Contract: ``build(folder, seed=0) -> Path`` assembles a ``StableDiffusionPipeline`` from small configs — a
2-block ``UNet2DConditionModel``, a 2-block ``AutoencoderKL``, a 1-layer transformers ``CLIPTextModel``, a
``CLIPTokenizer`` whose byte-level ``vocab.json`` / ``merges.txt`` this function writes, a DDIM scheduler —
and saves it with ``save_pretrained(folder)``. ``DiffusionPipeline.from_pretrained(folder)`` then loads it by
the same code path a hub id takes (agent/providers/local_pipeline.py). Seeded: the same ``seed`` gives the same weights.
Images of any multiple-of-8 size come out (32x32 renders in milliseconds on a CPU); they are noise-like.

    python -m scripts.sim.tiny_diffusers /tmp/tiny-sd      # then: --t2i-provider diffusers --t2i-model /tmp/tiny-sd
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("scripts.sim.tiny_diffusers", "the folder may be incomplete; run it again")

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build", "byte_vocab"]


def byte_vocab() -> dict[str, int]:
    """CLIP's byte-level alphabet (each byte as a printable character), alone and as a word end ``</w>``,
    then the two special tokens: a BPE vocabulary with no merges that can spell any text."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]  # the rest map to 256.. (GPT-2's scheme)
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def build(folder: Path, seed: int = 0) -> Path:
    """Write the tiny pipeline to ``folder`` (see the module docstring); returns ``folder``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):  # no progress bars or notes for a test fixture
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    vocab = byte_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(vocab_file=str(Path(tmp) / "vocab.json"),
                                  merges_file=str(Path(tmp) / "merges.txt"), model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)
    end = vocab["<|endoftext|>"]
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        max_position_embeddings=77, projection_dim=16, bos_token_id=vocab["<|startoftext|>"], eos_token_id=end,
        pad_token_id=end))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(folder)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m scripts.sim.tiny_diffusers FOLDER", file=sys.stderr)
        return 2
    print(build(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
