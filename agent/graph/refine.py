"""Step 6b — refine (paper §3.1, Prompt 5): rewrite a low-scoring description, then re-render it.

Contract:

- For every item in status ``low``: Prompt 5 on the item's *latest* text (the official code re-refines the
  original text each round; carrying the latest forward is what "iterative" means in the paper).
  ``sample_index`` = item index, ``round`` = the refinement being made (1, 2, ...).
- The first Template 1 sentence ``agent.graph.reply`` reads in the reply that was not tried before becomes the
  item's description (the old one goes to ``history``), the item returns to ``pending`` and the graph goes
  to render -> evaluate again. The reader's repairs and drops are counted in ``parse_*``.
- No usable reply (off-template, a text already tried): the item is ``rejected`` — rendering the same text
  again would only repeat the same score. A final provider failure of the refine call makes the item
  ``failed`` with its ``error_kind`` (the class is ``short``; ``--resume`` asks the call again).
- An item is also ``low`` when its render was refused by content policy (agent/graph/render.py): Prompt 5
  rewrites its description the same way.
"""

from __future__ import annotations

from langgraph.runtime import Runtime

from agent.graph.checks import normalise
from agent.graph.common import ItemFailure, ask, fan_out, sum_usage
from agent.graph.state import ClassState, GraphDeps, Item, copy_item


async def refine(state: ClassState, runtime: Runtime[GraphDeps]) -> dict[str, object]:
    """Refine every low item once; the fixed edge refine -> render re-draws them."""
    deps = runtime.context
    items = [copy_item(item) for item in state["items"]]
    low = [item for item in items if item["status"] == "low"]
    results = await fan_out(
        ask(deps, state, "refine", "prompt5_refine", round=item["round"] + 1, sample_index=item["index"],
            description=item["description"])
        for item in low
    )
    usage, parsed = [], []
    unusable = 0
    for item, result in zip(low, results, strict=True):
        if isinstance(result, ItemFailure):
            item["status"], item["error"], item["error_kind"] = "failed", result.message, result.kind
            continue
        usage.append(result.usage)
        parsed.append(result.counters)
        text = next((t for t in result.kept if not _already_tried(t, item)), None)
        if text is None:
            unusable += 1
            item["status"] = "rejected"
            continue
        item["history"].append(item["description"])
        # The earlier drawing's hash, for report.html's before / after view (a new list: never mutate state).
        item["history_images"] = [*item.get("history_images", []), item["sha256"] or ""]
        item["description"], item["round"], item["status"] = text, item["round"] + 1, "pending"
        item["sha256"] = item["ext"] = None
    return {"items": items, "usage": sum_usage(usage),
            "counters": sum_usage([{"refine_unusable": unusable}, *parsed])}


def _already_tried(text: str, item: Item) -> bool:
    key = normalise(text)
    return any(normalise(old) == key for old in (*item["history"], item["description"]))
