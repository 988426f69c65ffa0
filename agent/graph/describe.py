"""Step 1 — describe (paper §3.1, Prompt 1 + Template 1): each real image -> one Template 1 sentence.

Contract:

- One vision (``lmm``) call per real image of the class, in sorted path order, at most
  ``settings.max_describe`` of them; call ``sample_index`` = the image's index, so a rerun asks the same.
- The reply is read by ``agent.graph.reply`` (repairs and drops counted in ``parse_*``); a reply with no Template 1
  sentence of this class is re-asked once (round 1) with the reminder prompt appended; a second miss drops
  the image's description and counts it (``counters.describe_dropped``).
- A final provider failure or an unreadable image is counted (``counters.describe_failed``) with a warning;
  the class goes on with the descriptions it has (extend works from an empty list too).
- The descriptions are de-duplicated (normalised text): two images may look alike.
- A class with nothing to generate (M_y >= K_y) skips every model call and goes to finalize.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

import prompts
from agent.graph.checks import normalise
from agent.graph.common import ItemFailure, ask, fan_out, sum_usage
from agent.graph.state import ClassState, GraphDeps


@dataclass
class _Described:
    text: str | None
    usage: list[dict[str, int]] = field(default_factory=list)
    counters: list[dict[str, int]] = field(default_factory=list)
    reasked: bool = False


async def describe(state: ClassState, runtime: Runtime[GraphDeps]) -> Command[Literal["extend", "finalize"]]:
    """Describe the class's real images; route to extend (or straight to finalize when N_y = 0)."""
    deps = runtime.context
    if state["n_y"] == 0:
        note = f"M_y = {state['m_y']} >= K_y = {state['k_y']}: nothing to generate for this class"
        return Command(update={"warnings": [note]}, goto="finalize")
    limit = deps.settings.max_describe
    paths = state["images"][:limit] if limit is not None else state["images"]
    results = await fan_out(_describe_one(deps, state, i, p) for i, p in enumerate(paths))
    existing: list[str] = []
    seen: set[str] = set()
    usage: list[dict[str, int]] = []
    parsed: list[dict[str, int]] = []
    dropped = failed = reasked = 0
    first_error = ""
    for result in results:
        if isinstance(result, ItemFailure):
            failed += 1
            first_error = first_error or result.message
            continue
        usage.extend(result.usage)
        parsed.extend(result.counters)
        reasked += result.reasked
        if result.text is None:
            dropped += 1
        elif normalise(result.text) not in seen:
            seen.add(normalise(result.text))
            existing.append(result.text)
    warnings = [f"describe: {failed} of {len(paths)} image(s) failed, first: {first_error}"] if failed else []
    if dropped:
        warnings.append(f"describe: {dropped} reply(ies) did not follow Template 1 after a re-ask; dropped")
    return Command(
        update={
            "existing": existing,
            "warnings": warnings,
            "usage": sum_usage(usage),
            "counters": sum_usage([{"describe_dropped": dropped, "describe_failed": failed,
                                    "describe_reasked": reasked}, *parsed]),
        },
        goto="extend",
    )


async def _describe_one(deps: GraphDeps, state: ClassState, index: int, path: str) -> _Described:
    name = state["class_name"]
    data = await asyncio.to_thread(Path(path).read_bytes)
    first = await ask(deps, state, "describe", "prompt1_describe", role="lmm", images=[data], sample_index=index)
    out = _Described(first.first, [first.usage], [first.counters])
    if out.text is not None:
        return out
    # The paper's format is the contract; one reminder is cheap, a second would mostly repeat the miss.
    reminder = "\n\n" + prompts.render("prompt1_reminder", class_name=name)
    second = await ask(deps, state, "describe", "prompt1_describe", role="lmm", images=[data], round=1,
                       sample_index=index, suffix=reminder)
    out.usage.append(second.usage)
    out.counters.append(second.counters)
    out.reasked = True
    out.text = second.first
    return out
