"""What ``--resume`` may change: settings that change *how* a run works are applied; settings that change
*what* it generates are refused.

Contract:

- :func:`inputs_fingerprint` and :func:`prompts_digest` are what ``config.json`` records about the inputs
  and the prompt files, next to the resolved settings, so a resume can tell whether they changed.
- :func:`check_resume(saved, fresh)` compares the folder's ``config.json`` (``saved``) with the document
  this invocation would write (``fresh``: ``run`` = ``RunSettings.to_json()``, ``providers`` =
  ``redacted_dump``, ``classes`` with fingerprints, ``prompts_sha256``). A change to a *what*
  setting — classes, their images, K, μ, score, R, the CLIP model, a role's model or request fields, the
  cache namespace, the prompts — raises :class:`ResumeError` (a :class:`store.errors.UsageError`: one
  line naming the setting, old → new, and what to do instead). Any other change (limits, concurrency,
  timeouts, retries, base URLs, key variables, transports, budget caps, output options) is returned as
  ``{setting: [old, new]}`` for the caller to apply and record.
- :func:`check_rerun(saved, fresh, out)`: a *new* run (no ``--resume``) into a folder whose ``config.json``
  differs in a *what* setting would replace that run's manifest; it raises :class:`RerunError` (one line:
  what differs; ``--resume``, a new ``--out`` or ``--overwrite``). ``agent.run --overwrite`` skips it.
- Why refuse rather than apply: a resumed class continues from its checkpoint, which was produced under
  the old settings; applying a new K or model to half of a class (and not to the finished classes) gives a
  dataset that no single setting describes, while ``config.json`` would claim one.

>>> check_resume({"run": {"target_per_class": 11}}, {"run": {"target_per_class": 13}})
Traceback (most recent call last):
...
agent.lifecycle.resume.ResumeError: --resume: --target-per-class changed 11 -> 13, but a resumed run keeps what it generates (classes and their images, K, μ, score, R, CLIP, models, prompts). Drop --resume to start this folder over with the new settings (calls that still apply are cache hits), or use a new --out
>>> check_resume({"run": {"max_classes_in_flight": 8}}, {"run": {"max_classes_in_flight": 2}})
{'--max-classes-in-flight': [8, 2]}
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import prompts
from store.errors import UsageError

__all__ = ["HOW_ROLE_FIELDS", "HOW_RUN_FIELDS", "RerunError", "ResumeError", "check_rerun", "check_resume",
           "config_doc", "diff_config", "inputs_fingerprint", "prompts_digest"]

# Run settings a resume may change (everything else in RunSettings changes what is generated, except the
# run's identity: out, run_id, resume).
HOW_RUN_FIELDS = frozenset({"max_classes_in_flight", "include_originals", "replay", "batch_max_requests", "batch_window_s",
                            "batch_poll_s", "batch_poll_max_s", "batch_fallback",
                            "review", "review_rounds", "ray"})
_IDENTITY = frozenset({"out", "run_id", "resume"})
# Role settings a resume may change: where and how requests are sent, never what they ask for.
HOW_ROLE_FIELDS = frozenset({
    "base_url", "api_key_env", "timeout_s", "max_in_flight", "per_minute", "max_attempts", "backoff_initial_s",
    "backoff_max_s", "billing", "batch", "devices", "batch_size",
})
_WHAT = "classes and their images, K, μ, score, R, CLIP, models, prompts"


class ResumeError(UsageError):
    """A ``--resume`` that would change what the run generates (one line)."""


class RerunError(UsageError):
    """A new run into a folder that holds a run with other inputs, without ``--overwrite`` (one line)."""


def check_resume(saved: Mapping[str, Any], fresh: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Refuse *what* changes (:class:`ResumeError`), return *how* changes (see the module docstring)."""
    what, how = diff_config(saved, fresh)
    if what:
        raise ResumeError(
            f"--resume: {_what_text(what)}, but a resumed run keeps what it generates "
            f"({_WHAT}). Drop --resume to start this folder over with the new settings (calls that still apply "
            "are cache hits), or use a new --out")
    return how


def check_rerun(saved: Mapping[str, Any], fresh: Mapping[str, Any], out: Any) -> None:
    """A new run (no ``--resume``) into a folder holding a run with *other* inputs or settings would replace
    its manifest: refuse with one line (:class:`RerunError`) unless ``--overwrite`` was given (the caller
    skips this check then). The same inputs rerun as before: every call that still applies is a cache hit.

    >>> check_rerun({"run_id": "r1", "run": {"target_per_class": 11}}, {"run": {"target_per_class": 13}}, "runs/a")
    Traceback (most recent call last):
    ...
    agent.lifecycle.resume.RerunError: --out runs/a holds run 'r1' made with other settings (--target-per-class changed 11 -> 13); starting over there would replace its manifest.jsonl: continue that run with --resume, pick a new --out, or pass --overwrite to replace it
    """
    what, _ = diff_config(saved, fresh)
    if what:
        raise RerunError(
            f"--out {out} holds run {saved.get('run_id')!r} made with other settings ({_what_text(what)}); starting "
            "over there would replace its manifest.jsonl: continue that run with --resume, pick a new --out, or pass "
            "--overwrite to replace it")


def _what_text(what: Sequence[tuple[str, Any, Any]]) -> str:
    name, old, new = what[0]
    more = f" (and {len(what) - 1} more: {', '.join(w[0] for w in what[1:])})" if len(what) > 1 else ""
    return f"{name} changed {_show(old)} -> {_show(new)}{more}"


def diff_config(saved: Mapping[str, Any], fresh: Mapping[str, Any]
                ) -> tuple[list[tuple[str, Any, Any]], dict[str, list[Any]]]:
    """``(what changed, how changed)`` between two ``config.json`` documents (see the module docstring)."""
    what: list[tuple[str, Any, Any]] = []
    how: dict[str, list[Any]] = {}
    run: Mapping[str, Any] = fresh.get("run") or {}
    providers: Mapping[str, Any] = fresh.get("providers") or {}
    classes: Sequence[Mapping[str, Any]] | None = fresh.get("classes")
    old_run = saved.get("run") or {}
    for key in sorted(set(old_run) | set(run)):
        if key in _IDENTITY or key not in old_run or key not in run or old_run[key] == run[key]:
            continue
        flag = f"--{key.replace('_', '-')}"
        if key in HOW_RUN_FIELDS:
            how[flag] = [old_run[key], run[key]]
        else:
            what.append((flag, old_run[key], run[key]))
    old_roles = saved.get("providers") or {}
    for role, table in providers.items():
        old_table = old_roles.get(role)
        if not isinstance(table, Mapping) or not isinstance(old_table, Mapping):
            if role in old_roles and old_roles[role] != table:  # cache_namespace
                what.append((f"--{role.replace('_', '-')}", old_roles[role], table))
            continue
        for field in sorted(set(table) & set(old_table)):
            if table[field] == old_table[field]:
                continue
            flag = f"--{role}-{field.replace('_', '-')}"
            if field in HOW_ROLE_FIELDS:
                how[flag] = [old_table[field], table[field]]
            else:
                what.append((flag, old_table[field], table[field]))
    old_prompts, new_prompts = saved.get("prompts_sha256"), fresh.get("prompts_sha256")
    if old_prompts and new_prompts and old_prompts != new_prompts:
        what.append(("the prompt files (prompts/*.txt)", f"sha256 {old_prompts[:12]}", f"sha256 {new_prompts[:12]}"))
    if classes is not None and saved.get("classes") is not None:
        change = _classes_change(saved["classes"], classes)
        if change:
            what.append(change)
    return what, how


def config_doc(settings: Any, providers_config: Any, inputs: Any) -> dict[str, Any]:
    """What ``config.json`` says about a run (before the caller's notes): resolved run settings, providers
    (no secrets), the classes with a fingerprint of their images, and the prompts' digest."""
    from agent.providers.endpoints import redacted_dump

    return {
        "run_id": settings.run_id,
        "run": settings.to_json(),
        "providers": redacted_dump(providers_config),
        "classes": [{"name": c.name, "label": c.label, "M_y": len(c.images), "images": inputs_fingerprint(c.images)}
                    for c in inputs.classes],
        "prompts_sha256": prompts_digest(),
    }


def inputs_fingerprint(images: Iterable[str | Path]) -> str:
    """A short digest of a class's real images (path and size), to notice changed inputs on resume."""
    digest = hashlib.sha256()
    for image in sorted(str(p) for p in images):
        try:
            size = Path(image).stat().st_size
        except OSError:
            size = -1
        digest.update(f"{image}\t{size}\n".encode())
    return digest.hexdigest()[:16]


def prompts_digest() -> str:
    """sha256 of every prompt and template file's text and of the answer-format lines (``formats.toml``):
    what the cache keys are made of."""
    digest = hashlib.sha256()
    for name in (*prompts.PROMPT_NAMES, "template1", "template2"):
        digest.update(name.encode() + b"\0" + prompts.load(name).encode() + b"\0")
    digest.update(b"formats\0" + (prompts.PROMPT_DIR / "formats.toml").read_bytes())
    return digest.hexdigest()


def _classes_change(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> tuple[str, Any, Any] | None:
    old_names = [c.get("name") for c in old]
    new_names = [c.get("name") for c in new]
    if old_names != new_names:
        added = [n for n in new_names if n not in old_names]
        dropped = [n for n in old_names if n not in new_names]
        return ("the tail classes", f"{len(old_names)} classes", f"{len(new_names)} classes"
                + (f" (+{', '.join(map(str, added[:3]))})" if added else "")
                + (f" (-{', '.join(map(str, dropped[:3]))})" if dropped else ""))
    for before, after in zip(old, new, strict=True):
        for key, label in (("label", "label"), ("M_y", "M_y (real images)"), ("images", "real images")):
            if key in before and key in after and before[key] != after[key]:
                return (f"class {before.get('name')!r} {label}", before[key], after[key])
    return None


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) and not value.startswith(("/", "the ", "class ")) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
