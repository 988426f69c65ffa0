"""The dataset card (``README.md``): the YAML header the Hugging Face Hub reads, then how the data was made.

Header: ``tags: [synthetic]``, ``task_categories: [image-classification]``, ``size_categories`` from the row
count, and ``configs`` (the format's data files and, for ``imagefolder`` and ``parquet``, the features with
``label`` a ``ClassLabel`` of the run's names, so ``load_dataset(DIR)`` and the Hub number classes as the run
did). ``license`` is left out on purpose: the generating models' terms decide it, so the user sets it (the
card says so). Values are written as JSON scalars, which YAML reads as they are.

Body: the paper and method; the model of each role and its endpoint's *host* (never a key, never a path);
the prompt files with their sha256; K, mu, the score kind and R; per-class counts (original, generated,
rejected); cost; dates; this project's version and commit; whether the run had finished; limitations.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.export.source import ExportRow, RunData
from agent.export.writers import features_dict

__all__ = ["host_of", "project_version", "render_card", "size_category"]

PAPER = ("LTGC: Long-tail Recognition via Leveraging LLMs-driven Generated Content (Zhao et al., CVPR 2024, "
         "arXiv:2403.05854)")
DATA_FILES = {"imagefolder": "train/**", "parquet": "data/train-*.parquet", "webdataset": "*.tar"}


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket. ``size_category(999)`` -> ``'n<1K'``; 10,000 -> ``'10K<n<100K'``."""
    for limit, name in ((10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
                        (10**7, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def host_of(url: object) -> str:
    """An endpoint's host only: no scheme path, query or credentials.

    >>> host_of("https://user:sk-x@api.example.com:8443/v1?key=1")
    'api.example.com:8443'
    >>> host_of(None)
    'the provider default'
    """
    if not isinstance(url, str) or not url:
        return "the provider default"
    parts = urlsplit(url if "//" in url else f"//{url}")
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def render_card(fmt: str, run: RunData, rows: Sequence[ExportRow], options: dict[str, Any],
                files: Sequence[str]) -> str:
    """The whole ``README.md`` of an export."""
    return _header(fmt, run, len(rows)) + "\n" + _body(fmt, run, rows, options, files)


def _header(fmt: str, run: RunData, n: int) -> str:
    config: dict[str, Any] = {"config_name": "default",
                              "data_files": [{"split": "train", "path": DATA_FILES[fmt]}]}
    if fmt in ("imagefolder", "parquet"):
        config["features"] = [{"name": k, **v} for k, v in features_dict(run.names).items()]
    lines = ["---", "# license: not set. The generating models' terms decide it: set it before sharing.",
             "tags:", "- synthetic", "task_categories:", "- image-classification",
             "size_categories:", f"- {json.dumps(size_category(n))}", "configs:"]
    lines += _yaml([config], 0)
    return "\n".join(lines) + "\n---\n"


def _yaml(value: Any, indent: int) -> list[str]:
    """Block YAML for lists of dicts / dicts / scalars (scalars as JSON, which YAML reads unchanged)."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, list):
        for item in value:
            sub = _yaml(item, indent + 2)
            out.append(f"{pad}- {sub[0].lstrip()}")
            out += sub[1:]
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                out.append(f"{pad}{_key(key)}:")
                out += _yaml(item, indent + 2)
            else:
                out.append(f"{pad}{_key(key)}: {json.dumps(item, ensure_ascii=False)}")
    else:
        out.append(f"{pad}{json.dumps(value, ensure_ascii=False)}")
    return out


def _key(key: object) -> str:
    """A YAML mapping key: bare when it is a plain identifier, else quoted (``'0'`` must stay a string)."""
    text = str(key)
    return text if text.isidentifier() else json.dumps(text, ensure_ascii=False)


def _body(fmt: str, run: RunData, rows: Sequence[ExportRow], options: dict[str, Any], files: Sequence[str]) -> str:
    cfg_run = run.config.get("run") or {}
    providers = run.config.get("providers") or {}
    generated = sum(1 for r in rows if r.source == "generated")
    status = ("finished" if run.finished else
              f"**not finished** ({run.state} when exported): this export holds the images accepted so far")
    lines = [
        f"# Synthetic long-tail images: run `{run.run_id}`", "",
        f"{len(rows)} images ({generated} generated, {len(rows) - generated} original) in "
        f"{sum(1 for c in run.counts)} classes, exported as **{fmt}** by `python -m agent.export` of ltgc "
        f"{project_version()}. The run was {status}.", "",
        "**License:** not set. The generated images fall under the terms of the models that made them (below); "
        "set `license:` in the header above before you share this folder.", "",
        "## How it was made", "",
        f"Method: {PAPER}. A vision-language model (lmm) describes the tail classes' real images; a language "
        "model (llm) extends the descriptions and summarizes each class's feature template C_y; an image "
        "model (t2i) renders the descriptions; CLIP scores every image against C_y and keeps those scoring "
        "at least mu; a rejected one is refined and re-rendered, up to R rounds.", "",
        "| role | model | endpoint host |", "|---|---|---|",
    ]
    for role in ("lmm", "llm", "t2i"):
        p = providers.get(role) or {}
        lines.append(f"| {role} | `{p.get('model', '?')}` | {host_of(p.get('base_url'))} |")
    lines += ["", f"- K (images per class): {cfg_run.get('target_per_class')}; mu (CLIP threshold): "
              f"{cfg_run.get('threshold')}; score: {cfg_run.get('score')}; R (refine rounds): "
              f"{cfg_run.get('max_rounds')}; CLIP: `{Path(str(cfg_run.get('clip_model'))).name}` "
              f"({cfg_run.get('clip_pretrained')}); image seed: {run.seed if run.seed is not None else 'not set'}",
              "- Prompts (sha256): " + ", ".join(f"`{name}` {sha[:16]}" for name, sha in _prompt_files())
              + f"; {_prompts_note(run)}", ""]
    lines += _counts_table(run, rows)
    lines += ["", "## Run", "",
              f"- Cost: {_cost(run)}", f"- Dates: {_dates(run)}",
              f"- Made by ltgc {project_version()} (commit {_commit()}); export options: "
              f"{json.dumps(options, sort_keys=True)}",
              f"- Files: {', '.join(f'`{f}`' for f in files[:5])}{' …' if len(files) > 5 else ''} "
              f"({len(files)} data file(s)); per-image fields: file_name/image, label, class_name, source, "
              "sha256, description, c_y, clip_score, round, model_lmm, model_llm, model_t2i, seed, run_id", "",
              "## Limitations", "",
              "- **Synthetic**: generated images show what the image model makes of a text, not the world; "
              "train and test on real data too, and never report results on generated test data.",
              "- **CLIP-filtered**: kept images are those a CLIP model scored close to the class template; "
              "CLIP's own biases and blind spots pass into the selection.",
              "- **Model licences**: each model's terms of use apply to its outputs; check them before sharing.",
              "- Descriptions come from a language model and can be wrong about the class.", "",
              "## Use", "", "```python", "from datasets import load_dataset",
              f"ds = load_dataset({_load_args(fmt)})", "```", "",
              "Upload this folder as it is: `hf upload --repo-type dataset USER/NAME . .` from inside it "
              "(`huggingface-cli upload` with the same arguments on older huggingface_hub releases).", ""]
    return "\n".join(lines)


def _counts_table(run: RunData, rows: Sequence[ExportRow]) -> list[str]:
    in_export: dict[str, int] = {}
    for r in rows:
        in_export[r.class_name] = in_export.get(r.class_name, 0) + 1
    lines = ["| label | class | original | generated | rejected | in this export |", "|---|---|---|---|---|---|"]
    labels = {name: i for i, name in enumerate(run.names)}
    for name, c in sorted(run.counts.items(), key=lambda kv: labels.get(kv[0], -1)):
        lines.append(f"| {labels.get(name, '?')} | {name} | {c['original']} | {c['generated']} | {c['rejected']} "
                     f"| {in_export.get(name, 0)} |")
    return lines


def _load_args(fmt: str) -> str:
    return {"imagefolder": '"imagefolder", data_dir="."  # or load_dataset(".") for the ClassLabel names',
            "parquet": '"parquet", data_dir="data"', "webdataset": '"webdataset", data_dir="."'}[fmt]


def _cost(run: RunData) -> str:
    cost = run.summary.get("cost") or {}
    total = cost.get("total_usd")
    if total is None:
        total = (run.summary.get("totals") or {}).get("cost_usd")
    if total is None:
        return "not known (the run wrote no cost)"
    unbilled = cost.get("not_billed") or {}
    note = f" (not billed: {', '.join(f'{k}: {v}' for k, v in sorted(unbilled.items()))})" if unbilled else ""
    return f"${float(total):.4f}{note}, prices as of {cost.get('prices_as_of', '?')}"


def _dates(run: RunData) -> str:
    if run.dates is None:
        return "not known (no traces)"
    first, last = (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t)) for t in run.dates)
    return f"first request {first}, last request {last}"


def _prompt_files() -> list[tuple[str, str]]:
    import prompts

    folder = Path(prompts.__file__).parent
    return [(p.name, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir()) if p.suffix in (".txt", ".toml")]


def _prompts_note(run: RunData) -> str:
    """Whether these prompt files are the run's: the run recorded their combined hash (config.json)."""
    from agent.lifecycle.resume import prompts_digest

    recorded = run.config.get("prompts_sha256")
    if not recorded:
        return "the run recorded no prompt hash"
    if recorded == prompts_digest():
        return f"the run used these files (combined hash {recorded[:16]})"
    return f"**the run used other prompt files** (combined hash {recorded[:16]}; these files give {prompts_digest()[:16]})"


def project_version() -> str:
    try:
        return importlib_metadata.version("ltgc")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _commit() -> str:
    """The checkout's commit (``+dirty`` when it has changes), or ``unknown`` outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha or "unknown"
