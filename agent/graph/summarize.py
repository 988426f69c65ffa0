"""Step 4 — the class feature template C_y (paper §3.1, Prompt 4 + Template 2).

Contract:

- One ``llm`` call with Prompt 4 over the whole descriptions list (existing + new).
- C_y = the first Template 2 sentence ``agent.graph.reply`` reads in the reply (label prefixes, emphasis, braces
  and fences repaired; counted in ``parse_*``). If there is none, or the call failed for good,
  C_y falls back to ``fallback_text(y)`` ("a photo of a {y}.", CLIP's own prompt style — the same text
  softmax scoring uses for classes without a C_y) and a warning is recorded.
- C_y is what CLIP's text tower reads, so it must fit the model's context (77 tokens for CLIP): it is
  counted with the scorer's open_clip tokenizer, and ``template_truncated`` records when the tokenizer
  will cut it (the text is kept whole in the state and the summary, for the user to see what was cut).
"""

from __future__ import annotations

from langgraph.runtime import Runtime

from agent.graph.common import ItemFailure, ask, ask_or_fail
from agent.graph.state import ClassState, GraphDeps


def fallback_text(class_name: str) -> str:
    """CLIP's zero-shot prompt for a class: ``fallback_text("red fox") -> "a photo of a red fox."``."""
    return f"a photo of a {class_name}."


async def summarize(state: ClassState, runtime: Runtime[GraphDeps]) -> dict[str, object]:
    """Ask for C_y, check it against Template 2 and CLIP's context length."""
    deps = runtime.context
    name = state["class_name"]
    descriptions = [*state["existing"], *state["new"]]
    update: dict[str, object] = {}
    warnings: list[str] = []
    template: str | None = None
    answer = await ask_or_fail(ask(deps, state, "summarize", "prompt4_summarize", template=2,
                                   descriptions=descriptions))
    if isinstance(answer, ItemFailure):
        warnings.append(f"summarize: {answer.message}; using {fallback_text(name)!r}")
    else:
        update |= {"usage": answer.usage, "counters": answer.counters}
        template = answer.first
        if template is None:
            warnings.append(f"summarize: the reply did not follow Template 2; using {fallback_text(name)!r}")
    template = template or fallback_text(name)
    tokens = deps.scorer.count_tokens(template)
    truncated = tokens > deps.scorer.context_length
    if truncated:
        warnings.append(
            f"summarize: C_y has {tokens} tokens, CLIP reads the first {deps.scorer.context_length}; truncated"
        )
    return update | {
        "template": template, "template_tokens": tokens, "template_truncated": truncated, "warnings": warnings,
    }
