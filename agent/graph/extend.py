"""Step 2 — extend with the number check (paper §3.1, Prompt 2): grow the list to K_y descriptions.

Contract:

- Each round sends Prompt 2 with the *current* list (existing + new so far) and asks for ``ask_count``:
  the number still missing plus a little slack (some answers repeat a listed item or miss the template),
  at most ``EXTEND_BATCH`` per round — one reply cannot hold hundreds of sentences (K_y is 800 for
  Places-LT). The call's ``sample_index`` is the class's running extend-round count, so a round that
  repeats an earlier prompt word for word still gets its own answer, and a rerun gets the same answers.
- Kept from a reply: the descriptions ``agent.graph.reply`` reads in it (Template 1, repaired where unambiguous,
  counted in ``parse_*``) that are not already in the list (normalised text), up to the number missing.
  Other items are counted (``extend_off_template`` = items the reader dropped, ``extend_repeats``).
- Target: N_y new descriptions (N_y = K_y − M_y), so the list holds K_y when every real image was described.
- Loop (graph edge back to extend) until the target is met; stop with a recorded warning after 2
  consecutive rounds that add nothing, or after ``settings.max_extend_rounds`` rounds in this phase.
  A final provider failure counts as a round that added nothing.
"""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.graph.checks import follows_template1, normalise
from agent.graph.common import ItemFailure, ask, ask_or_fail
from agent.graph.constants import ask_count
from agent.graph.state import ClassState, GraphDeps, add_counts

STALE_ROUNDS_LIMIT = 2  # issue 3: "stop with a recorded warning after 2 rounds that add nothing new"


async def extend(state: ClassState, runtime: Runtime[GraphDeps]) -> Command[Literal["extend", "dedupe"]]:
    """One number-check round; route back to extend until the list is full or the loop must stop."""
    deps = runtime.context
    name, new = state["class_name"], list(state["new"])
    missing = state["n_y"] - len(new)
    if missing <= 0:
        return Command(goto="dedupe")
    current = [*state["existing"], *new]
    round_no = state["extend_round"]
    update: dict[str, object] = {"extend_round": round_no + 1, "phase_rounds": state["phase_rounds"] + 1}
    warnings: list[str] = []
    answer = await ask_or_fail(ask(deps, state, "extend", "prompt2_extend", round=round_no, sample_index=round_no,
                                   descriptions=current, count=ask_count(missing)))
    if isinstance(answer, ItemFailure):
        added: list[str] = []
        warnings.append(f"extend round {round_no}: {answer.message}")
        update["counters"] = {"extend_failed": 1}
    else:
        added, counters = select_new(answer.kept, current, name, limit=missing)
        counters["extend_off_template"] += answer.dropped
        update["usage"] = answer.usage
        update["counters"] = add_counts(counters, answer.counters)
    new.extend(added)
    stale = 0 if added else state["stale_rounds"] + 1
    update |= {"new": new, "stale_rounds": stale, "warnings": warnings}
    if len(new) >= state["n_y"]:
        return Command(update=update, goto="dedupe")
    stop = _stop_reason(stale, state["phase_rounds"] + 1, deps.settings.max_extend_rounds)
    if stop:
        note = f"extend: {stop}; continuing with {len(new)} of {state['n_y']} new descriptions"
        warnings.append(note)
        return Command(update=update, goto="dedupe")
    return Command(update=update, goto="extend")



def select_new(items: list[str], current: list[str], class_name: str, *, limit: int) -> tuple[list[str], dict[str, int]]:
    """Items of a reply worth adding: Template 1, not already listed, at most ``limit``.

    >>> select_new(["A photo of the class fox, red.", "hello", "a photo of the class fox red"],
    ...            [], "fox", limit=5)
    (['A photo of the class fox, red.'], {'extend_off_template': 1, 'extend_repeats': 1})
    """
    seen = {normalise(text) for text in current}
    added: list[str] = []
    off_template = repeats = 0
    for item in items:
        if not follows_template1(item, class_name):
            off_template += 1
        elif normalise(item) in seen:
            repeats += 1
        elif len(added) < limit:
            seen.add(normalise(item))
            added.append(item)
    return added, {"extend_off_template": off_template, "extend_repeats": repeats}


def _stop_reason(stale: int, phase_rounds: int, max_rounds: int) -> str | None:
    if stale >= STALE_ROUNDS_LIMIT:
        return f"{stale} rounds in a row added nothing new"
    if phase_rounds >= max_rounds:
        return f"reached --max-extend-rounds ({max_rounds})"
    return None
