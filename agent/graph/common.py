"""Helpers shared by the step nodes: call contexts, usage counting and failure-isolating fan-out.

Contract:

- ``fan_out(coros)`` runs every coroutine to completion with ``asyncio.gather`` and returns, per item, its
  result or an ``ItemFailure`` for a *per-item* error (``ProviderError`` — a final failure after retries —
  or ``OSError`` such as an unreadable image). One item's failure never cancels its siblings. Any other
  exception — a bug, or a ``ProviderError`` whose ``stops_class`` is true (budget, quota, stopped), which
  must stop the class so that a resume can continue it — is re-raised, but only after every sibling finished, so
  no call is left running detached from the graph.
- ``call_ctx`` builds the ``CallContext`` of a call. Its ``sample_index`` is what makes two identical
  prompts distinct cache entries when they must be (extend round n), and identical on a rerun.
- Usage dicts (``calls``, ``cache_hits``, ``input_tokens``, ``output_tokens``, ``images``) are summed by
  the state's ``add_counts`` reducer.
- ``ask(deps, state, node, prompt_name, ...)`` is every chat call of the steps: it renders the prompt (and
  its structured form, agent/providers/structured.py), calls the role, reads the reply with ``agent.graph.reply.read_reply``
  and returns an ``Answer``: the kept descriptions, the call's usage, and the reader's counters prefixed
  ``parse_`` (plus ``structured_replies`` / ``structured_fallbacks``) for the class's ``counters`` — so every repair and drop of every
  reply reaches summary.json and report.html. The trace row gets ``parse_dropped``.
- ``ask_or_fail(ask(...))`` is for a node that goes on without the answer: a per-item failure becomes an
  ``ItemFailure`` (a spent budget or a stop still raises, so the class stops resumably).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import prompts
from agent.graph.reply import read_reply
from agent.graph.state import ClassState, GraphDeps, add_counts
from agent.providers.client import CallContext, ProviderError
from agent.providers.structured import structured_ask
from store.errors import is_disk_full

if TYPE_CHECKING:
    from agent.providers.client import ChatResult, ImageResult

T = TypeVar("T")

__all__ = ["Answer", "ItemFailure", "ask", "ask_or_fail", "call_ctx", "chat_usage", "describe_failure",
           "failure_kind", "fan_out", "image_usage", "is_item_failure", "sum_usage"]


@dataclass(frozen=True)
class ItemFailure:
    """A final failure of one item: the message that goes on the item and into the summary, and its kind
    (``agent.providers.retry.ErrorKind``, or ``"io"`` for a local file error): why the item is missing."""

    message: str
    kind: str = "other"


@dataclass
class Answer:
    """One chat reply, read: kept descriptions (repaired), the call's usage, counters for the class."""

    kept: list[str]
    usage: dict[str, int]
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def first(self) -> str | None:
        return self.kept[0] if self.kept else None

    @property
    def dropped(self) -> int:
        return self.counters.get("parse_dropped", 0)


async def ask(
    deps: GraphDeps, state: ClassState, node: str, prompt_name: str, *, role: str = "llm", template: int = 1,
    round: int = 0, sample_index: int = 0, images: Sequence[bytes] = (), suffix: str = "", **values: object,
) -> Answer:
    """Prompt ``prompt_name`` (+ ``suffix``) for the class, sent by ``role``, its reply read (module docstring)."""
    name = state["class_name"]
    prompt = prompts.render(prompt_name, class_name=name, structured=False, **values) + suffix
    offer = structured_ask(prompt_name, name, suffix=suffix, **values)
    result = await deps.providers.chat(role, prompt, images=images, structured=offer,
                                       ctx=call_ctx(deps, state, node, round=round, sample_index=sample_index))
    reading = read_reply(result.text, name, template=template, key=offer.key if result.structured else None)
    counters = {f"parse_{k}": v for k, v in reading.counts.items()}
    if result.structured or result.fallback:
        counters["structured_replies" if result.structured else "structured_fallbacks"] = 1
    if deps.traces is not None and result.call_id:
        await deps.traces.annotate(result.call_id, parse_dropped=reading.counts.get("dropped", 0))
    return Answer(reading.kept, chat_usage(result), counters)


async def ask_or_fail(call: Awaitable[Answer]) -> Answer | ItemFailure:
    """``await call`` (an ``ask(...)``), a per-item provider failure returned as an ``ItemFailure``."""
    try:
        return await call
    except ProviderError as exc:
        if not is_item_failure(exc):
            raise  # a spent budget or a stop ends the class; resume continues it
        return ItemFailure(describe_failure(exc), failure_kind(exc))


async def fan_out(coros: Iterable[Awaitable[T]]) -> list[T | ItemFailure]:
    """Await all ``coros`` concurrently; per-item errors become ``ItemFailure`` (see module docstring)."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    out: list[T | ItemFailure] = []
    unexpected: BaseException | None = None
    for result in results:
        if not isinstance(result, BaseException):
            out.append(result)
            continue
        if not is_item_failure(result):
            unexpected = unexpected or result
        out.append(ItemFailure(describe_failure(result), failure_kind(result)))
    if unexpected is not None:
        raise unexpected
    return out


def is_item_failure(exc: BaseException) -> bool:
    """A failure that belongs to one item. A spent budget is not: it must stop the class (resumable)."""
    if isinstance(exc, ProviderError):
        return not exc.stops_class  # a spent budget, the server's quota, a requested shutdown stop the class
    return isinstance(exc, OSError) and not is_disk_full(exc)  # a full disk stops the class (resumable)


def failure_kind(exc: BaseException) -> str:
    """The item's ``error_kind``: the provider's final kind (``exhausted``, ``refused``, ...) or ``io``."""
    return exc.kind if isinstance(exc, ProviderError) else "io" if isinstance(exc, OSError) else "other"


def describe_failure(exc: BaseException) -> str:
    """One line for an item's ``error`` field: ``"rate_limited (429): slow down"`` style."""
    if isinstance(exc, ProviderError):
        status = f" ({exc.status})" if exc.status else ""
        return f"{exc.kind}{status}: {exc.message}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}".splitlines()[0][:500]


def call_ctx(deps: GraphDeps, state: ClassState, node: str, *, round: int = 0, sample_index: int = 0) -> CallContext:
    return CallContext(
        run_id=deps.run_id, class_name=state["class_name"], node=node, round=round, sample_index=sample_index
    )


def chat_usage(result: ChatResult) -> dict[str, int]:
    return {
        "calls": 1,
        "cache_hits": int(bool(result.cache_hit)),
        "input_tokens": int(result.input_tokens or 0),
        "output_tokens": int(result.output_tokens or 0),
    }


def image_usage(result: ImageResult) -> dict[str, int]:
    return {"calls": 1, "cache_hits": int(bool(result.cache_hit)), "images": 1}


def sum_usage(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        total = add_counts(total, part)
    return total
