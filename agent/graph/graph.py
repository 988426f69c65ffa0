"""Build and compile the LTGC class graph (one compiled graph; one checkpointed thread per class).

    describe ─► extend ⟲ (number check) ─► dedupe ─► summarize ─► render ─► evaluate ─► [review] ─► finalize
       │            ▲                        │                      ▲           │          │
       │            └──── (list fell short) ─┘                      └─ refine ◄─┴──────────┘
       └─► finalize (M_y >= K_y: nothing to generate)      (S < μ, < R rounds; or rejected in review)

``review`` (``--review`` only) pauses the class with ``interrupt()`` until a reviewer's decisions arrive as
``Command(resume=...)`` (agent/graph/review.py).

Routing is typed: nodes that choose return ``Command[Literal[...]]``; the others have fixed edges.
Run-scoped objects reach nodes through the runtime context (``context_schema=GraphDeps``), never state.
``RENDER_GATE`` is where a softmax run pauses every class (``interrupt_before``) until all classes
have their C_y, because a class's softmax score depends on every class's text.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent.graph.dedupe import dedupe
from agent.graph.describe import describe
from agent.graph.evaluate import evaluate
from agent.graph.extend import extend
from agent.graph.finalize import finalize
from agent.graph.refine import refine
from agent.graph.render import render
from agent.graph.review import review
from agent.graph.state import ClassState, GraphDeps
from agent.graph.summarize import summarize

__all__ = ["RENDER_GATE", "build_graph", "compile_graph"]

RENDER_GATE = "render"


def build_graph() -> StateGraph[ClassState, GraphDeps, ClassState, ClassState]:
    builder: StateGraph[ClassState, GraphDeps, ClassState, ClassState] = StateGraph(
        ClassState, context_schema=GraphDeps
    )
    builder.add_node("describe", describe)
    builder.add_node("extend", extend)
    builder.add_node("dedupe", dedupe)
    builder.add_node("summarize", summarize)
    builder.add_node("render", render)
    builder.add_node("evaluate", evaluate)
    builder.add_node("refine", refine)
    builder.add_node("review", review)
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "describe")
    builder.add_edge("summarize", "render")
    builder.add_edge("render", "evaluate")
    builder.add_edge("refine", "render")
    builder.add_edge("finalize", END)
    return builder


def compile_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled graph; pass the run's ``AsyncSqliteSaver`` (or an in-memory saver in tests)."""
    return build_graph().compile(checkpointer=checkpointer, name="ltgc-class")
