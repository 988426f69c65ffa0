"""Step 6c — human review (issue 25): pause the class with ``interrupt()`` until a reviewer decides.

Contract:

- Reached from evaluate only when the run asks for review (``GraphSettings.review``). The node first builds
  the payload (pure: :func:`review_payload`), then calls ``interrupt(payload)``. LangGraph checkpoints the
  pause; the run exits and a later ``Command(resume=decisions)`` re-runs this node *from its start*, so
  nothing before the ``interrupt`` call may cost anything: here it is pure data work, no call at all.
- ``decisions`` (what the review app saves, :func:`normalise_decisions`): ``{"round": n, "reject":
  [{"index": i, "note": "..."}], "template": "..." | None, "approve": bool}``.
- Applying them (:func:`apply_decisions`, pure): each rejected item leaves the accepted set; while review
  rounds remain (``review_round < settings.review_rounds``) it goes to ``low`` and through the paper's
  refine -> render -> evaluate again; once they are spent it is ``rejected`` for good. An edited template
  becomes C_y for what is scored next. A class finalizes only when approved: ``approve`` finalizes it
  (after its re-renders, if any, are scored: it does not pause again); without ``approve`` it pauses again
  (after the re-render, or at once). Every decision is recorded on its item (``reviewed``) for the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from agent.graph.state import ClassState, GraphDeps, Item, copy_item

__all__ = ["apply_decisions", "normalise_decisions", "review", "review_payload"]

MAX_TEMPLATE_CHARS = 2000
MAX_NOTE_CHARS = 500


async def review(state: ClassState, runtime: Runtime[GraphDeps]) -> Command[Literal["refine", "review", "finalize"]]:
    """Pause for a reviewer (free before the interrupt), then apply what they decided."""
    settings = runtime.context.settings
    if state.get("review_approved"):  # approved earlier: its re-renders are scored, nothing more to ask
        return Command(goto="finalize")
    decisions = normalise_decisions(interrupt(review_payload(state, settings.review_rounds)))
    update, goto = apply_decisions(state, decisions, review_rounds=settings.review_rounds)
    if "template" in update:  # an edited C_y is counted like summarize's (the tokenizer is local: free)
        scorer = runtime.context.scorer
        update["template_tokens"] = scorer.count_tokens(update["template"])
        update["template_truncated"] = update["template_tokens"] > scorer.context_length
    return Command(update=update, goto=goto)


def review_payload(state: ClassState, review_rounds: int) -> dict[str, Any]:
    """What a reviewer needs, JSON-only: C_y, every image with its text and score, and the rejected ones.

    >>> st = {"class_name": "fox", "label": 3, "template": "a fox.", "items": [], "review_round": 1}
    >>> p = review_payload(st, 2); (p["class_name"], p["round"], p["rounds_left"])
    ('fox', 1, 1)
    """
    items = [
        {"index": i["index"], "description": i["description"], "sha256": i["sha256"], "ext": i["ext"],
         "score": i["scores"][-1] if i["scores"] else None, "round": i["round"], "status": i["status"],
         "error": i["error"], "history": list(i["history"]), "reviewed": list(i.get("reviewed", []))}
        for i in state.get("items", [])
    ]
    done = int(state.get("review_round", 0))
    return {"kind": "ltgc-review", "class_name": state["class_name"], "label": state["label"],
            "template": state.get("template", ""), "round": done, "rounds_left": max(0, review_rounds - done),
            "items": items}


def normalise_decisions(raw: Any) -> dict[str, Any]:
    """A resume value in the one shape :func:`apply_decisions` reads (anything else means "no change").

    >>> normalise_decisions({"reject": [{"index": "2", "note": " blurry "}], "template": " ", "approve": 1})
    {'reject': [{'index': 2, 'note': 'blurry'}], 'template': None, 'approve': True}
    """
    raw = raw if isinstance(raw, Mapping) else {}
    reject = []
    for entry in raw.get("reject") or []:
        if isinstance(entry, Mapping) and str(entry.get("index", "")).lstrip("-").isdigit():
            reject.append({"index": int(entry["index"]), "note": str(entry.get("note") or "").strip()[:MAX_NOTE_CHARS]})
    template = raw.get("template")
    template = template.strip()[:MAX_TEMPLATE_CHARS] if isinstance(template, str) and template.strip() else None
    return {"reject": reject, "template": template, "approve": bool(raw.get("approve"))}


def apply_decisions(state: ClassState, decisions: Mapping[str, Any], *,
                    review_rounds: int) -> tuple[dict[str, Any], Literal["refine", "review", "finalize"]]:
    """The state update and the next node for one round of decisions (see the module docstring).

    >>> item = {"index": 0, "description": "d", "history": [], "sha256": "a", "ext": "png", "scores": [0.3],
    ...         "round": 0, "status": "accepted", "error": None}
    >>> st = {"items": [item], "template": "t", "review_round": 0}
    >>> up, goto = apply_decisions(st, {"reject": [{"index": 0, "note": "x"}], "template": None,
    ...                                 "approve": False}, review_rounds=1)
    >>> goto, up["items"][0]["status"], up["review_round"]
    ('refine', 'low', 1)
    >>> up, goto = apply_decisions({**st, "review_round": 1}, {"reject": [{"index": 0, "note": ""}],
    ...                            "template": None, "approve": False}, review_rounds=1)
    >>> goto, up["items"][0]["status"]
    ('review', 'rejected')
    """
    done = int(state.get("review_round", 0))
    can_redo = done < review_rounds
    notes = {d["index"]: d["note"] for d in decisions.get("reject", [])}
    items: list[Item] = []
    sent_back = 0
    for old in state.get("items", []):
        item = copy_item(old)
        if item["index"] in notes and item["status"] == "accepted":
            entry = {"round": done + 1, "decision": "rejected", "note": notes[item["index"]]}
            item["reviewed"] = [*old.get("reviewed", []), entry]
            item["status"] = "low" if can_redo else "rejected"
            item["error"] = None if can_redo else "rejected in review" + (f": {entry['note']}" if entry["note"] else "")
            sent_back += can_redo
        elif decisions.get("approve") and item["status"] == "accepted":
            item["reviewed"] = [*old.get("reviewed", []), {"round": done + 1, "decision": "approved", "note": ""}]
        items.append(item)
    update: dict[str, Any] = {"items": items, "review_round": done + 1,
                              "review_approved": bool(decisions.get("approve")),
                              "counters": {"review_rejected": len(notes), "review_rerendered": sent_back}}
    if decisions.get("template") and decisions["template"] != state.get("template"):
        update["template"] = decisions["template"]
        update["counters"]["review_template_edits"] = 1
    return update, ("refine" if sent_back else "finalize" if decisions.get("approve") else "review")
