"""Step 6 — iterative evaluation (paper §3.1): score each new image against C_y with CLIP.

Contract:

- Scores every item in status ``rendered`` in one scorer call (the scorer batches and runs off the event
  loop). ``cosine``: S = cos(CLIP_vis(image), CLIP_text(C_y)), raw, as the official code does.
  ``softmax``: the probability of this class among every class's text (``GraphDeps.class_texts``).
- The score is appended to the item's ``scores`` (one per evaluation round). S >= μ -> ``accepted``;
  below μ -> ``low`` while the item has refine rounds left (``round < settings.max_rounds``), else
  ``rejected``.
- Routes to refine when any item is ``low``, otherwise to review when the run asks for it (``--review``),
  else to finalize.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.graph.state import ClassState, GraphDeps, Item, copy_item


async def evaluate(state: ClassState, runtime: Runtime[GraphDeps]) -> Command[Literal["refine", "review", "finalize"]]:
    """Score the freshly rendered items and decide which go to refine."""
    deps = runtime.context
    settings = deps.settings
    items = [copy_item(item) for item in state["items"]]
    todo = [item for item in items if item["status"] == "rendered"]
    if todo:
        paths = [deps.blobs.path(item["sha256"] or "", item["ext"] or "png") for item in todo]
        scores = await _score(deps, state, paths)
        for item, score in zip(todo, scores, strict=True):
            item["scores"].append(round(float(score), 6))
            item["status"] = classify(score, item, threshold=settings.threshold, max_rounds=settings.max_rounds)
    update = {"items": items, "eval_round": state["eval_round"] + 1}
    if any(item["status"] == "low" for item in items):
        return Command(update=update, goto="refine")
    return Command(update=update, goto="review" if settings.review else "finalize")


def classify(score: float, item: Item, *, threshold: float, max_rounds: int) -> Literal["accepted", "low", "rejected"]:
    """``accepted`` at or above μ; else ``low`` (refine it) while rounds remain, else ``rejected``.

    >>> item = {"round": 3}
    >>> classify(0.2, item, threshold=0.25, max_rounds=3), classify(0.3, item, threshold=0.25, max_rounds=3)
    ('rejected', 'accepted')
    """
    if score >= threshold:
        return "accepted"
    return "low" if item["round"] < max_rounds else "rejected"


async def _score(deps: GraphDeps, state: ClassState, paths: list[Path]) -> list[float]:
    if deps.settings.score == "cosine":
        return await deps.scorer.cosine(paths, state["template"])
    # This class's own C_y always stands for it, even if the driver's table predates it.
    table = {**deps.class_texts, state["label"]: state["template"]}
    labels = sorted(table)
    texts = [table[label] for label in labels]
    return await deps.scorer.softmax(paths, texts, labels.index(state["label"]))
