"""The shared list-file and class-names reader: good files parse, every bad one is one ``file:line: reason``."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import store.manifest
from store.errors import UsageError
from store.lists import (
    ClassIndex,
    ListEntry,
    ListFileError,
    parse_list_line,
    read_class_map,
    read_class_names,
    read_image_folder,
    read_list_file,
)
from store.slug import slugify


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_list_file_keeps_paths_with_spaces_and_physical_line_numbers(tmp_path: Path) -> None:
    f = write(tmp_path / "train.txt", "# header\nn01/a b.JPEG 2\n\n  n02/c.JPEG\t0  \n/abs/d.png 1\n")
    entries = read_list_file(f)
    assert entries == [ListEntry("n01/a b.JPEG", 2), ListEntry("n02/c.JPEG", 0), ListEntry("/abs/d.png", 1)]
    assert [e.where for e in entries] == [f"{f}:2", f"{f}:4", f"{f}:5"]
    assert read_list_file(write(tmp_path / "empty.txt", "# nothing\n\n")) == []


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path: Path) -> None:
    assert read_list_file(write(tmp_path / "l.txt", "a.png 0\n", "utf-8-sig")) == [ListEntry("a.png", 0)]
    assert read_class_names(write(tmp_path / "n.txt", "0\tcat\n1\tdog\n", "utf-8-sig")) == ["cat", "dog"]


@pytest.mark.parametrize(("line", "reason", "label"), [
    ("images/a.jpg", "expected 'relative/path.jpg <label>', got 'images/a.jpg' (no label)", None),
    ("images/a.jpg x1", "expected 'relative/path.jpg <label>', got 'images/a.jpg x1' "
                        "(label 'x1' is not an integer)", "x1"),
    ("a.jpg +3", "(label '+3' is not an integer)", "+3"),
    ("a.jpg 1_0", "(label '1_0' is not an integer)", "1_0"),
    ("images/a.jpg -3", "label -3 is negative; labels start at 0", "-3"),
    ("images/a.jpg 7", "label 7 is out of range: the class-names file has 3 classes (labels 0..2)", None),
])
def test_list_file_errors_name_file_and_line(tmp_path: Path, line: str, reason: str, label: str | None) -> None:
    f = write(tmp_path / "train.txt", f"# header\nok.jpg 1\n\n{line}\n")
    with pytest.raises(ListFileError) as info:
        read_list_file(f, num_classes=3)
    assert str(info.value).startswith(f"{f}:4: ") and reason in str(info.value)
    assert (info.value.where, info.value.label) == (f"{f}:4", label)
    assert "\n" not in str(info.value)


def test_parse_list_line() -> None:
    assert parse_list_line("  # comment", "x:1") is None and parse_list_line("   ", "x:2") is None
    assert parse_list_line("a b.jpg 3", "x:3") == ListEntry("a b.jpg", 3)


def test_class_names_both_layouts(tmp_path: Path) -> None:
    labelled = write(tmp_path / "a.txt", "# labels\n1\tred fox\n\n0\tcat \n")
    plain = write(tmp_path / "b.txt", "cat\n# comment\n\n  red fox\n")
    assert read_class_names(labelled) == read_class_names(plain) == ["cat", "red fox"]
    assert read_class_map(labelled) == {1: "red fox", 0: "cat"}


def test_class_map_allows_gaps_class_names_does_not(tmp_path: Path) -> None:
    f = write(tmp_path / "n.txt", "3\tcat\n9\tdog\n")
    assert read_class_map(f) == {3: "cat", 9: "dog"}
    with pytest.raises(ListFileError, match=r"n\.txt: labels must be 0\.\.1 without gaps; missing \[0, 1\]"):
        read_class_names(f)


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("0\tcat\nred fox\n", ":2", "mixes 'label<TAB>name' lines with plain-name lines; use one layout"),
    ("cat\n0\tdog\n", ":2", "mixes"),
    ("0\tcat\n\n0\tdog\n", ":3", "label 0 is used twice (it appears twice, on lines 1 and 3)"),
    ("zero\tcat\n", ":1", "label 'zero' is not an integer"),
    ("-1\tcat\n", ":1", "label -1 is negative"),
    ("0\tcat\n1\t \n", ":2", "mixes"),  # a label without a name is a plain line
    ("# only a comment\n\n", "", "no class names found"),
    ("cat\ndog\n\ncat\n", ":4", "duplicate class name 'cat' (first at line 1)"),
    ("0\tcat\n# c\n1\tdog\n2\t cat \n", ":4", "duplicate class name 'cat' (first at line 1)"),
])
def test_class_name_errors_name_file_and_line(tmp_path: Path, text: str, where: str, reason: str) -> None:
    f = write(tmp_path / "names.txt", text)
    with pytest.raises(ListFileError) as info:
        read_class_map(f)
    assert str(info.value).startswith(f"{f}{where}: ") and reason in str(info.value)


def test_unreadable_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"cat\n\xff\xfe\n")
    for path, reason in ((tmp_path / "nope.txt", "no such file"), (tmp_path, "is a folder, expected a text file"),
                         (tmp_path / "bad.txt", "not UTF-8 text (byte 4)")):
        for read in (read_list_file, read_class_names, read_class_map):
            with pytest.raises(ListFileError) as info:
                read(path)
            assert str(info.value) == f"{path}: {reason}"


def test_the_error_pickles_with_its_fields() -> None:
    err = pickle.loads(pickle.dumps(ListFileError("t.txt:3", "label 'x' is not an integer", label="x")))
    assert (str(err), err.where, err.reason, err.label) == ("t.txt:3: label 'x' is not an integer", "t.txt:3",
                                                            "label 'x' is not an integer", "x")


def test_store_manifest_re_exports_the_readers_for_the_trainer() -> None:
    assert store.manifest.read_class_names is read_class_names
    assert store.manifest.read_list_file is read_list_file
    assert store.manifest.ListFileError is ListFileError


def test_a_duplicate_name_is_a_usage_error_for_both_readers(tmp_path: Path) -> None:
    f = write(tmp_path / "names.txt", "crane\nmaillot\ncrane\n")
    for read in (read_class_names, read_class_map):
        with pytest.raises(UsageError) as info:
            read(f)
        assert str(info.value).startswith(f"{f}:3: duplicate class name 'crane' (first at line 1)")
        assert isinstance(info.value, ListFileError) and "\n" not in str(info.value)


def test_class_index_follows_the_agents_folder_rule() -> None:
    index = ClassIndex(["red fox", "red-fox", "Snow Owl", "café crème", "A.B", "a b"])
    assert index.find("red fox") == 0 and index.find("red-fox") == 1  # exact names first
    assert index.find(slugify("red fox")) == 0 and index.find(slugify("café crème")) == 3  # agent folder slugs
    assert index.find("snow_owl") == 2 and index.find("SNOW OWL") == 2  # loose: case, "_" and punctuation
    assert index.find("a_b") is None  # "A.B" and "a b" share a loose key: only exact names reach them
    assert index.find("A.B") == 4 and index.find("dog") is None


def test_image_folder_lists_sorted_non_hidden_class_folders(tmp_path: Path) -> None:
    for rel in ("b/2.png", "b/1.JPG", "b/notes.txt", "a/x.png", ".cache/y.png", "c/sub/deep.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "stray.png").write_bytes(b"x")
    classes = read_image_folder(tmp_path)
    assert [c.name for c in classes] == ["a", "b", "c"]  # sorted; hidden folders and stray files are no class
    assert [p.name for p in classes[1].images] == ["1.JPG", "2.png"] and classes[2].images == ()
    for root, reason in ((tmp_path / "a" / "x.png", "not a folder"), (tmp_path / "c" / "sub", "no class folders")):
        with pytest.raises(ListFileError, match=reason):
            read_image_folder(root)
