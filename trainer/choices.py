"""The trainer's named choices, in a module without heavy imports so ``--help`` and parsing stay instant."""

from __future__ import annotations

MODES = ("plain", "balanced", "mixup", "balancemix")  # Table 4's rows; balancemix is the paper's method
MIXING_MODES = ("mixup", "balancemix")
LOSSES = ("ce", "logit-adjust")
LA_PRIORS = ("sampler", "original")  # logit adjustment's prior: what the sampler draws, or D_o's counts
TUNES = ("lora", "full", "head")
HEADS = ("zeroshot", "random")
