"""List files, class names, manifests and image checks: good input parses, bad input names file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.trainer.trainer_helpers import NAMES
from trainer.data import ImageLoader
from trainer.samples import (
    DataError,
    Sample,
    check_images,
    class_counts,
    read_class_names,
    read_samples,
    subset_round_robin,
)


def test_list_file_parses_paths_with_spaces_comments_and_root(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    f.write_text("# header\nn01/a b.jpg 3\n\nn02/c.jpg 0\n")
    samples = read_samples(f, classes=list("abcd"), data_root=tmp_path / "root")
    assert [(s.path, s.label) for s in samples] == [(tmp_path / "root/n01/a b.jpg", 3),
                                                    (tmp_path / "root/n02/c.jpg", 0)]
    assert samples[1].where == f"{f}:4"
    assert class_counts(samples, 4) == [1, 0, 0, 1]


@pytest.mark.parametrize("line, reason", [
    ("just_a_path.jpg", "expected 'relative/path.jpg <label>'"),
    ("a.jpg cat", "label must be a non-negative integer, got 'cat'"),
    ("a.jpg -1", "label must be a non-negative integer"),
    ("a.jpg 7", "label 7 is out of range"),
])
def test_malformed_list_lines_name_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    f = tmp_path / "bad.txt"
    f.write_text(f"ok.jpg 0\n{line}\n")
    with pytest.raises(DataError) as info:
        read_samples(f, classes=list("abc"))
    assert str(info.value).startswith(f"{f}:2: ")
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_class_names_in_both_formats(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("1\tdog\n0\tcat\n")
    b.write_text("cat\ndog\n")
    assert read_class_names(a) == read_class_names(b) == ["cat", "dog"]
    a.write_text("0\tcat\n2\tdog\n")
    with pytest.raises(DataError, match="missing"):
        read_class_names(a)


def test_manifest_rows_resolve_relative_to_the_manifest(tiny_data) -> None:
    samples = read_samples(tiny_data.generated, classes=NAMES)
    assert len(samples) == 12
    assert all(s.path.is_file() for s in samples)
    bad = tiny_data.root / "bad.jsonl"
    bad.write_text('{"path": "x.png"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing field"):
        read_samples(bad, classes=NAMES)


def test_missing_image_is_an_error_or_a_counted_skip(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4)).save(good)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    samples = [Sample(good, 0, "l:1"), Sample(tmp_path / "gone.png", 0, "l:2"), Sample(corrupt, 1, "l:3")]
    with pytest.raises(DataError, match=r"^l:2: image not found: .*gone.png .*--skip-bad-images"):
        check_images(samples, skip_bad=False)
    kept, problems = check_images(samples, skip_bad=True)
    assert kept == samples[:1]
    assert [p.split(":")[1] for p in problems] == ["2", "3"]
    with pytest.raises(DataError, match=r"^l:3: cannot read image"):
        ImageLoader().load(samples[2])


def test_image_cache_respects_its_budget(tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"{k}.png")
        Image.new("RGB", (100, 100)).save(paths[-1])
    loader = ImageLoader(cache_mb=0.07)  # room for two 100x100 RGB images (30 KB each)
    assert loader.preload([Sample(p, 0, "x") for p in paths]) == 2
    assert ImageLoader(cache_mb=0).preload([Sample(paths[0], 0, "x")]) == 0


def test_round_robin_subset_keeps_every_class() -> None:
    samples = [Sample(Path(str(k)), label, "x") for k, label in enumerate([0, 0, 0, 1, 1, 2])]
    assert [s.label for s in subset_round_robin(samples, 4)] == [0, 1, 2, 0]
    assert subset_round_robin(samples, 0) == samples
