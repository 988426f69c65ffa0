"""Input readers: tail.txt, ImageFolder trees, list files + class names, and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.lifecycle.inputs import InputError, load_inputs, read_class_map, read_tail
from store.slug import slugify


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def image_folder(root: Path, counts: dict[str, int]) -> Path:
    for folder, n in counts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / folder / f"{i}.png").write_bytes(b"png")
        (root / folder / "notes.txt").write_text("not an image")
    return root


def test_tail_file_comments_blanks_labels_and_duplicates(tmp_path):
    tail = write(tmp_path / "tail.txt", "# tail classes\n\nred fox\n7\tsnow owl  # rare\nred fox\n")
    entries, warnings = read_tail(tail)
    assert [(e.name, e.label) for e in entries] == [("red fox", None), ("snow owl", 7)]
    assert len(warnings) == 1 and "tail.txt:5" in warnings[0] and "tail.txt:3" in warnings[0]


def test_empty_tail_file_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"tail.txt: no classes listed"):
        read_tail(write(tmp_path / "tail.txt", "# nothing\n\n"))


def test_class_names_both_formats(tmp_path):
    assert read_class_map(write(tmp_path / "a.txt", "cat\ndog\n\nbird\n")) == {0: "cat", 1: "dog", 2: "bird"}
    assert read_class_map(write(tmp_path / "b.txt", "3\tcat\n9\tdog\n")) == {3: "cat", 9: "dog"}
    with pytest.raises(InputError, match=r"c.txt:2: label 3 is used twice"):
        read_class_map(write(tmp_path / "c.txt", "3\tcat\n3\tdog\n"))


def test_image_folder_matches_by_name_slug_or_loose_name(tmp_path):
    root = image_folder(tmp_path / "train", {"red fox": 2, slugify("snow owl"): 1, "sea_turtle": 3, "zebra": 5})
    tail = write(tmp_path / "tail.txt", "red fox\nsnow owl\nsea turtle\n")
    inputs = load_inputs(tail, images_dir=root)
    got = {c.name: (c.label, len(c.images)) for c in inputs.classes}
    folders = sorted(["red fox", slugify("snow owl"), "sea_turtle", "zebra"])
    assert got == {"red fox": (folders.index("red fox"), 2), "snow owl": (folders.index(slugify("snow owl")), 1),
                   "sea turtle": (folders.index("sea_turtle"), 3)}
    assert all(Path(p).is_absolute() and p.endswith(".png") for c in inputs.classes for p in c.images)
    assert inputs.class_names[folders.index("zebra")] == "zebra"  # every dataset class, for softmax


def test_image_folder_missing_class_names_the_line_and_the_fix(tmp_path):
    root = image_folder(tmp_path / "train", {"red fox": 1})
    tail = write(tmp_path / "tail.txt", "red fox\nsnow owl\n")
    with pytest.raises(InputError, match=r"tail.txt:2: class 'snow owl' has no folder .* create it or fix the name"):
        load_inputs(tail, images_dir=root)


def test_train_list_with_class_names(tmp_path):
    for rel in ("a/0.jpg", "a/1.jpg", "b/0.jpg", "c/0.jpg"):
        write(tmp_path / "data" / rel, "x")
    lst = write(tmp_path / "train.txt", "a/0.jpg 0\na/1.jpg 0\nb/0.jpg 1\nc/0.jpg 2\n")
    names = write(tmp_path / "names.txt", "cat\ndog\nbird\n")
    tail = write(tmp_path / "tail.txt", "bird\n0\tcat\n")
    inputs = load_inputs(tail, train_list=lst, data_root=tmp_path / "data", class_names_file=names)
    assert [(c.name, c.label, len(c.images)) for c in inputs.classes] == [("bird", 2, 1), ("cat", 0, 2)]
    assert inputs.class_names == {0: "cat", 1: "dog", 2: "bird"}


@pytest.mark.parametrize(("tail", "names", "listing", "message"), [
    ("fish\n", "cat\n", "a.jpg 0\n", r"tail.txt:1: class 'fish' is not in --class-names"),
    ("0\tdog\n", "cat\n", "a.jpg 0\n", r"label 0 is 'cat' in --class-names, not 'dog'"),
    ("cat\n", "cat\n", "a.jpg zero\n", r"train.txt:1: expected 'relative/path.jpg <label>'"),
    ("cat\n", "cat\n", "missing.jpg 0\n", r"train.txt:1: image .*missing.jpg does not exist"),
    ("cat\n", None, "a.jpg 0\n", r"class 'cat' has no label; write 'label<TAB>name' or pass --class-names"),
])
def test_train_list_errors_are_one_line(tmp_path, tail, names, listing, message):
    write(tmp_path / "data" / "a.jpg", "x")
    names_file = write(tmp_path / "names.txt", names) if names else None
    with pytest.raises(InputError, match=message) as info:
        load_inputs(write(tmp_path / "tail.txt", tail), train_list=write(tmp_path / "train.txt", listing),
                     data_root=tmp_path / "data", class_names_file=names_file)
    assert "\n" not in str(info.value)


def test_source_flags_must_be_exactly_one(tmp_path):
    tail = write(tmp_path / "tail.txt", "cat\n")
    with pytest.raises(InputError, match="exactly one image source"):
        load_inputs(tail)
    with pytest.raises(InputError, match="--train-list needs --data-root"):
        load_inputs(tail, train_list=tail)
    with pytest.raises(InputError, match="file not found"):
        load_inputs(tmp_path / "nope.txt", images_dir=tmp_path)
