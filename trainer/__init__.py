"""LTGC trainer (paper §3.2): BalanceMix + LoRA fine-tuning of CLIP's visual tower, many/medium/few evaluation.

Standalone: imports nothing from ``agent/``; from outside itself only ``store.manifest`` (and, in the entry
points, the stdlib-only ``store.interrupt``). Modules, in the order a run uses them: ``train`` (CLI,
``main(argv)``) -> ``run`` (wiring) -> ``data`` (lists, manifests, images) -> ``balancemix`` (samplers and
mixing) -> ``model`` (open_clip + peft + cosine head) -> ``losses`` -> ``loop`` (epochs, DDP, checkpoints) ->
``evaluate`` (metrics and reports); ``eval`` scores a saved checkpoint.
Heavy imports (torch, open_clip, peft) happen only when a run starts, so ``--help`` stays fast.
"""
