"""The class graph's state, settings and run-scoped dependencies.

Contract:

- ``ClassState`` is what LangGraph checkpoints after every step, so it holds only small JSON-able values:
  text, ids, scores, counters and blob hashes — never image bytes, clients or models (the SQLite saver
  rewrites the whole state at every step; docs/DESIGN.md §4).
- ``Item`` is one generated image's life: its description (latest text first-class, every earlier text in
  ``history``), blob hash, one score per evaluation round, and an ``error`` when a call for it failed for good.
- ``GraphDeps`` carries what cannot be checkpointed — providers, scorer, blob store, traces, settings — and
  reaches nodes through LangGraph's runtime context (``Runtime[GraphDeps].context``), passed again on every
  ``ainvoke``, including resumes.
- ``usage`` and ``counters`` are summed across nodes by the ``add_counts`` reducer; ``warnings`` append.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypedDict

from typing_extensions import NotRequired  # typing has it from 3.11 only; we support 3.10

from agent.lifecycle.settings import GraphSettings  # the graph's section of the run's settings tree

if TYPE_CHECKING:
    from agent.providers.client import CallContext, ChatResult, ImageResult
    from agent.providers.structured import StructuredAsk
    from store.blobs import BlobStore

__all__ = [
    "REASONS",
    "ClassState",
    "GraphDeps",
    "GraphSettings",
    "Item",
    "ItemStatus",
    "ProvidersLike",
    "ScorerLike",
    "add_counts",
    "copy_item",
    "initial_state",
    "missing_reason",
]

ItemStatus = Literal["pending", "rendered", "accepted", "low", "rejected", "failed"]


# Why an item is missing, in the words of the final line / report ("12 server errors").
REASONS = {
    "server_errors": "server error(s)",  # retried to max_attempts: 5xx, 429, timeouts, resets, ...
    "content_policy": "content-policy refusal(s)",  # refused through all R rounds
    "bad_answers": "unusable answer(s)",  # malformed JSON, an image that does not decode, ...
    "request_errors": "rejected request(s)",  # 400 / 401 / 403 / 404 / 422
    "no_description": "description(s) lost to failed describe / extend calls",
    "budget": "call(s) refused by --max-cost / --max-calls",
    "stopped": "stopped before the end",  # a signal, the server's quota or a full disk stopped the class
    "other": "other error(s)",
}
_KIND_REASON = {
    "exhausted": "server_errors", "server": "server_errors", "timeout": "server_errors",
    "connection": "server_errors", "rate_limited": "server_errors", "refused": "content_policy",
    "bad_response": "bad_answers", "bad_request": "request_errors", "auth": "request_errors",
    "not_found": "request_errors", "budget": "budget", "quota": "stopped", "stopped": "stopped",
}


def missing_reason(kind: str | None) -> str:
    """The reason key (:data:`REASONS`) of an item that failed with ``kind``.

    >>> missing_reason("exhausted"), missing_reason("refused"), missing_reason(None)
    ('server_errors', 'content_policy', 'other')
    """
    return _KIND_REASON.get(kind or "", "other")


def add_counts(old: Mapping[str, int] | None, new: Mapping[str, int] | None) -> dict[str, int]:
    """Reducer: key-wise sum. ``add_counts({"calls": 1}, {"calls": 2, "x": 1}) -> {"calls": 3, "x": 1}``."""
    out = dict(old or {})
    for key, value in (new or {}).items():
        out[key] = out.get(key, 0) + value
    return out


class Item(TypedDict):
    index: int
    description: str  # the latest text: refine works on this, render draws it
    history: list[str]  # every earlier text, oldest first
    history_images: NotRequired[list[str]]  # sha256 of each earlier text's image ("" if none): report.html
    sha256: str | None
    ext: str | None
    scores: list[float]  # one per evaluation round
    round: int  # refinements applied to `description` (0 = as written by extend)
    status: ItemStatus
    error: str | None
    # why the item failed for good: the provider's kind (``exhausted``, ``refused``, ``bad_response``, ...);
    # a class with such items is ``short`` (agent/graph/finalize.py) and ``--resume`` asks them again
    error_kind: NotRequired[str | None]
    # review (agent/graph/review.py): one {"round", "decision": "rejected" | "approved", "note"} per decision
    reviewed: NotRequired[list[dict[str, Any]]]


class ClassState(TypedDict, total=False):
    # set by the driver
    class_name: str
    label: int
    slug: str
    images: list[str]  # paths of the class's real images (strings, not bytes)
    m_y: int
    k_y: int
    n_y: int  # images to generate: max(0, K_y - M_y)
    reuse_key: str  # what the class's result depends on (agent/lifecycle/reuse.py): a fresh rerun may reuse it
    # describe / extend / dedupe
    existing: list[str]  # Template 1 descriptions of the real images
    new: list[str]  # descriptions proposed by extend, kept by dedupe
    extend_round: int  # extend calls made so far (also each call's sample index)
    phase_rounds: int  # extend rounds since the last dedupe sent the class back (bounded by settings)
    stale_rounds: int  # consecutive extend rounds that added nothing new
    dedupe_pass: int
    # summarize
    template: str
    template_tokens: int
    template_truncated: bool
    # render / evaluate / refine
    items: list[Item]
    eval_round: int
    # review (only with --review): rounds of decisions applied; approved = finalize after the re-renders
    review_round: int
    review_approved: bool
    # finalize
    done: bool
    status: Literal["running", "complete", "short", "failed"]
    error: str | None
    # accumulated across nodes
    warnings: Annotated[list[str], operator.add]
    usage: Annotated[dict[str, int], add_counts]  # calls, cache_hits, input_tokens, output_tokens, images
    # describe_dropped, local_duplicates, ..., and the reply reader's parse_* counters (agent/graph/common.py)
    counters: Annotated[dict[str, int], add_counts]


def copy_item(item: Item) -> Item:
    """A copy safe to modify: nodes never mutate the lists of the state they were given."""
    return Item(**{**item, "history": list(item["history"]), "scores": list(item["scores"])})  # type: ignore[typeddict-item]


def initial_state(*, class_name: str, label: int, slug: str, images: Sequence[str], k_y: int,
                  reuse_key: str = "") -> ClassState:
    """The input of a fresh class thread."""
    m_y = len(images)
    return ClassState(reuse_key=reuse_key,
        class_name=class_name, label=label, slug=slug, images=list(images), m_y=m_y, k_y=k_y,
        n_y=max(0, k_y - m_y), existing=[], new=[], extend_round=0, phase_rounds=0, stale_rounds=0,
        dedupe_pass=0, items=[], eval_round=0, done=False, status="running", error=None, warnings=[],
        usage={}, counters={},
    )


class ProvidersLike(Protocol):
    """The part of ``agent.providers.client.Providers`` the graph uses (tests pass a small fake)."""

    async def chat(
        self, role: str, prompt: str, *, images: Sequence[bytes] = (), ctx: CallContext,
        structured: StructuredAsk | None = None,
    ) -> ChatResult: ...

    async def generate_image(self, prompt: str, *, ctx: CallContext) -> ImageResult: ...


class ScorerLike(Protocol):
    """The part of ``agent.providers.scorer.ClipScorer`` the graph uses."""

    context_length: int

    def count_tokens(self, text: str) -> int: ...

    async def cosine(self, images: Sequence[Path], text: str) -> list[float]: ...

    async def softmax(self, images: Sequence[Path], texts: Sequence[str], target: int) -> list[float]: ...


class TracesLike(Protocol):
    async def annotate(self, call_id: str, **fields: Any) -> None: ...


@dataclass
class GraphDeps:
    """Run-scoped, non-serialisable dependencies: LangGraph's runtime context for every node."""

    providers: ProvidersLike
    scorer: ScorerLike
    blobs: BlobStore
    settings: GraphSettings
    run_id: str
    out_dir: Path
    traces: TracesLike | None = None
    # softmax only: every class's text, by label — C_y where known, else "a photo of a {name}."
    class_texts: dict[int, str] = field(default_factory=dict)
