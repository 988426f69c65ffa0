"""Hugging Face hub weights without a network: found in the local cache, or one line at once (issue 21).

Contract:

- :func:`prepare_hub_files(what, repo_id, filenames, fix=...)` is called right before a library
  (open_clip, diffusers) would download ``repo_id``'s files. When one of ``filenames`` (``None``: any file
  of the repo) is in the local cache and the hub cannot be reached (``HF_HUB_OFFLINE`` set, or a TCP
  connect to the hub, or to the HTTPS proxy, fails within :data:`PROBE_S`), the process switches
  ``huggingface_hub`` to offline mode, so the library loads the cached copy without its ~1 minute of
  retries. When nothing is cached and the hub cannot be reached, it raises :class:`WeightsNotCached`
  (a ``UsageError``: one line saying what is missing, where it would be, and ``fix``). With a reachable
  hub it does nothing: the library downloads as usual.
- :func:`clip_hub_files(model, tag)` says which hub files an open_clip ``(model, pretrained tag)`` loads
  (``None``: not a hub download — a local file, ``none``, or a plain URL).
- Only the cache is read; nothing is written, nothing is sent but the TCP probe.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from store.errors import UsageError

__all__ = ["CLIP_FIX", "PROBE_S", "WeightsNotCached", "clip_hub_files", "hub_cache_dir", "prepare_hub_files"]

PROBE_S = 3.0  # one TCP connect: a reachable hub answers in well under a second
# What to do when CLIP weights are neither cached nor downloadable (agent and trainer fill in their flags).
CLIP_FIX = ("download them once with network (HF_HUB_OFFLINE=1 then keeps later runs off the network), pass a "
            "local weights file to {pretrained}, or try the pipeline without weights: {model} <config.json> "
            "{pretrained} none")


class WeightsNotCached(UsageError):
    """Hub weights that are not in the local cache while the hub cannot be reached (one line)."""


def prepare_hub_files(what: str, repo_id: str, filenames: Sequence[str] | None, *, fix: str) -> None:
    """See the module docstring. ``what`` names the setting (``--clip-pretrained openai``)."""
    if _cached(repo_id, filenames):
        if not _reachable():
            _go_offline()  # the cached copy loads at once, with no retries against a dead network
        return
    if _reachable():
        return
    why = "HF_HUB_OFFLINE is set" if _offline_env() else f"{_hub_host()[0]} cannot be reached"
    files = f" ({', '.join(filenames)})" if filenames else ""
    raise WeightsNotCached(
        f"{what}: the weights {repo_id}{files} are not in the local Hugging Face cache ({hub_cache_dir()}) and "
        f"{why}; {fix}")


def clip_hub_files(model: str, tag: str | None) -> tuple[str, list[str]] | None:
    """``(repo_id, candidate filenames)`` open_clip downloads for ``model`` / ``tag``, or ``None``.

    >>> clip_hub_files("ViT-B-32", "openai")
    ('timm/vit_base_patch32_clip_224.openai', ['open_clip_model.safetensors', 'open_clip_pytorch_model.bin'])
    >>> clip_hub_files("ViT-B-32", "none") is None, clip_hub_files("ViT-B-32", None) is None
    (True, True)
    """
    if not tag or tag == "none" or Path(tag).expanduser().is_file():
        return None
    import open_clip
    from open_clip import pretrained

    cfg = open_clip.get_pretrained_cfg(model, tag)
    hub = (cfg or {}).get("hf_hub", "")
    if not hub:
        return None
    if hub.endswith("/"):  # 'org/name/': open_clip's default file name
        repo_id, filename = hub.rstrip("/"), pretrained.HF_WEIGHTS_NAME
    else:
        repo_id, filename = os.path.split(hub)
    return repo_id, [*pretrained._get_safe_alternatives(filename), filename]


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _cached(repo_id: str, filenames: Sequence[str] | None) -> bool:
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    if filenames:
        return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)
    try:  # any snapshot of the repo (a diffusers pipeline is many files: from_pretrained checks them)
        return any(repo.repo_id == repo_id and repo.revisions for repo in scan_cache_dir().repos)
    except Exception:  # noqa: BLE001 - no cache folder yet, or an unreadable one: nothing cached
        return False


def _offline_env() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _go_offline() -> None:
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True  # read at call time by huggingface_hub (constants.is_offline_mode)


def _hub_host() -> tuple[str, int]:
    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def _reachable() -> bool:
    """Whether the hub (or the HTTPS proxy in front of it) takes a TCP connection within ``PROBE_S``."""
    if _offline_env():
        return False
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    host, port = _hub_host()
    if proxy:
        parts = urlsplit(proxy if "//" in proxy else f"http://{proxy}")
        host, port = parts.hostname or host, parts.port or 80
    try:
        with socket.create_connection((host, port), timeout=PROBE_S):
            return True
    except OSError:
        return False
