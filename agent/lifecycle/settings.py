"""Run-level settings of ``python -m agent.run``: one typed tree, each default and bound written once.

Contract:

- One pydantic model per section — :class:`InputSettings` (inputs and run folder), :class:`ScoreSettings`
  (μ and the CLIP score), :class:`LoopBounds` (K, R and the graph's loop limits), :class:`ClipSettings`,
  :class:`ConcurrencySettings`, :class:`BatchKnobs` (the Batch API, agent/batch/transport.py) and
  :class:`CapSettings` (``max_cost`` / ``max_calls``), :class:`ReviewSettings` (``--review``, issue 25),
  :class:`ClusterSettings` (``--ray``). :class:`GraphSettings` (score + loop bounds + review) is what
  the class graph and the dry-run planner take; :class:`RunSettings` is all of them, flat, so
  ``config.json``'s ``run`` block keeps its keys. Paths are absolute once validated.
- :func:`resolve` (``cli``, ``toml_run``, ``saved``) is the one place the layers meet: flags actually given >
  the ``[run]`` table of ``--config`` > (on ``--resume``) the ``run`` block of the folder's ``config.json`` >
  the defaults here. The caps are never saved: each invocation states its own (exit 3 says "resume with a
  higher cap"). Every bad value raises ``SettingsError`` with one line naming the setting and where it came
  from (``--target-per-class: must be an integer >= 1, got 'x'``, ``run.toml [run] max_rounds: ...``,
  ``config.json max_rounds: ...``); pydantic's own report is never shown.
- :func:`load_layers` reads what the layers come from (the TOML file, the saved ``config.json``) for
  ``agent.run``; ``threshold`` left unset is ``DEFAULT_THRESHOLDS[score]`` (agent/graph/constants.py).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agent.batch import MAX_REQUESTS
from agent.graph.constants import DEFAULT_THRESHOLDS, THRESHOLD_RANGES, ScoreMode
from agent.lifecycle.folder import CONFIG, RunFolder, RunFolderError, read_json
from agent.providers.config import ROLES, read_toml, role_fields
from store.errors import UsageError

__all__ = ["BatchKnobs", "CapSettings", "ClipSettings", "ClusterSettings", "ConcurrencySettings", "GraphSettings",
           "InputSettings", "Layers", "LoopBounds", "ReviewSettings", "RunSettings", "ScoreSettings", "SettingsError",
           "default", "default_text",
           "load_layers", "new_run_id", "resolve", "resolve_caps"]

PATH_FIELDS = ("classes", "images", "train_list", "data_root", "class_names", "out")


class SettingsError(UsageError):
    """A run setting that cannot be used; one line: which setting, from where, what is expected."""


@dataclass(frozen=True)
class Expect:
    """What a field must be, in the words of the one-line error (kept next to the bound it describes)."""

    text: str


def new_run_id() -> str:
    """A sortable, unique id: ``20261129-101500-3f2a``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # TOML `true` is not the integer 1
        raise ValueError("not a number")
    return value


def _none_word(value: Any) -> Any:
    return None if isinstance(value, str) and value.lower() in ("none", "all") else value


def _path_text(value: Any) -> Any:
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise ValueError("not a path")
    return value


def _text(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("empty")
    return value


def _run_id(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip() or "/" in value:
        raise ValueError("bad id")
    return value


Count0 = Annotated[int, BeforeValidator(_not_bool), Ge(0), Expect("an integer >= 0")]
Count1 = Annotated[int, BeforeValidator(_not_bool), Ge(1), Expect("an integer >= 1")]
Seconds = Annotated[float, BeforeValidator(_not_bool), Gt(0), Field(allow_inf_nan=False),
                    Expect("a number of seconds > 0")]


AbsPath = Annotated[Path, BeforeValidator(_path_text), AfterValidator(lambda p: p.expanduser().resolve()),
                    Expect("a path")]
Text = Annotated[str, BeforeValidator(_text), Expect("a non-empty string")]
Flag = Annotated[StrictBool, Expect("true or false")]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class InputSettings(_Section):
    out: AbsPath
    run_id: Annotated[str, BeforeValidator(_run_id), Expect("a non-empty id without '/'")] = Field(
        default_factory=new_run_id)
    classes: AbsPath
    images: AbsPath | None = None
    train_list: AbsPath | None = None
    data_root: AbsPath | None = None
    class_names: AbsPath | None = None
    resume: Flag = False
    include_originals: Flag = False
    replay: Flag = False  # a fresh run replays unchanged finished classes too (agent/lifecycle/reuse.py)


class ScoreSettings(_Section):
    """μ and the score it applies to; μ left out is the score's default, and must lie in the score's range."""

    threshold: Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False), Expect("a finite number")]
    score: Annotated[ScoreMode, Expect("one of cosine, softmax")] = "cosine"

    @model_validator(mode="before")
    @classmethod
    def _default_threshold(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("threshold") is None:
            score = data.get("score", "cosine")
            data = {**data, "threshold": DEFAULT_THRESHOLDS.get(score, DEFAULT_THRESHOLDS["cosine"])}
        return data

    @model_validator(mode="after")
    def _threshold_in_range(self) -> ScoreSettings:
        low, high = THRESHOLD_RANGES[self.score]
        if not low <= self.threshold <= high:  # a μ no score can reach accepts or rejects every image
            kind = "cosine" if self.score == "cosine" else "probability"
            raise PydanticCustomError("threshold_range", f"must be from {low:g} to {high:g} with --score "
                                      f"{self.score} (a {kind})")
        return self


class LoopBounds(_Section):
    target_per_class: Count1 = 100  # K_y
    max_rounds: Count0 = 3  # R: refine rounds per item
    max_describe: Annotated[Count1 | None, BeforeValidator(_none_word)] = None  # None: every real image
    max_extend_rounds: Count1 = 50  # per pass; with EXTEND_BATCH = 50 this covers K_y = 800 (Places-LT) twice
    max_dedupe_passes: Count1 = 3  # dedupe -> extend -> dedupe loops before giving up short (not a flag)


class ReviewSettings(_Section):
    """Human review before finalize (agent/graph/review.py; python -m agent.review)."""

    review: Flag = False  # pause each class at the review interrupt
    review_rounds: Count0 = 2  # review rounds whose rejected images are refined and re-rendered


class GraphSettings(ScoreSettings, LoopBounds, ReviewSettings):
    """What the class graph (agent/graph) and the dry-run planner (agent/readout/plan.py) read."""


class ClipSettings(_Section):
    clip_model: Text = "ViT-B-32"
    clip_pretrained: Text = "openai"  # the official code scores with OpenAI's CLIP ViT-B/32

    def pretrained_arg(self) -> str | None:
        """What open_clip's ``pretrained=`` gets: ``None`` for ``none`` (random weights)."""
        return None if self.clip_pretrained.strip().lower() in ("", "none") else self.clip_pretrained


class ConcurrencySettings(_Section):
    max_classes_in_flight: Count1 = 8


class BatchKnobs(_Section):
    """When a batch closes, how it is polled, what happens to requests a batch did not answer."""

    batch_max_requests: Annotated[int, BeforeValidator(_not_bool), Ge(1), Le(MAX_REQUESTS),
                                  Expect(f"an integer from 1 to {MAX_REQUESTS} (the Batch API's limit)")] = MAX_REQUESTS
    batch_window_s: Seconds = 60.0
    batch_poll_s: Seconds = 15.0
    batch_poll_max_s: Seconds = 300.0
    batch_fallback: Annotated[Literal["none", "sync"], Expect("one of none, sync")] = "none"


def _cluster_word(value: Any) -> Any:
    """``none`` / ``off`` / empty: no cluster; an address must be one word."""
    if value is None or isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
        return None
    if not isinstance(value, str) or any(ch.isspace() for ch in value.strip()):
        raise ValueError("not an address")
    return value.strip()


class ClusterSettings(_Section):
    """A Ray cluster for the GPU-bound local work (agent/providers/cluster.py); where, not what: a resume may
    change it."""

    ray: Annotated[str | None, BeforeValidator(_cluster_word),
                   Expect("local, auto, a cluster address (HOST:6379 or ray://HOST:10001) or none")] = None


class CapSettings(_Section):
    """The run's spending caps (agent/lifecycle/budget.py), whole run, across --resume; never saved."""

    max_cost: Annotated[float, BeforeValidator(_not_bool), Gt(0), Field(allow_inf_nan=False),
                        Expect("a number of US dollars > 0")] | None = None
    max_calls: Count1 | None = None


class RunSettings(InputSettings, GraphSettings, ClipSettings, ConcurrencySettings, BatchKnobs, CapSettings,
                  ClusterSettings):
    """Every run-level knob, flat (one section per base class)."""

    def graph_settings(self) -> GraphSettings:
        return GraphSettings(**{name: getattr(self, name) for name in GraphSettings.model_fields})

    def to_json(self) -> dict[str, Any]:
        """The ``run`` block of ``config.json`` (caps and constants left out; paths as text)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in ((k, getattr(self, k)) for k in SAVED)}


NOT_SETTABLE = frozenset({"max_dedupe_passes"})  # a graph constant, not a flag: config.json never had it
NOT_SAVED = frozenset(CapSettings.model_fields) | NOT_SETTABLE
SAVED = ("out", "run_id", "classes", "images", "train_list", "data_root", "class_names", "resume", "target_per_class",
         "threshold", "score", "max_rounds", "clip_model", "clip_pretrained", "max_describe", "max_extend_rounds",
         "max_classes_in_flight", "include_originals", "replay", "batch_max_requests", "batch_window_s", "batch_poll_s",
         "batch_poll_max_s", "batch_fallback", "review", "review_rounds", "ray")  # config.json's order (all fields but NOT_SAVED; a test checks)
SETTABLE = frozenset(RunSettings.model_fields) - NOT_SETTABLE


def default(name: str) -> Any:
    """A setting's default, for the other places that show or need it (``--help``, BatchSettings).

    >>> default("max_extend_rounds"), default("batch_window_s")
    (50, 60.0)
    """
    return RunSettings.model_fields[name].default


def default_text(name: str) -> str:
    """``default_text("batch_poll_max_s") -> '300'``: a default as ``--help`` prints it."""
    value = default(name)
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve(cli: Mapping[str, Any], toml_run: Mapping[str, Any], saved: Mapping[str, Any] | None = None, *,
            toml_label: str = "[run]") -> RunSettings:
    """Merge the layers (see the module docstring) and validate every value into :class:`RunSettings`."""
    for key in toml_run:
        if key not in SETTABLE:
            raise SettingsError(f"{toml_label} {key}: unknown setting; known: "
                                f"{', '.join(sorted(SETTABLE - {'resume'}))}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    saved_run = {k: v for k, v in (saved or {}).items() if k not in NOT_SAVED and k != "resume"}
    for layer, label in ((saved_run, CONFIG), (toml_run, toml_label), (cli, "--")):
        for key, value in layer.items():
            if key in SETTABLE and value is not None:
                values[key] = value
                sources[key] = f"--{key.replace('_', '-')}" if label == "--" else f"{label} {key}"
    for required in ("out", "classes"):
        if required not in values:
            raise SettingsError(f"--{required} is required (or give it in the [run] table of --config)")
    try:
        return RunSettings(**values)
    except ValidationError as exc:
        raise _one_line(exc, values, sources) from None


def resolve_caps(cli: Mapping[str, Any]) -> CapSettings:
    """The caps from flags alone (``--max-cost`` / ``--max-calls``; ``None`` = not given)."""
    values = {k: v for k, v in cli.items() if v is not None}
    try:
        return CapSettings(**values)
    except ValidationError as exc:
        raise _one_line(exc, values, {}, CapSettings) from None


def _one_line(exc: ValidationError, values: Mapping[str, Any], sources: Mapping[str, str],
              model: type[BaseModel] = RunSettings) -> SettingsError:
    """The first error as ``<source>: must be <what>, got <value>`` (the field's :class:`Expect`)."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "threshold"  # the only model-level check is μ's range
    where = sources.get(name, f"--{name.replace('_', '-')}")
    if error["type"] == "threshold_range":
        return SettingsError(f"{where}: {error['msg']}, got {values.get(name)!r}")
    field = model.model_fields[name]
    expect = next((m.text for m in field.metadata if isinstance(m, Expect)), None)
    for arg in getattr(field.annotation, "__args__", ()):  # Optional[...]: the Expect sits on the inner type
        expect = expect or next((m.text for m in getattr(arg, "__metadata__", ()) if isinstance(m, Expect)), None)
    return SettingsError(f"{where}: must be {expect or error['msg']}, got {values.get(name)!r}")


# ---------------------------------------------------------------------------------------------- the layers' sources
@dataclass(frozen=True)
class Layers:
    """What ``agent.run`` resolved: the settings, the TOML document, and the saved ``config.json`` (resume)."""

    settings: RunSettings
    providers_doc: dict[str, Any]  # the TOML document with the saved role tables underneath, for ProvidersConfig
    toml_run: dict[str, Any]
    saved_doc: dict[str, Any] | None

    def where(self, key: str, config: str | None) -> str | None:
        """``<config> [run] <key>`` when that setting came from the TOML file (for errors about its value)."""
        return f"{config} [run] {key}" if config and key in self.toml_run else None


def load_layers(args: argparse.Namespace, flags: frozenset[str]) -> Layers:
    """Read ``--config`` and (on ``--resume``) the folder's ``config.json``, then :func:`resolve` with the
    flags in ``flags`` that were given."""
    doc = read_toml(args.config) if args.config else {}
    toml_run = doc.get("run", {})
    if not isinstance(toml_run, dict):
        raise SettingsError(f"{args.config}: [run] must be a table")
    if args.config:  # relative paths in the TOML are relative to the TOML's folder, not to the shell's
        toml_run = _toml_paths(toml_run, Path(args.config).resolve().parent)
    cli = {k: v for k, v in vars(args).items() if k in flags and v is not None}
    saved_doc = _saved_config(args, toml_run)
    saved = None if saved_doc is None else saved_doc["run"]
    label = f"{args.config} [run]" if args.config else "[run]"
    providers_doc = _merge_roles(_saved_providers(saved_doc), doc)
    return Layers(resolve(cli, toml_run, saved, toml_label=label), providers_doc, toml_run, saved_doc)


def _toml_paths(toml_run: dict[str, Any], base: Path) -> dict[str, Any]:
    """``[run]`` path settings given relative in a TOML file, made relative to the file's folder."""
    out = dict(toml_run)
    for key in (*PATH_FIELDS, *_FILE_OR_NAME):
        value = out.get(key)
        if key in _FILE_OR_NAME and not (isinstance(value, str) and value.lower().endswith(_FILE_OR_NAME[key])):
            continue  # a model or weights name (ViT-B-32, openai, hf-hub:org/repo), not a file
        if isinstance(value, str) and value.strip() and not Path(value).expanduser().is_absolute():
            out[key] = str((base / value).resolve()) if key in _FILE_OR_NAME else str(base / value)
    return out


# Settings holding a name or a file: a value with one of these endings is a file, relative to the TOML's folder.
_FILE_OR_NAME = {"clip_model": (".json",), "clip_pretrained": (".pt", ".pth", ".bin", ".safetensors")}


def _saved_config(args: argparse.Namespace, toml_run: dict[str, Any]) -> dict[str, Any] | None:
    """On --resume: the folder's config.json (the run being continued); None for a fresh run."""
    if not args.resume:
        return None
    out = args.out or toml_run.get("out")
    if not out:
        raise SettingsError("--resume needs --out RUN_DIR (the folder of the run to continue)")
    path = RunFolder(Path(out)).config
    if not Path(out).is_dir():
        raise SettingsError(f"--resume: {out} does not exist; give the --out folder of an earlier run "
                            "(or drop --resume to start a new run there)")
    if not path.exists():
        raise SettingsError(f"--resume: {path} not found: the run in {out} never got past start-up, so there "
                            "is nothing to continue; run the full command again without --resume")
    try:
        doc = read_json(path)
    except RunFolderError as exc:
        raise SettingsError(f"--resume: {exc}; start a new run") from None
    if not isinstance(doc.get("run"), dict):
        raise SettingsError(f"--resume: {path} is not a run config (no run table); start a new run")
    if args.run_id and args.run_id != doc["run"].get("run_id"):
        raise SettingsError(
            f"--run-id {args.run_id}: the run in {args.out} is {doc['run'].get('run_id')!r}; drop --run-id to resume it"
        )
    return doc


def _saved_providers(doc: dict[str, Any] | None) -> dict[str, Any]:
    """The providers block of the saved config.json: the lowest layer, so ``--out RUN --resume`` alone
    continues a run with its own settings."""
    if doc is None:
        return {}
    providers = doc.get("providers", {})
    if not isinstance(providers, dict):
        raise SettingsError("--resume: config.json has no providers table; start a new run")
    # A config.json from before settings were role-specific lists every field for every role: keep the ones
    # that apply (agent.providers.config.role_fields), so an older run folder still resumes.
    return {role: ({k: v for k, v in table.items() if k in role_fields(role)} if role in ROLES else table)
            for role, table in providers.items() if isinstance(table, dict) or role not in ROLES}


def _merge_roles(saved: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The TOML document with the saved provider settings underneath it, role table by role table."""
    merged = dict(doc)
    for key, value in saved.items():
        if isinstance(value, dict):
            merged[key] = {**value, **(doc.get(key) or {})}
        elif key not in doc:
            merged[key] = value
    return merged
