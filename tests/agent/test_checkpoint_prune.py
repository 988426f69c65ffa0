"""agent.lifecycle.checkpoints.keep_latest_checkpoint: a finished thread keeps one checkpoint and reads back the same."""

from __future__ import annotations

import operator
import sqlite3
from pathlib import Path
from typing import Annotated, TypedDict

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph

from agent.lifecycle.checkpoints import keep_latest_checkpoint


class _State(TypedDict):
    items: Annotated[list[str], operator.add]


def _graph(saver: AsyncSqliteSaver):  # type: ignore[no-untyped-def]
    g = StateGraph(_State)
    for name in ("a", "b", "c"):
        g.add_node(name, lambda state, name=name: {"items": [name * 100]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    g.add_edge("c", END)
    return g.compile(checkpointer=saver)


def _rows(db: Path, table: str, thread: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE thread_id = ?", (thread,)).fetchone()[0])


async def test_keeps_only_the_latest_checkpoint_and_the_same_state(tmp_path: Path) -> None:
    db = tmp_path / "checkpoints.sqlite"
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        graph = _graph(saver)
        for thread in ("run/one", "run/two"):
            await graph.ainvoke({"items": []}, {"configurable": {"thread_id": thread}}, durability="sync")
        before = await graph.aget_state({"configurable": {"thread_id": "run/one"}})
        assert _rows(db, "checkpoints", "run/one") == 5  # input + three nodes + end: one per step
        await keep_latest_checkpoint(saver, "run/one")
        after = await graph.aget_state({"configurable": {"thread_id": "run/one"}})
        assert after.values == before.values == {"items": ["a" * 100, "b" * 100, "c" * 100]}
        assert after.next == () and after.config == before.config
        assert _rows(db, "checkpoints", "run/one") == 1
        assert _rows(db, "checkpoints", "run/two") == 5  # other threads untouched
        # The thread still runs: a fresh input continues from the kept checkpoint.
        await graph.ainvoke({"items": ["z"]}, {"configurable": {"thread_id": "run/one"}}, durability="sync")
        again = await graph.aget_state({"configurable": {"thread_id": "run/one"}})
        assert again.values["items"][-4:] == ["z", "a" * 100, "b" * 100, "c" * 100]
