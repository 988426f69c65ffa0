"""Small in-test stand-ins for the providers and the CLIP scorer, for node-level graph tests.

``FakeProviders`` answers like a well-behaved model unless a node's reply is overridden, records every
call (role, prompt, ctx), and draws a tiny PNG per prompt into a real ``BlobStore``. ``FakeScorer``
scores an image by the description it was drawn from, so a test decides exactly which items are low.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from agent.graph.graph import compile_graph
from agent.graph.state import ClassState, GraphDeps, GraphSettings, initial_state
from agent.providers.client import CallContext, ChatResult, ImageResult, ProviderError
from agent.providers.structured import StructuredAsk
from store.blobs import BlobStore

Reply = Callable[[str, CallContext], "str | Exception"]
_LISTED = re.compile(r"^\d+\. (.+)$", re.M)


@dataclass
class Call:
    role: str
    prompt: str
    ctx: CallContext
    images: int = 0


@dataclass
class FakeProviders:
    blobs: BlobStore
    replies: dict[str, Reply] = field(default_factory=dict)  # node -> reply function
    render_fails: Callable[[str], bool] = lambda prompt: False
    calls: list[Call] = field(default_factory=list)
    drawn: dict[str, str] = field(default_factory=dict)  # sha256 -> prompt

    async def chat(self, role: str, prompt: str, *, images: Sequence[bytes] = (), ctx: CallContext,
                   structured: StructuredAsk | None = None) -> ChatResult:
        self.calls.append(Call(role, prompt, ctx, len(images)))
        reply = self.replies.get(ctx.node, default_reply)(prompt, ctx)
        if isinstance(reply, Exception):
            raise reply
        return ChatResult(reply, "stop", 10, 5, False, f"call-{len(self.calls)}")

    async def generate_image(self, prompt: str, *, ctx: CallContext) -> ImageResult:
        self.calls.append(Call("t2i", prompt, ctx))
        if self.render_fails(prompt):
            raise ProviderError("refused", "content policy", status=400)
        digest = hashlib.sha256(prompt.encode()).digest()
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), tuple(digest[:3])).save(buf, format="PNG")
        sha = self.blobs.put(buf.getvalue(), "png")
        self.drawn[sha] = prompt
        return ImageResult(sha, "png", False, f"img-{len(self.calls)}")

    def nodes(self, node: str) -> list[Call]:
        return [c for c in self.calls if c.ctx.node == node]


def default_reply(prompt: str, ctx: CallContext) -> str:
    """What a cooperative model says to each LTGC prompt (class name read back from the prompt)."""
    name = class_of(prompt)
    if ctx.node == "describe":
        return f"A photo of the class {name}, with look {ctx.sample_index} in a field."
    if ctx.node == "extend":
        count = int(re.search(r"List (\d+) new", prompt).group(1))  # type: ignore[union-attr]
        return "\n".join(f"{i + 1}. A photo of the class {name}, with trait r{ctx.sample_index}n{i}."
                         for i in range(count))
    if ctx.node == "dedupe":
        return "\n".join(f"{i + 1}. {text}" for i, text in enumerate(listed(prompt)))
    if ctx.node == "summarize":
        return f"A photo of the class {name} with a long tail and sharp ears."
    if ctx.node == "refine":
        return f"A photo of the class {name}, refined r{ctx.round} of item {ctx.sample_index}."
    raise AssertionError(f"unexpected node {ctx.node}")


def class_of(prompt: str) -> str:
    match = re.search(r"for (?:the )?class ([^.,\n]+?)(?: in this|[.,?\n])|of the class ([^.,\n]+?)[.:,\n]", prompt)
    assert match, prompt
    return (match.group(1) or match.group(2)).strip()


def listed(prompt: str) -> list[str]:
    return _LISTED.findall(prompt)


@dataclass
class FakeScorer:
    providers: FakeProviders
    score_of: Callable[[str], float] = lambda description: 0.9
    context_length: int = 77
    batches: list[int] = field(default_factory=list)

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2

    async def cosine(self, images: Sequence[Path], text: str) -> list[float]:
        self.batches.append(len(images))
        return [self.score_of(self.providers.drawn[Path(p).stem]) for p in images]

    async def softmax(self, images: Sequence[Path], texts: Sequence[str], target: int) -> list[float]:
        return await self.cosine(images, texts[target])


async def run_class(tmp: Path, providers: FakeProviders, scorer: FakeScorer, *, name: str = "red fox",
                    images: int = 2, k: int = 6, **settings: object) -> ClassState:
    """One class through the compiled graph with an in-memory checkpointer; returns the final state."""
    from langgraph.checkpoint.memory import InMemorySaver

    paths = []
    for i in range(images):
        path = tmp / "real" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 40 % 256, 10, 10)).save(path)
        paths.append(str(path))
    defaults: dict[str, object] = {"threshold": 0.5, "max_rounds": 2}
    graph_settings = GraphSettings(**{**defaults, **settings})  # type: ignore[arg-type]
    deps = GraphDeps(providers=providers, scorer=scorer, blobs=providers.blobs, settings=graph_settings,
                     run_id="t", out_dir=tmp / "run")
    graph = compile_graph(InMemorySaver())
    state = initial_state(class_name=name, label=3, slug="red-fox", images=paths, k_y=k)
    result = await graph.ainvoke(state, {"configurable": {"thread_id": f"t/{name}"}}, context=deps)
    return result  # type: ignore[no-any-return]
