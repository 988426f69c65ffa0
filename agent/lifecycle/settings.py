"""Run-level settings of ``python -m agent.run``: typed, validated, resolved CLI > TOML ``[run]`` > saved > defaults.

Contract:

- ``RunSettings`` holds every run-level knob (inputs, run folder, K, μ, score, R, CLIP model, loop bounds,
  concurrency). Paths are absolute once resolved.
- ``resolve(cli, toml_run, saved)`` layers plain dicts: flags actually given, the ``[run]`` table of
  ``--config``, and (on ``--resume``) the ``run`` block of the folder's ``config.json``, so a resume needs no
  flags but ``--out`` and ``--resume``. Every bad value raises ``SettingsError`` with one line naming the
  setting and where it came from (``--target-per-class: must be an integer >= 1, got 'x'``).
- ``threshold`` left unset resolves to ``agent.providers.scorer.DEFAULT_THRESHOLDS[score]`` (documented there).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from agent.graph.state import GraphSettings
from store.errors import UsageError

__all__ = ["RunSettings", "SettingsError", "new_run_id", "resolve"]

DEFAULT_THRESHOLDS = {"cosine": 0.25, "softmax": 0.6}  # same numbers as agent.providers.scorer (no torch import here)
THRESHOLD_RANGES = {"cosine": (-1.0, 1.0), "softmax": (0.0, 1.0)}  # what each score can take
_PATH_FIELDS = ("classes", "images", "train_list", "data_root", "class_names", "out")


class SettingsError(UsageError):
    """A run setting that cannot be used; one line: which setting, from where, what is expected."""


@dataclass(frozen=True)
class RunSettings:
    out: Path
    run_id: str
    classes: Path
    images: Path | None = None
    train_list: Path | None = None
    data_root: Path | None = None
    class_names: Path | None = None
    resume: bool = False
    target_per_class: int = 100
    threshold: float = DEFAULT_THRESHOLDS["cosine"]
    score: Literal["cosine", "softmax"] = "cosine"
    max_rounds: int = 3
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"  # the official code scores with OpenAI's CLIP ViT-B/32
    max_describe: int | None = None
    max_extend_rounds: int = 50
    max_classes_in_flight: int = 8
    include_originals: bool = False
    # The Batch API (roles with batch = true; agent/batch/transport.py): when a batch closes, how it is polled, and
    # what happens to requests a batch did not answer.
    batch_max_requests: int = 50_000
    batch_window_s: float = 60.0
    batch_poll_s: float = 15.0
    batch_poll_max_s: float = 300.0
    batch_fallback: Literal["none", "sync"] = "none"
    # Human review (issue 25): each class pauses before finalize until a reviewer decides (python -m agent.review).
    review: bool = False
    review_rounds: int = 2

    def graph_settings(self) -> GraphSettings:
        return GraphSettings(threshold=self.threshold, score=self.score, max_rounds=self.max_rounds,
                             max_describe=self.max_describe, max_extend_rounds=self.max_extend_rounds,
                             review=self.review, review_rounds=self.review_rounds)

    def pretrained_arg(self) -> str | None:
        """What open_clip's ``pretrained=`` gets: ``None`` for ``none`` (random weights)."""
        return None if self.clip_pretrained.strip().lower() in ("", "none") else self.clip_pretrained

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


def new_run_id() -> str:
    """A sortable, unique id: ``20261129-101500-3f2a``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]


def resolve(cli: Mapping[str, Any], toml_run: Mapping[str, Any], saved: Mapping[str, Any] | None = None) -> RunSettings:
    """Merge the layers (see the module docstring) and validate every value."""
    known = {f.name for f in fields(RunSettings)}
    for key in toml_run:
        if key not in known:
            raise SettingsError(f"[run] {key}: unknown setting; known: {', '.join(sorted(known - {'resume'}))}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer, label in ((saved or {}, "config.json"), (toml_run, "[run]"), (cli, "--")):
        for key, value in layer.items():
            if key in known and value is not None:
                values[key] = value
                sources[key] = f"--{key.replace('_', '-')}" if label == "--" else f"{label} {key}"
    for required in ("out", "classes"):
        if required not in values:
            raise SettingsError(f"--{required} is required (or give it in the [run] table of --config)")
    clean = {key: _CHECKS[key](value, sources[key]) for key, value in values.items() if key in _CHECKS}
    clean["run_id"] = str(values.get("run_id") or new_run_id())
    if not clean["run_id"].strip() or "/" in clean["run_id"]:
        raise SettingsError(f"{sources.get('run_id', '--run-id')}: must be a non-empty id without '/'")
    score = clean.get("score", "cosine")
    if "threshold" not in clean:
        clean["threshold"] = DEFAULT_THRESHOLDS[score]
    low, high = THRESHOLD_RANGES[score]
    if not low <= clean["threshold"] <= high:  # a μ no score can reach accepts or rejects every image
        raise SettingsError(f"{sources['threshold']}: must be from {low:g} to {high:g} with --score {score} "
                            f"(a {'cosine' if score == 'cosine' else 'probability'}), got {values['threshold']!r}")
    return RunSettings(**clean)


# ---------------------------------------------------------------------------------------------- checks
def _int(minimum: int) -> Callable[[Any, str], int]:
    def check(value: Any, where: str) -> int:
        try:
            number = int(value)
            if isinstance(value, bool) or float(value) != number:
                raise ValueError
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: must be an integer >= {minimum}, got {value!r}") from None
        if number < minimum:
            raise SettingsError(f"{where}: must be an integer >= {minimum}, got {value!r}")
        return number
    return check


def _float(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SettingsError(f"{where}: must be a finite number, got {value!r}")
    return number


def _choice(*options: str) -> Callable[[Any, str], str]:
    def check(value: Any, where: str) -> str:
        if value not in options:
            raise SettingsError(f"{where}: must be one of {', '.join(options)}, got {value!r}")
        return str(value)
    return check


def _path(value: Any, where: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise SettingsError(f"{where}: must be a path, got {value!r}")
    return Path(value).expanduser().resolve()


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"{where}: must be a non-empty string, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise SettingsError(f"{where}: must be true or false, got {value!r}")


def _positive(value: Any, where: str) -> float:
    number = _float(value, where)
    if number <= 0:
        raise SettingsError(f"{where}: must be a number of seconds > 0, got {value!r}")
    return number


def _batch_requests(value: Any, where: str) -> int:
    number = _int(1)(value, where)
    if number > 50_000:  # the Batch API's limit per input file
        raise SettingsError(f"{where}: must be an integer from 1 to 50000 (the Batch API's limit), got {value!r}")
    return number


def _optional_int(minimum: int) -> Callable[[Any, str], int | None]:
    inner = _int(minimum)

    def check(value: Any, where: str) -> int | None:
        return None if isinstance(value, str) and value.lower() in ("none", "all") else inner(value, where)
    return check


_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    **{name: _path for name in _PATH_FIELDS},
    "resume": _bool,
    "target_per_class": _int(1),
    "threshold": _float,
    "score": _choice("cosine", "softmax"),
    "max_rounds": _int(0),
    "clip_model": _text,
    "clip_pretrained": _text,
    "max_describe": _optional_int(1),
    "max_extend_rounds": _int(1),
    "max_classes_in_flight": _int(1),
    "include_originals": _bool,
    "batch_max_requests": _batch_requests,
    "batch_window_s": _positive,
    "batch_poll_s": _positive,
    "batch_poll_max_s": _positive,
    "batch_fallback": _choice("none", "sync"),
    "review": _bool,
    "review_rounds": _int(0),
}
