"""Structured outputs: a JSON-schema ``response_format`` per prompt, opt-in per chat role, with a text fallback.

Contract (docs/INTERFACES.md § agent/structured):

- ``SCHEMAS[prompt_name] = (field, schema)``: describe / refine answer ``{"description": str}``, extend and
  the repetition check ``{"descriptions": [str, ...]}``, summarize ``{"template": str}``. Strict-mode
  compatible (every property required, ``additionalProperties: false``).
- ``response_format(prompt_name)`` is OpenAI's request shape, ``{"type": "json_schema", "json_schema":
  {"name", "schema", "strict": true}}``. The same body is accepted by vLLM's OpenAI-compatible server (it
  turns it into guided decoding) and by Ollama's ``/v1`` endpoint (>= 0.5; an older Ollama ignores it and
  answers in text, which the reader handles). The prompt states the JSON shape too: not every server shows
  the schema to the model.
- ``structured_ask(prompt_name, class_name, *, suffix="", **values) -> StructuredAsk``: the prompt rendered
  with its JSON format instruction (``prompts.render(..., structured=True)``; the paper's wording is
  unchanged), the ``response_format`` and the field to read. A node always offers one; the providers decide.
- ``StructuredMemory`` (one per ``Providers``): ``use(role, cfg)`` is true when the role has
  ``structured = true`` and its endpoint (base_url + model) has not refused ``response_format``;
  ``refused(role, cfg, exc)`` is true for an HTTP 400 / 422 to a structured request — the endpoint is then
  remembered, ONE warning per endpoint is logged, and the caller sends the plain-text request instead.
  ``fallbacks`` counts the calls that fell back.
- The request body (``response_format`` and the JSON-instruction prompt) is what the cache key is made of,
  so turning the setting on or off never returns an answer cached under the other setting.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import prompts
from agent.providers.endpoints import redact_url

if TYPE_CHECKING:
    from agent.providers.config import RoleConfig
    from agent.providers.retry import ProviderError

__all__ = ["SCHEMAS", "StructuredAsk", "StructuredMemory", "response_format", "structured_ask"]

LOG = logging.getLogger(__name__)
REFUSED_STATUSES = frozenset({400, 422})


def _object(field: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {field: value}, "required": [field], "additionalProperties": False}


_SENTENCE: dict[str, Any] = {"type": "string"}
_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "prompt1_describe": ("description", _object("description", _SENTENCE)),
    "prompt2_extend": ("descriptions", _object("descriptions", _LIST)),
    "prompt3_dedupe": ("descriptions", _object("descriptions", _LIST)),
    "prompt4_summarize": ("template", _object("template", _SENTENCE)),
    "prompt5_refine": ("description", _object("description", _SENTENCE)),
}


@dataclass(frozen=True)
class StructuredAsk:
    """A structured alternative to a text request: its prompt, its ``response_format``, the field to read."""

    prompt: str
    response_format: dict[str, Any]
    key: str


def response_format(prompt_name: str) -> dict[str, Any]:
    """The ``response_format`` for ``prompt_name``.

    >>> response_format("prompt4_summarize")["json_schema"]["name"]
    'ltgc_summarize'
    """
    _field, schema = SCHEMAS[prompt_name]
    step = prompt_name.split("_", 1)[1]
    return {"type": "json_schema", "json_schema": {"name": f"ltgc_{step}", "schema": schema, "strict": True}}


def structured_ask(prompt_name: str, class_name: str, *, suffix: str = "", **values: object) -> StructuredAsk:
    """The structured form of ``prompts.render(prompt_name, ...) + suffix`` (``suffix``: the describe re-ask)."""
    text = prompts.render(prompt_name, class_name=class_name, structured=True, **values) + suffix
    return StructuredAsk(text, response_format(prompt_name), SCHEMAS[prompt_name][0])


class StructuredMemory:
    """Which endpoints refused ``response_format`` during this run (thread-safe; see the module docstring)."""

    def __init__(self) -> None:
        self._refused: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.fallbacks = 0

    def use(self, role: str, cfg: RoleConfig) -> bool:
        return bool(cfg.structured) and (cfg.base_url, cfg.model) not in self._refused

    def refused(self, role: str, cfg: RoleConfig, exc: ProviderError) -> bool:
        """True (remember, warn once, fall back) when ``exc`` is the server rejecting the request's format."""
        if exc.kind != "bad_request" or exc.status not in REFUSED_STATUSES:
            return False
        endpoint = (cfg.base_url, cfg.model)
        with self._lock:
            warn = endpoint not in self._refused  # calls already in flight may be refused too: warn once
            self._refused.add(endpoint)
            self.fallbacks += 1
        if warn:
            LOG.warning("%s: %s at %s refused structured outputs (HTTP %s: %s); reading its text replies "
                        "instead for the rest of the run", role, cfg.model, redact_url(cfg.base_url), exc.status,
                        exc.message[:200])
        return True
