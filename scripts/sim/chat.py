"""Chat answers of the OpenAI-compatible simulator: ``chat.completion`` objects, styles, structured JSON, tokens.

THIS IS A SIMULATOR: the content is synthetic (``scripts/sim/content.py``), styled by ``scripts/sim/styles.py``.
Token counts are a deterministic estimate (:func:`estimate_tokens`), the same for prompts and answers.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
import uuid
from typing import Any

from scripts.sim import content as sim_content
from scripts.sim import styles as sim_styles
from scripts.sim.state import SimState

IMAGE_PART_TOKENS = 85  # a fixed estimate per image part (OpenAI's low-detail figure)


def chat_completion(body: dict[str, Any], state: SimState, *, nontemplate: bool,
                    entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object; content from ``sim_content``, styled or structured as the knobs and the
    request say (module docstring); ``max_tokens`` truncates (``length``). ``entry``: the log line."""
    cfg = state.config
    messages = body["messages"]
    text, images = last_user_text(messages), _images_in(messages)
    salt = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    schema = _json_schema(body)
    choices, completion_tokens = [], 0
    for i in range(int(body.get("n") or 1)):
        if nontemplate:
            content = sim_content.nontemplate_answer(text)
        else:
            kind, content = sim_content.chat_answer(text, images, seed=cfg.seed, salt=f"{salt}|{i}")
            if kind == "dedupe" and cfg.dedupe_invent:
                kept = sim_content.listed_items(content, "\0")
                y = sim_content.class_name_of(text, kind)
                content = sim_content.numbered([*kept, sim_content.invented_item(y, kept, cfg.seed)])
            content = _restyle(kind, content, text, schema, state, salt=f"{salt}|{i}", entry=entry)
        content, finish = truncate(content, int(limit) if limit else None)
        completion_tokens += estimate_tokens(content)
        choices.append({"index": i, "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": finish, "logprobs": None})
    prompt_tokens = sum(estimate_tokens(t) for t in _all_texts(messages)) + IMAGE_PART_TOKENS * len(images)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model") or "sim-chat", "choices": choices, "system_fingerprint": "ltgc-simulator",
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _restyle(kind: str, content: str, text: str, schema: Any, state: SimState, *, salt: str,
             entry: dict[str, Any] | None) -> str:
    """The plain answer as JSON for ``schema``, or in a chat model's style for a seeded share of answers."""
    cfg = state.config
    rng = random.Random(f"style|{cfg.seed}|{salt}")
    styled = kind != "other" and rng.random() < cfg.reply_style_share
    style = None
    if schema is not None:
        content, style = sim_styles.structured_reply(schema, kind, content, rng=rng, styled=styled), "json_schema"
    elif styled:
        y = sim_content.class_name_of(text, kind)
        removed: list[str] = []
        if kind == "dedupe":
            kept = {sim_content.normalise(s) for s in sim_content.listed_items(content, "\0")}
            listed = sim_content.listed_items(text, "Please exclude any repetitive")
            removed = [s for s in listed if sim_content.normalise(s) not in kept]
        style, content = sim_styles.style_reply(kind, content, class_name=y, rng=rng, removed=removed)
    state.count(styled=int(styled), structured=int(schema is not None))
    if entry is not None:
        entry["style"] = style if styled or schema is not None else None
    return content


def _json_schema(body: dict[str, Any]) -> Any:
    """The schema of a ``json_schema`` response_format, or None (no response_format, or ``text``)."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        return spec.get("schema", {}) if isinstance(spec, dict) else {}
    return None


def estimate_tokens(text: str) -> int:
    """Deterministic token estimate: ``ceil(words * 1.3)``; ``"a b c" -> 4``."""
    return math.ceil(len(text.split()) * 1.3)


def truncate(text: str, max_tokens: int | None) -> tuple[str, str]:
    """``(text, "stop")``, or the longest word prefix within ``max_tokens`` and ``"length"``."""
    if max_tokens is None or estimate_tokens(text) <= max_tokens:
        return text, "stop"
    words = list(re.finditer(r"\S+", text))
    keep = max(0, math.floor(max_tokens / 1.3))
    while keep > 0 and math.ceil(keep * 1.3) > max_tokens:
        keep -= 1
    return (text[: words[keep - 1].end()] if keep else ""), "length"


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []


def _all_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [p.get("text") or "" for m in messages for p in _parts(m) if p.get("type") == "text"]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """Text of the last user turn (the prompt being answered); the whole conversation if none."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return "\n".join(p.get("text") or "" for p in _parts(message) if p.get("type") == "text")
    return "\n".join(_all_texts(messages))


def _images_in(messages: list[dict[str, Any]]) -> list[bytes]:
    """Decoded ``image_url`` data URIs of the conversation (remote URLs are not fetched: no network)."""
    found = []
    for message in messages:
        for part in _parts(message):
            ref = part.get("image_url") if part.get("type") == "image_url" else None
            url = ref.get("url", "") if isinstance(ref, dict) else (ref if isinstance(ref, str) else "")
            if (data := sim_content.decode_data_uri(url)) is not None:
                found.append(data)
    return found
