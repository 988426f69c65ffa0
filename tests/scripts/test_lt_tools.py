"""Tests for the long-tail data tools: profile counts, make-lt, list files, inspect, select-tail."""

from __future__ import annotations

import gzip
import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import lt_tools
from scripts.lt import inspect_split, make_lt, select_tail
from scripts.lt.listfile import ListFileError, read_class_names, read_list_file
from scripts.lt.profile import ProfileError, class_order, lt_counts
from scripts.lt.sources import SourceError, read_idx


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    """An IDX file (magic 0x0803 images / 0x0801 labels) holding ``array`` (uint8)."""
    magic = 0x0800 | array.ndim
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def fake_fashion_mnist(folder: Path, train_per_class: int, test_per_class: int) -> Path:
    """A Fashion-MNIST-shaped folder: 10 classes, 28x28 images whose pixel value encodes the class."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.repeat(np.arange(10), per_class)
        np.random.default_rng(1).shuffle(labels)
        images = np.repeat((labels * 20 + 10)[:, None, None], 28, axis=1).repeat(28, axis=2)
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels, compress=(part == "train"))
    return folder


# --- the profile -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("n_max", "imbalance", "classes", "expected"),
    [
        (32, 16, 5, [32, 16, 8, 4, 2]),       # exact powers: float noise must not floor 2.0 to 1
        (100, 10, 4, [100, 46, 21, 10]),      # 100*10^(-1/3) = 46.4, 100*10^(-2/3) = 21.5
        (1000, 100, 10, [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]),
        (50, 3, 3, [50, 28, 16]),             # 50/sqrt(3) = 28.87, 50/3 = 16.67: floor, not round
        (7, 1, 3, [7, 7, 7]),
        (9, 5, 1, [9]),
    ],
)
def test_lt_counts_match_the_formula_exactly(n_max: int, imbalance: float, classes: int, expected: list[int]) -> None:
    assert lt_counts(n_max, imbalance, classes) == expected


def test_lt_counts_rejects_settings_that_empty_a_class() -> None:
    with pytest.raises(ProfileError, match="0 images"):
        lt_counts(5, 10, 3)
    with pytest.raises(ProfileError, match="imbalance"):
        lt_counts(5, 0.5, 3)


def test_class_order_variants() -> None:
    names = ["a", "b", "c", "d"]
    assert class_order("natural", names, 0) == [0, 1, 2, 3]
    assert class_order("d, 2,a,b", names, 0) == [3, 2, 0, 1]
    shuffled = class_order("random", names, 3)
    assert sorted(shuffled) == [0, 1, 2, 3] and shuffled == class_order("random", names, 3)
    assert len({tuple(class_order("random", names, s)) for s in range(10)}) > 1
    with pytest.raises(ProfileError, match="listed twice"):
        class_order("a,a,b,c", names, 0)
    with pytest.raises(ProfileError, match="missing"):
        class_order("a,b", names, 0)


# --- make-lt ---------------------------------------------------------------------------------------------

def test_make_lt_fashion_mnist_counts_order_and_images(tmp_path: Path) -> None:
    src = fake_fashion_mnist(tmp_path / "fm", train_per_class=40, test_per_class=6)
    out = tmp_path / "lt"
    rc = lt_tools.main(["make-lt", "--fashion-mnist", str(src), "--out", str(out), "--n-max", "32",
                        "--imbalance", "16", "--class-order", "9,8,7,6,5,4,3,2,1,0", "--seed", "4"])
    assert rc == 0
    names = read_class_names(out / "classnames.txt")
    assert names[0] == "T-shirt/top" and len(names) == 10
    train = read_list_file(out / "train.txt", num_classes=10)
    counts = Counter(e.label for e in train)
    expected = lt_counts(32, 16, 10)
    assert [counts[label] for label in range(9, -1, -1)] == expected
    test = read_list_file(out / "test.txt", num_classes=10)
    assert Counter(e.label for e in test) == {label: 6 for label in range(10)}
    for entry in train[:3] + test[-3:]:  # images are the source's, decoded from PNG
        img = Image.open(out / entry.path)
        assert img.format == "PNG" and img.size == (28, 28)
        assert int(np.asarray(img)[0, 0]) == entry.label * 20 + 10
    split = json.loads((out / "split.json").read_text())
    assert split["train_counts"]["Ankle boot"] == 32


def test_make_lt_is_seeded(tmp_path: Path) -> None:
    src = fake_fashion_mnist(tmp_path / "fm", train_per_class=30, test_per_class=2)
    lists = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert make_lt.main(["--fashion-mnist", str(src), "--out", str(tmp_path / name),
                             "--n-max", "10", "--imbalance", "5", "--seed", seed]) == 0
        lists.append((tmp_path / name / "train.txt").read_text())
    assert lists[0] == lists[1]
    assert lists[0] != lists[2]


def test_make_lt_image_folder_holds_out_a_disjoint_balanced_test_split(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for c, name in enumerate(["cat", "dog", "red fox"]):
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (8, 8), (c * 80, i * 20, 0)).save(root / name / f"img{i:02d}.jpg")
    out = tmp_path / "lt"
    assert make_lt.main(["--image-folder", str(root), "--out", str(out), "--n-max", "8", "--imbalance", "4",
                         "--test-per-class", "3"]) == 0
    train = read_list_file(out / "train.txt")
    test = read_list_file(out / "test.txt")
    assert [sum(e.label == c for e in train) for c in range(3)] == [8, 4, 2]
    assert [sum(e.label == c for e in test) for c in range(3)] == [3, 3, 3]
    assert not {e.path for e in train} & {e.path for e in test}
    assert all(".." not in e.path and e.path.endswith(".png") for e in train + test)
    assert read_class_names(out / "classnames.txt") == ["cat", "dog", "red fox"]


def test_make_lt_too_few_images_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = fake_fashion_mnist(tmp_path / "fm", train_per_class=5, test_per_class=2)
    rc = make_lt.main(["--fashion-mnist", str(src), "--out", str(tmp_path / "lt"), "--n-max", "6",
                       "--imbalance", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "has 5 images available" in err and "needs 6" in err and "--n-max" in err


def test_make_lt_missing_dataset_names_the_install_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = make_lt.main(["--fashion-mnist", str(tmp_path / "nothing"), "--out", str(tmp_path / "lt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "apt-get install -y dataset-fashion-mnist" in err


def test_read_idx_rejects_wrong_magic_and_truncation(tmp_path: Path) -> None:
    labels = np.arange(5, dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", labels)
    assert read_idx(tmp_path / "labels.gz", 0x0801).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(SourceError, match="expected kind"):
        read_idx(tmp_path / "labels.gz", 0x0803)
    raw = gzip.decompress((tmp_path / "labels.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(SourceError, match="truncated"):
        read_idx(tmp_path / "short", 0x0801)


# --- list files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("images/a.jpg", "no label"),
        ("images/a.jpg x1", "not an integer"),
        ("images/a.jpg -3", "negative"),
        ("images/a.jpg 7", "out of range"),
    ],
)
def test_list_file_malformed_lines_name_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "train.txt"
    path.write_text(f"# header\nimages/ok one.jpg 1\n\n{line}\n")
    with pytest.raises(ListFileError) as info:
        read_list_file(path, num_classes=3)
    assert str(info.value).startswith(f"{path}:4: ") and reason in str(info.value)


def test_list_file_reads_paths_with_spaces_and_skips_comments(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("# c\nn01/a b.JPEG 2\n\nn02/c.JPEG 0\n")
    assert [(e.path, e.label) for e in read_list_file(path)] == [("n01/a b.JPEG", 2), ("n02/c.JPEG", 0)]


def test_class_names_both_layouts_and_their_errors(tmp_path: Path) -> None:
    f = tmp_path / "names.txt"
    f.write_text("1\tdog\n0\tcat\n")
    assert read_class_names(f) == ["cat", "dog"]
    f.write_text("cat\nred fox\n")
    assert read_class_names(f) == ["cat", "red fox"]
    for text, where, reason in (
        ("0\tcat\nred fox\n", ":2:", "mixes"),
        ("0\tcat\n0\tdog\n", ":2:", "appears twice"),
        ("0\tcat\n2\tdog\n", ":", "missing [1]"),
        ("zero\tcat\n", ":1:", "not an integer"),
    ):
        f.write_text(text)
        with pytest.raises(ListFileError) as info:
            read_class_names(f)
        assert str(info.value).startswith(f"{f}{where}") and reason in str(info.value)


# --- select-tail and inspect -----------------------------------------------------------------------------

def _split(tmp_path: Path, counts: list[int]) -> tuple[Path, Path]:
    names = tmp_path / "classnames.txt"
    names.write_text("".join(f"{i}\tclass {i}\n" for i in range(len(counts))))
    lst = tmp_path / "train.txt"
    lst.write_text("".join(f"c{label}/{k}.png {label}\n" for label, n in enumerate(counts) for k in range(n)))
    return lst, names


def test_select_tail_threshold_is_strict_and_output_reads_back(tmp_path: Path) -> None:
    lst, names = _split(tmp_path, [25, 20, 19, 0, 3])
    out = tmp_path / "tail.txt"
    assert select_tail.main(["--list", str(lst), "--class-names", str(names), "--out", str(out)]) == 0
    rows = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert rows == ["2\tclass 2", "3\tclass 3", "4\tclass 4"]
    assert select_tail.main(["--list", str(lst), "--class-names", str(names), "--out", str(out),
                             "--threshold", "21"]) == 0
    assert [ln.split("\t")[0] for ln in out.read_text().splitlines()[1:]] == ["1", "2", "3", "4"]
    from agent.lifecycle.inputs import read_tail  # the consumer of tail.txt must read what we write

    entries, _ = read_tail(out)
    assert [(e.label, e.name) for e in entries] == [(1, "class 1"), (2, "class 2"), (3, "class 3"), (4, "class 4")]


def test_select_tail_rarest_and_empty_selection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lst, names = _split(tmp_path, [5, 1, 5, 1, 9])
    out = tmp_path / "tail.txt"
    assert select_tail.main(["--list", str(lst), "--class-names", str(names), "--out", str(out),
                             "--rarest", "3"]) == 0
    assert [ln.split("\t")[0] for ln in out.read_text().splitlines()[1:]] == ["0", "1", "3"]
    capsys.readouterr()
    assert select_tail.main(["--list", str(lst), "--class-names", str(names), "--out", str(out),
                             "--threshold", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "rarest has 1" in err


def test_inspect_groups_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lst, names = _split(tmp_path, [150, 101, 100, 20, 19])
    assert inspect_split.main(["--list", str(lst), "--class-names", str(names), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [c["group"] for c in summary["per_class"]] == ["many", "many", "medium", "medium", "few"]
    assert summary["groups"]["medium"] == {"classes": 2, "images": 120}
    assert inspect_split.main(["--list", str(lst), "--class-names", str(names), "--many", "120", "--few", "50"]) == 0
    text = capsys.readouterr().out
    assert "many   (   > 120): 1 classes, 150 images" in text and "few    (    < 50): 2 classes" in text


def test_inspect_bad_input_and_missing_images_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lst, names = _split(tmp_path, [2, 1])
    assert inspect_split.main(["--list", str(lst), "--class-names", str(names), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "3 listed image(s) not found" in err
    lst.write_text("a.png 0\nb.png 5\n")
    assert inspect_split.main(["--list", str(lst), "--class-names", str(names)]) == 2
    assert f"{lst}:2: label 5 is out of range" in capsys.readouterr().err


def test_dispatcher_help_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert lt_tools.main(["--help"]) == 0
    assert "make-lt" in capsys.readouterr().out
    assert lt_tools.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        lt_tools.main(["select-tail", "--help"])
    assert info.value.code == 0 and "--rarest" in capsys.readouterr().out


def test_unwritable_output_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lst, names = _split(tmp_path, [3, 1])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert select_tail.main(["--list", str(lst), "--class-names", str(names), "--out", str(blocker / "t.txt")]) == 2
    assert "cannot write" in capsys.readouterr().err
    src = fake_fashion_mnist(tmp_path / "fm", train_per_class=10, test_per_class=1)
    assert make_lt.main(["--fashion-mnist", str(src), "--out", str(blocker / "lt"), "--n-max", "4",
                         "--imbalance", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot write" in err and "--out" in err


# --- folder-to-list ----------------------------------------------------------------------------------------

def _tree(root: Path, classes: dict[str, int]) -> Path:
    for c, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (4, 4), (c * 60, i, 0)).save(root / name / f"{i}.png")
    return root


def test_folder_to_list_numbers_sorted_folders_and_reuses_a_numbering(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.lt import folder_to_list

    train = _tree(tmp_path / "data" / "train", {"snow owl": 2, "cat": 1, "red fox": 3})
    out = tmp_path / "data" / "train.txt"
    assert lt_tools.main(["folder-to-list", "--images", str(train), "--out", str(out)]) == 0
    assert "3 class folders" in capsys.readouterr().out
    assert read_class_names(tmp_path / "data" / "classnames.txt") == ["cat", "red fox", "snow owl"]
    entries = read_list_file(out)
    assert Counter(e.label for e in entries) == {0: 1, 1: 3, 2: 2}
    assert all((out.parent / e.path).is_file() and e.path.startswith("train/") for e in entries)
    # a second tree, numbered by the first one's names: folders match by name (here case and "_" differ)
    test = _tree(tmp_path / "data" / "test", {"Snow_Owl": 1, "cat": 1})
    names = tmp_path / "data" / "classnames.txt"
    assert folder_to_list.main(["--images", str(test), "--out", str(tmp_path / "data" / "test.txt"),
                                "--class-names", str(names)]) == 0
    assert sorted(e.label for e in read_list_file(tmp_path / "data" / "test.txt")) == [0, 2]
    # ... and never silently renumbers: its own sorted folders would differ from classnames.txt
    assert folder_to_list.main(["--images", str(test), "--out", str(tmp_path / "data" / "t2.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"folder-to-list: error: {names}: exists and holds other class names") and "\n" not in err
    assert read_class_names(names) == ["cat", "red fox", "snow owl"]


def test_folder_to_list_bad_input_and_unwritable_output_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.lt import folder_to_list

    tree = _tree(tmp_path / "tree", {"cat": 1, "dog": 1})
    names = tmp_path / "names.txt"
    names.write_text("cat\nowl\n")
    assert folder_to_list.main(["--images", str(tree), "--out", str(tmp_path / "l.txt"), "--class-names",
                                str(names)]) == 2
    assert capsys.readouterr().err.strip() == (f"folder-to-list: error: {tree / 'dog'}: class folder 'dog' matches "
                                               f"no class of --class-names {names}; rename it or add the class")
    assert folder_to_list.main(["--images", str(tmp_path / "nope"), "--out", str(tmp_path / "l.txt")]) == 2
    assert "nope: not a folder" in capsys.readouterr().err
    listed = tmp_path / "l.txt"
    assert folder_to_list.main(["--images", str(tree), "--out", str(listed)]) == 0
    before = listed.read_bytes()
    (tmp_path / "taken").mkdir()
    for out in (tmp_path / "taken", tmp_path / "names.txt" / "l.txt"):  # a folder; a path under a file
        assert folder_to_list.main(["--images", str(tree), "--out", str(out),
                                    "--names-out", str(tmp_path / "n2.txt")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"folder-to-list: error: {out}: cannot write: ") and err.endswith("check --out")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    capsys.readouterr()
    assert folder_to_list.main(["--images", str(tree), "--out", str(listed)]) == 2
    assert capsys.readouterr().err.strip().endswith("cannot write: No space left on device; check --names-out")
    assert listed.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "classnames.txt", "l.txt", "n2.txt", "names.txt", "taken", "tree"]
