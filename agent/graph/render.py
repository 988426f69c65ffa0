"""Step 5 — render (paper §3.1): one T2I image per new description, and re-renders after refine.

Contract:

- On first entry the items are created from the first N_y new descriptions (the official code renders
  only the new descriptions, never the existing ones). Later entries (after refine) render only items in
  status ``pending``.
- One ``t2i`` call per pending item, all fanned out under the role's limiter; ``sample_index`` = the
  item's index, ``round`` = its refinement count. The image bytes go to the blob store (by the providers);
  the item keeps only ``sha256`` and ``ext``.
- An item whose call fails for good gets status ``failed``, the error message and its ``error_kind``; its
  siblings go on. A render refused by content policy (400 ``content_policy_violation`` /
  ``moderation_blocked``: kind ``refused``) is the paper's refinement case instead: while the item has
  rounds left (``round < R``) it becomes ``low`` with no score, so evaluate routes it to refine (Prompt 5
  rewrites the description) and render draws the new text; when R is spent it is ``failed`` (missing).
"""

from __future__ import annotations

from langgraph.runtime import Runtime

from agent.graph.common import ItemFailure, call_ctx, fan_out, image_usage, sum_usage
from agent.graph.state import ClassState, GraphDeps, Item, copy_item


def new_items(descriptions: list[str], n_y: int) -> list[Item]:
    """Fresh items for the first ``n_y`` descriptions.

    >>> [i["index"] for i in new_items(["a", "b", "c"], 2)]
    [0, 1]
    """
    return [
        Item(index=i, description=text, history=[], sha256=None, ext=None, scores=[], round=0,
             status="pending", error=None)
        for i, text in enumerate(descriptions[:n_y])
    ]


async def render(state: ClassState, runtime: Runtime[GraphDeps]) -> dict[str, object]:
    """Render every pending item; record hashes or per-item errors."""
    deps = runtime.context
    items = [copy_item(item) for item in state["items"]] or new_items(state["new"], state["n_y"])
    pending = [item for item in items if item["status"] == "pending"]
    results = await fan_out(
        deps.providers.generate_image(
            item["description"],
            ctx=call_ctx(deps, state, "render", round=item["round"], sample_index=item["index"]),
        )
        for item in pending
    )
    usage = []
    failed = refused = 0
    for item, result in zip(pending, results, strict=True):
        if isinstance(result, ItemFailure):
            item["error"], item["error_kind"] = result.message, result.kind
            refused += result.kind == "refused"
            # Refused with rounds left: refine rewrites the text (evaluate routes "low" items there).
            retry = result.kind == "refused" and item["round"] < deps.settings.max_rounds
            item["status"] = "low" if retry else "failed"
            failed += not retry
        else:
            item["status"], item["sha256"], item["ext"], item["error"] = "rendered", result.sha256, result.ext, None
            item["error_kind"] = None
            usage.append(image_usage(result))
    return {"items": items, "usage": sum_usage(usage),
            "counters": {"render_failed": failed, "render_refused": refused}}
