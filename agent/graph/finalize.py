"""Step 7 — finalize: accepted images into the run folder; the class's rows and summary as pure data.

Contract:

- The node copies (hard-links where the file system allows) every accepted image from the blob store to
  ``<run>/images/<class-slug>/<sha256>.<ext>`` (temp name + ``os.replace``: a crash never leaves half a
  file under the final name), sets ``done`` and the class ``status``: ``failed`` when the class needed
  images (N_y > 0) but not one was rendered, with the reason in ``error``; ``short`` when items are
  missing because a call failed for good (after its retries), a render was refused by content policy
  through all R rounds, or too few descriptions came back while describe / extend calls failed for good
  (:func:`shortfall` counts them per reason; ``--resume`` asks those calls again); else ``complete``.
  Images rejected by the CLIP threshold after R rounds are the paper's filter, not a shortfall; nor is an
  LLM that ran out of new descriptions with every call answered (a warning says so; a resume would only
  repeat the same cached answers).
- The run driver rebuilds ``manifest.jsonl``, ``rejected.jsonl`` and ``summary.json`` from the finished
  states of *all* classes with the pure functions below, so a resumed run never duplicates a row.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from agent.graph.state import REASONS, ClassState, GraphDeps, Item, missing_reason
from agent.lifecycle.folder import accepted_image_path
from store.manifest import ManifestRow

__all__ = ["REASONS", "class_summary", "finalize", "generated_rows", "image_relpath", "missing_reason",
           "rejected_rows", "shortfall"]


async def finalize(state: ClassState, runtime: Runtime[GraphDeps]) -> dict[str, object]:
    deps = runtime.context
    for item in accepted_items(state):
        src = deps.blobs.path(item["sha256"] or "", item["ext"] or "png")
        _place(src, deps.out_dir / image_relpath(state, item))
    error = _class_error(state)
    status = "failed" if error else "short" if shortfall(state) else "complete"
    return {"done": True, "status": status, "error": error}


def shortfall(state: ClassState) -> dict[str, int]:
    """Items missing from the class's target, per reason: failed items by their ``error_kind``, plus the
    descriptions that never came (fewer items than N_y) when a describe or extend call failed for good.
    Empty when nothing is missing.

    >>> item = {"status": "failed", "error_kind": "exhausted", "scores": []}
    >>> shortfall({"n_y": 3, "items": [item, {**item, "status": "accepted"}], "counters": {"extend_failed": 1}})
    {'server_errors': 1, 'no_description': 1}
    >>> shortfall({"n_y": 3, "items": [{**item, "status": "accepted"}], "counters": {}})  # the LLM ran dry
    {}
    """
    out: dict[str, int] = {}
    items = state.get("items", [])
    for item in items:
        if item["status"] == "failed":
            reason = missing_reason(item.get("error_kind"))
            out[reason] = out.get(reason, 0) + 1
    counters = state.get("counters", {})
    lost_calls = counters.get("describe_failed", 0) + counters.get("extend_failed", 0)
    if state.get("n_y", 0) > len(items) and lost_calls:
        out["no_description"] = state["n_y"] - len(items)
    return out


def image_relpath(state: ClassState, item: Item) -> str:
    """``images/<slug>/<sha>.<ext>``, relative to the run folder (and so to its manifest)."""
    return accepted_image_path(state["slug"], str(item["sha256"]), str(item["ext"]))


def accepted_items(state: ClassState) -> list[Item]:
    """Accepted items, one per distinct image (two texts drawing the same bytes are one image)."""
    seen: set[str] = set()
    out = []
    for item in state.get("items", []):
        if item["status"] == "accepted" and item["sha256"] and item["sha256"] not in seen:
            seen.add(item["sha256"])
            out.append(item)
    return out


def generated_rows(state: ClassState, run_id: str) -> list[ManifestRow]:
    """The class's manifest rows: one per accepted image."""
    return [
        ManifestRow(
            path=image_relpath(state, item), label=state["label"], class_name=state["class_name"],
            source="generated", sha256=item["sha256"] or "", description=item["description"],
            score=item["scores"][-1], round=item["round"], run_id=run_id,
        )
        for item in accepted_items(state)
    ]


def rejected_rows(state: ClassState, run_id: str) -> list[dict[str, Any]]:
    """One JSON object per item that did not make it, with every round's text and score."""
    return [
        {
            "run_id": run_id, "class_name": state["class_name"], "label": state["label"],
            "index": item["index"], "status": item["status"], "description": item["description"],
            "history": item["history"], "history_images": item.get("history_images", []),
            "scores": item["scores"], "round": item["round"],
            "sha256": item["sha256"], "error": item["error"],
            **({"reviewed": item["reviewed"]} if item.get("reviewed") else {}),  # --review runs only
        }
        for item in state.get("items", [])
        if item["status"] in ("rejected", "failed")
    ]


def class_summary(state: ClassState) -> dict[str, Any]:
    """The class's entry of ``summary.json`` (issue 3: M_y, N_y, accepted, rejected, rounds, calls, ...)."""
    items = state.get("items", [])
    missing = shortfall(state) if state.get("done") else {}
    # Calls, requests and tokens are not here: they come from the traces, one definition for the final
    # line, summary.json and agent.traces (agent/lifecycle/driver.py add_trace_counts).
    return {
        "label": state["label"], "slug": state["slug"], "status": state.get("status", "running"),
        "error": state.get("error"), "M_y": state["m_y"], "N_y": state["n_y"], "K_y": state["k_y"],
        "described": len(state.get("existing", [])), "new_descriptions": len(state.get("new", [])),
        "rendered": sum(1 for i in items if i["sha256"]),
        "accepted": len(accepted_items(state)),
        "rejected": sum(1 for i in items if i["status"] == "rejected"),
        "failed": sum(1 for i in items if i["status"] == "failed"),
        # missing from the target because calls failed or were refused: what --resume asks again
        "missing": sum(missing.values()), "missing_by_reason": missing,
        "rounds": max((i["round"] for i in items), default=0),
        "refined": sum(1 for i in items if i["round"] > 0),
        "template": state.get("template"), "template_tokens": state.get("template_tokens"),
        "template_truncated": state.get("template_truncated", False),
        "counters": dict(sorted(state.get("counters", {}).items())),
        "warnings": list(state.get("warnings", [])),
    }


def _class_error(state: ClassState) -> str | None:
    if state["n_y"] == 0:
        return None
    items = state.get("items", [])
    if not items:
        return "no new descriptions to render (see the warnings of describe / extend)"
    if all(item["status"] == "failed" and not item["scores"] for item in items):
        return f"every render failed; first error: {items[0]['error']}"
    return None


def _place(src: Path, dest: Path) -> None:
    if dest.exists() and dest.stat().st_size == src.stat().st_size:
        return  # finalize re-run on resume: the image is already in place
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp name in the same folder (hidden, never listed), then one atomic rename onto dest.
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    try:
        os.link(src, tmp)  # same file system: no copy, the blob's bytes are shared
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
