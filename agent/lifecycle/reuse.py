"""Reusing a finished class on a fresh run: what a class's result depends on, as one key.

Contract:

- A fresh run (no ``--resume``) into a folder restarts every class at ``describe``; each call that still
  applies is a cache hit, so the class replays to the state it reached before. When *nothing* that state
  depends on has changed, that replay is pure cost (45–65 ms a class at K = 10: graph steps, checkpoint writes and
  cache reads: issue 23's warm rerun). The driver then takes the class's kept final state instead
  (agent/lifecycle/driver.py): same manifest rows, same images, no call, no trace row.
- :func:`run_key` digests what every class shares (from the run's ``config_doc``): the *what* settings (the ones a
  ``--resume`` refuses to change, agent/lifecycle/resume.py), the providers' *what* fields (models, request
  fields, the cache namespace; not base URLs, limits or keys), the prompts' digest, a digest of the code
  that makes and reads the calls (:func:`code_digest`: the ``agent/graph``, ``agent/providers``,
  ``agent/batch`` and ``store`` sources and the prompt files, plus the package version), and the call
  cache's epoch (``store.cache.CallCache.epoch``: a deleted cache is a new epoch, so deleting it means
  "ask again"). softmax scoring adds every class (a class's score depends on all C_y).
- :func:`class_key` adds one class: name, label, slug, K, and each real image's path, size and mtime.
  The driver stores it in the class's initial state (``reuse_key``); a later fresh run reuses the class
  only when its kept state is ``complete`` with an equal key and every accepted image is still on disk.
  Anything else — a short or failed class, an older checkpoint without a key, ``--review``, ``--replay``
  — replays through the graph as before.
- Only the same run id finds the kept state (threads are ``"<run_id>/<class>"``): a rerun without ``--run-id``
  gets a new timestamp id and replays from the cache.
- Not covered: a model server whose weights changed under the same model name (the cache would replay
  its old answers anyway), and images edited in place with the same size and mtime.

>>> class_key("r" * 64, name="fox", label=3, slug="fox", k_y=10, images=[]) == class_key(
...     "r" * 64, name="fox", label=3, slug="fox", k_y=10, images=[])
True
>>> class_key("r" * 64, name="fox", label=3, slug="fox", k_y=10, images=[]) == class_key(
...     "r" * 64, name="fox", label=3, slug="fox", k_y=11, images=[])
False
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from agent.lifecycle.resume import HOW_ROLE_FIELDS, HOW_RUN_FIELDS
from store.cache import canonical_json

__all__ = ["class_key", "code_digest", "run_key"]

_IDENTITY = frozenset({"out", "run_id", "resume", "replay"})
_ROOT = Path(__file__).resolve().parents[2]
# What makes and reads the calls: a change here may change what a replay would produce.
_CODE = ("agent/graph", "agent/providers", "agent/batch", "store", "prompts")


def run_key(doc: Mapping[str, Any], score: str, cache_epoch: str) -> str:
    """sha256 of everything every class's result depends on (see the module docstring); ``doc`` is the run's
    ``config_doc`` (agent/lifecycle/resume.py: what config.json records), ``score`` its score mode."""
    providers: dict[str, Any] = {}
    for role, table in doc["providers"].items():
        providers[role] = ({k: v for k, v in table.items() if k not in HOW_ROLE_FIELDS}
                           if isinstance(table, Mapping) else table)
    what = {
        "run": {k: v for k, v in doc["run"].items() if k not in HOW_RUN_FIELDS and k not in _IDENTITY},
        "providers": providers,
        "prompts": doc["prompts_sha256"],
        "code": code_digest(),
        "cache_epoch": cache_epoch,
        # softmax: a class's score depends on every class's C_y, so every class is part of each key
        "all_classes": doc["classes"] if score == "softmax" else None,
    }
    return hashlib.sha256(canonical_json(what).encode("utf-8")).hexdigest()


def class_key(run: str, *, name: str, label: int, slug: str, k_y: int, images: Sequence[str]) -> str:
    """sha256 of ``run`` (:func:`run_key`) and one class's own inputs (its images by path, size, mtime)."""
    doc = {"run": run, "name": name, "label": label, "slug": slug, "k_y": k_y, "images": list(_stamps(images))}
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


@cache
def code_digest() -> str:
    """sha256 of the package version and of every file under the code that makes and reads the calls."""
    digest = hashlib.sha256(_version().encode() + b"\0")
    for folder in _CODE:
        for path in sorted((_ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".txt", ".toml"):
                digest.update(str(path.relative_to(_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _version() -> str:
    try:
        return metadata.version("ltgc")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _stamps(images: Iterable[str]) -> Iterable[list[Any]]:
    for image in images:
        try:
            st = os.stat(image)
            yield [str(image), st.st_size, st.st_mtime_ns]
        except OSError:
            yield [str(image), -1, -1]
