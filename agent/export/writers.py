"""The three export layouts, each written into an empty staging folder (the caller makes it appear atomically).

- ``imagefolder``: ``train/<class-slug>/<sha256>.<ext>`` and ``train/metadata.jsonl`` (``file_name`` relative
  to it, then the row's metadata): the layout of ``datasets.load_dataset("imagefolder", data_dir=DIR)``.
- ``parquet``: ``data/train-NNNNN-of-MMMMM.parquet``, images embedded (the ``datasets`` ``Image`` struct
  ``{bytes, path}``), ``label`` a ``ClassLabel`` of the run's names (the schema carries the ``datasets``
  features, so ``load_dataset("parquet", ...)`` sees them), row groups of :data:`ROW_GROUP` rows, a new file
  once a shard holds ``shard_bytes`` of images.
- ``webdataset``: ``%06d.tar`` shards (``webdataset.ShardWriter``, at most ``shard_bytes`` each plus one
  sample), one sample = ``<key>.<ext>`` image + ``<key>.json`` metadata + ``<key>.cls`` label; keys are the
  row's index (``%09d``), so the shards keep the manifest's order.
Every writer returns the relative paths of the data files it wrote, in order. Rows keep their order (the
manifest's: label, source, path) in every format: a trainer reading any of them sees the same sequence.
The heavy libraries (pyarrow, datasets, webdataset) are imported only by the writer that needs them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.export.source import ExportRow, RunData
from store.slug import slugify

__all__ = ["FORMATS", "ROW_GROUP", "features_dict", "file_name", "hf_features", "write"]

ROW_GROUP = 100  # rows per parquet row group: datasets' own default for image data (random reads stay small)
# Tar member times: a fixed value keeps the shards byte-identical across exports; an int, as a float mtime
# makes tarfile add a PAX header to every member (twice the headers for every reader to parse).
FIXED_MTIME = 0


def file_name(row: ExportRow) -> str:
    """The image's path inside a split: ``<class-slug>/<sha256>.<ext>`` (``orig-<sha256>`` for an original).

    >>> file_name(ExportRow(Path("x.png"), "png", 0, "red fox", "generated", "ab" * 32))[:18]
    'red-fox-e4b9541d/a'
    """
    stem = row.sha256 if row.source == "generated" else f"orig-{row.sha256}"
    return f"{slugify(row.class_name)}/{stem}.{row.ext}"


def features_dict(names: Sequence[str]) -> dict[str, Any]:
    """Column -> ``datasets`` feature, as the ``{"dtype": ...}`` dicts the card's YAML and the parquet
    schema both carry (image first, then label, then the metadata of :meth:`ExportRow.metadata`)."""
    string, num = {"dtype": "string"}, {"dtype": "float64"}
    return {
        "image": {"dtype": "image"},
        "label": {"dtype": {"class_label": {"names": {str(i): n for i, n in enumerate(names)}}}},
        "class_name": string, "source": string, "sha256": string, "description": string, "c_y": string,
        "clip_score": num, "round": {"dtype": "int64"}, "model_lmm": string, "model_llm": string,
        "model_t2i": string, "seed": {"dtype": "int64"}, "run_id": string,
    }


def hf_features(names: Sequence[str]) -> Any:
    """:func:`features_dict` as ``datasets.Features`` (``Image``, ``ClassLabel`` of ``names``, ``Value``)."""
    from datasets import ClassLabel, Features, Image, Value

    kinds = {"string": Value("string"), "float64": Value("float64"), "int64": Value("int64")}
    out = {}
    for key, spec in features_dict(names).items():
        dtype = spec["dtype"]
        out[key] = Image() if dtype == "image" else ClassLabel(names=list(names)) if isinstance(dtype, dict) \
            else kinds[dtype]
    return Features(out)


def write(fmt: str, run: RunData, rows: Sequence[ExportRow], stage: Path, *, shard_bytes: int) -> list[str]:
    """Write ``rows`` of ``run`` in format ``fmt`` under ``stage``; the data files written, relative."""
    return FORMATS[fmt](run, rows, stage, shard_bytes)


def _imagefolder(run: RunData, rows: Sequence[ExportRow], stage: Path, shard_bytes: int) -> list[str]:
    split = stage / "train"
    lines = []
    made: set[Path] = set()
    for row in rows:
        name = file_name(row)
        target = split / name
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        _link_or_copy(row.file, target)
        lines.append(json.dumps({"file_name": name, **row.metadata(run)}, ensure_ascii=False))
    split.mkdir(parents=True, exist_ok=True)
    (split / "metadata.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return ["train/metadata.jsonl"]


def _parquet(run: RunData, rows: Sequence[ExportRow], stage: Path, shard_bytes: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    features = hf_features(run.names)
    schema = features.arrow_schema  # carries the features (Image, ClassLabel names) for `datasets`
    folder = stage / "data"
    folder.mkdir(parents=True)
    shards: list[Path] = []
    writer: Any = None
    in_shard = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema), row_group_size=ROW_GROUP)
            batch.clear()

    for row in rows:
        if writer is None or in_shard >= shard_bytes:
            flush()
            if writer is not None:
                writer.close()
            shards.append(folder / f".shard-{len(shards):05d}.parquet")
            writer, in_shard = pq.ParquetWriter(shards[-1], schema), 0
        data = row.file.read_bytes()
        batch.append({"image": {"bytes": data, "path": file_name(row)}, **row.metadata(run)})
        in_shard += len(data)
        if len(batch) >= ROW_GROUP:
            flush()
    if writer is None:  # no rows: still one (empty) shard, so the layout loads
        shards.append(folder / ".shard-00000.parquet")
        writer = pq.ParquetWriter(shards[-1], schema)
    flush()
    writer.close()
    names = []
    for i, shard in enumerate(shards):
        final = f"train-{i:05d}-of-{len(shards):05d}.parquet"
        shard.rename(folder / final)
        names.append(f"data/{final}")
    return names


def _webdataset(run: RunData, rows: Sequence[ExportRow], stage: Path, shard_bytes: int) -> list[str]:
    import webdataset as wds

    with wds.ShardWriter(str(stage / "%06d.tar"), maxcount=10**9, maxsize=shard_bytes, verbose=0,
                         mtime=FIXED_MTIME) as sink:
        for i, row in enumerate(rows):
            meta = {"file_name": file_name(row), **row.metadata(run)}
            sink.write({"__key__": f"{i:09d}", row.ext: row.file.read_bytes(),
                        "json": json.dumps(meta, ensure_ascii=False).encode("utf-8"), "cls": row.label})
    return sorted(p.name for p in stage.glob("*.tar"))


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no copy of the bytes: run images are content-addressed, never rewritten), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


FORMATS: dict[str, Callable[[RunData, Sequence[ExportRow], Path, int], list[str]]] = {
    "imagefolder": _imagefolder, "parquet": _parquet, "webdataset": _webdataset,
}
