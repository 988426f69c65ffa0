"""How the run's checkpoints are (de)serialised: LangGraph's strict msgpack mode.

Contract:

- ``strict_serializer()`` is ``JsonPlusSerializer(allowed_msgpack_modules=None)``: the same as running
  with ``LANGGRAPH_STRICT_MSGPACK=true``, it revives only LangGraph's built-in list of safe types
  (``langgraph.checkpoint.serde._msgpack.SAFE_MSGPACK_TYPES``); any other type a checkpoint names comes
  back as plain data instead of being imported and called.
- Why: the default mode imports and calls whatever class a checkpoint names, so anyone able to write a
  run's ``checkpoints.sqlite`` (a shared run folder, a run copied from elsewhere) could run code on
  ``--resume``. The class state is plain JSON-like data (agent/graph/state.py), so strict mode costs
  nothing; tests/reliability/test_secrets.py loads real run checkpoints under it and checks that nothing
  is blocked.
"""

from __future__ import annotations

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

__all__ = ["strict_serializer"]


def strict_serializer() -> JsonPlusSerializer:
    """LangGraph's serializer in strict msgpack mode (only its built-in safe types are revived)."""
    return JsonPlusSerializer(allowed_msgpack_modules=None)
