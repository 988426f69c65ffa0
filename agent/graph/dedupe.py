"""Step 3 — repetition check (paper §3.1, Prompt 3) with a guard: the model may only *remove* items.

Contract:

- Prompt 3 is sent over the new descriptions (``sample_index`` = dedupe pass). Its answer is read by
  ``agent.graph.reply`` (repairs and drops counted in ``parse_*``; items listed under "Removed:" are not kept),
  then as a subset of the input by normalised text (``keep_subset``): an answered item that is not in the input is
  *invented* — rejected and counted (``dedupe_invented``), never added. Kept items keep the input's exact
  text and order. An answer that keeps nothing (or a failed call) is ignored with a warning: removing every
  description is never a plausible repetition check.
- Then exact and near-exact duplicates are removed locally (``local_dedupe``), also against the existing
  descriptions, because the model misses some and the official code never ran Prompt 3 at all.
- If fewer than N_y new descriptions remain, go back to extend (at most ``settings.max_dedupe_passes``
  passes); otherwise, or when out of passes (warning), go on to summarize.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.graph.checks import follows_template1, normalise, signature, similar
from agent.graph.common import ItemFailure, ask, ask_or_fail
from agent.graph.state import ClassState, GraphDeps, add_counts


async def dedupe(state: ClassState, runtime: Runtime[GraphDeps]) -> Command[Literal["extend", "summarize"]]:
    """Run the repetition check once; route back to extend if the list fell short."""
    deps = runtime.context
    name, new, pass_no = state["class_name"], list(state["new"]), state["dedupe_pass"]
    update: dict[str, object] = {"dedupe_pass": pass_no + 1}
    warnings: list[str] = []
    counters = {"dedupe_invented": 0, "dedupe_removed_by_model": 0, "local_duplicates": 0}
    if new:
        answer = await ask_or_fail(ask(deps, state, "dedupe", "prompt3_dedupe", round=pass_no,
                                       sample_index=pass_no, descriptions=new))
        if isinstance(answer, ItemFailure):
            warnings.append(f"dedupe pass {pass_no}: {answer.message}; kept the list as it was")
        else:
            update["usage"] = answer.usage
            counters = add_counts(counters, answer.counters)
            kept, invented = keep_subset(answer.kept, new, name)
            counters["dedupe_invented"] = len(invented)
            if invented:
                warnings.append(f"dedupe pass {pass_no}: rejected {len(invented)} item(s) the model invented")
            if kept:
                counters["dedupe_removed_by_model"] = len(new) - len(kept)
                new = kept
            else:
                warnings.append(f"dedupe pass {pass_no}: the answer kept no listed item; answer ignored")
    unique = local_dedupe(state["existing"], new)
    counters["local_duplicates"] = len(new) - len(unique)
    update |= {"new": unique, "counters": counters}
    short = len(unique) < state["n_y"]
    if short and pass_no + 1 < deps.settings.max_dedupe_passes:
        update |= {"warnings": warnings, "stale_rounds": 0, "phase_rounds": 0}
        return Command(update=update, goto="extend")
    if short:
        warnings.append(f"dedupe: {len(unique)} of {state['n_y']} new descriptions after {pass_no + 1} pass(es)")
    update["warnings"] = warnings
    return Command(update=update, goto="summarize")


def keep_subset(answer: Sequence[str], inputs: Sequence[str], class_name: str) -> tuple[list[str], list[str]]:
    """Split an answer into (kept input items, in input order with input text; invented items).

    Only answer items that look like descriptions (Template 1) count as invented; a chatty preface line
    ("Here is the list:") is neither kept nor invented.

    >>> keep_subset(["A photo of the class fox, RED.", "A photo of the class fox, blue."],
    ...             ["A photo of the class fox, red.", "A photo of the class fox, grey."], "fox")
    (['A photo of the class fox, red.'], ['A photo of the class fox, blue.'])
    """
    by_key = {normalise(text): text for text in inputs}
    answered: set[str] = set()
    invented: list[str] = []
    for item in answer:
        key = normalise(item)
        if key in by_key:
            answered.add(key)
        elif follows_template1(item, class_name):
            invented.append(item)
    kept = [text for text in inputs if normalise(text) in answered]
    return list(dict.fromkeys(kept)), invented


def local_dedupe(existing: Sequence[str], new: Sequence[str]) -> list[str]:
    """``new`` without items that near-duplicate an earlier item or any existing description (order kept).

    >>> local_dedupe(["A photo of the class fox, in snow."],
    ...              ["A photo of the class fox, in the snow.", "A photo of the class fox, red fur.",
    ...               "a photo of the class fox red fur"])
    ['A photo of the class fox, red fur.']
    """
    seen = [signature(text) for text in existing]
    kept: list[str] = []
    for item in new:
        sig = signature(item)
        if not any(similar(sig, other) for other in seen):
            seen.append(sig)
            kept.append(item)
    return kept
