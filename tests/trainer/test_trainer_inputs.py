"""What the trainer reads: labels by class name (issue 12 §2), ImageFolder trees and other tools' manifests
(issue 16). Unit checks on :mod:`trainer.samples`, then ``trainer.train.main`` end to end on tiny data."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from agent.lifecycle.inputs import load_inputs
from store.manifest import ManifestRow, read_manifest, write_manifest
from store.slug import slugify
from tests.trainer.trainer_helpers import NAMES, TinyData, train_argv
from trainer.samples import Classes, DataError, Sample, check_images, read_samples, relabel_note
from trainer.train import main

AGENT_ORDER = sorted(NAMES)  # the agent numbers an ImageFolder's classes by sorted folder name


def agent_style_manifest(data: TinyData, path: Path) -> Path:
    """The tiny D_g as the agent writes it for an ImageFolder run: labels in sorted-name order, not NAMES's."""
    rows = [ManifestRow(str((data.generated.parent / r.path).resolve()), AGENT_ORDER.index(r.class_name),
                        r.class_name, r.source, r.sha256, r.description, r.score, r.round, r.run_id)
            for r in read_manifest(data.generated)]
    write_manifest(path, rows)
    return path


def image_folder(data: TinyData, split: str, root: Path, name_of=lambda n: n) -> Path:
    """``root/<name_of(class name)>/*.png`` holding the tiny data's ``split`` images."""
    for line in (data.root / f"{split}.txt").read_text().splitlines():
        rel, label = line.rsplit(maxsplit=1)
        folder = root / name_of(NAMES[int(label)])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(data.root / rel, folder / Path(rel).name)
    return root


def test_a_class_name_decides_the_label_and_the_remap_is_counted(tiny_data: TinyData, tmp_path: Path) -> None:
    manifest = agent_style_manifest(tiny_data, tmp_path / "agent.jsonl")
    classes = Classes(tuple(NAMES), "--class-names names.txt")
    samples = read_samples(manifest, classes)
    by_file = {s.path.name: s.label for s in samples}
    assert by_file == {f"{k}_{i}.png": k for k in range(3) for i in range(4)}  # k = the NAMES label, by name
    moved = [s for s in samples if s.listed_label is not None]
    assert len(moved) == 8  # "red square" (agent 1) and "blue square" (agent 0) moved; green is 1 both ways
    note = relabel_note(samples, classes.source)
    assert note is not None and note.startswith("8 manifest row(s) carry a label that --class-names names.txt")
    assert f"(first: {manifest}:1: label 0 -> 2)" in note
    assert relabel_note(read_samples(tiny_data.generated, classes), classes.source) is None


def test_a_class_name_not_in_the_class_names_is_a_file_line_error(tiny_data: TinyData, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in tiny_data.generated.read_text().splitlines()]
    rows[2]["class_name"] = "café crème"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    with pytest.raises(DataError) as info:
        read_samples(bad, NAMES)
    assert str(info.value) == (f"{bad}:3: class_name 'café crème' is not a class of the class names; "
                               f"add it there or fix the row")


def test_original_data_manifest_is_labelled_by_name_too(tiny_data: TinyData, tmp_path: Path) -> None:
    lines = tiny_data.train.read_text().splitlines()
    rows = [json.dumps({"path": str(tiny_data.root / rel), "label": 0, "class_name": NAMES[int(k)]})
            for rel, k in (line.rsplit(maxsplit=1) for line in lines)]
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    samples = read_samples(tmp_path / "train.jsonl", NAMES)
    assert [s.label for s in samples] == [int(line.rsplit(maxsplit=1)[1]) for line in lines]


def test_train_uses_class_names_not_the_agents_numbers(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    manifest = agent_style_manifest(tiny_data, tmp_path / "gen" / "manifest.jsonl")
    out = tmp_path / "out"
    assert main(train_argv(tiny_data, out, "--generated", str(manifest), "--mode", "balancemix")) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["generated_counts"] == [4, 4, 4] and config["train_counts"] == [12, 6, 2]
    # Each generated image trains under its class_name's label: the images of class k are k's colour.
    err = capsys.readouterr().err
    assert err.count("manifest row(s) carry a label") == 1 and "label 0 -> 2" in err
    # Unbalanced rows make the wrong-label reading visible in the counts too: drop two "red square" rows.
    rows = [r for r in read_manifest(manifest) if not (r.class_name == "red square" and r.path.endswith(("0.png",
                                                                                                          "1.png")))]
    write_manifest(manifest, rows)
    assert main(train_argv(tiny_data, tmp_path / "out2", "--generated", str(manifest), "--mode", "balancemix")) == 0
    assert json.loads((tmp_path / "out2" / "config.json").read_text())["generated_counts"] == [2, 4, 4]


def test_train_refuses_an_unknown_class_name_in_one_line(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    rows = [json.loads(line) for line in tiny_data.generated.read_text().splitlines()]
    line = next(n for n, row in enumerate(rows, 1) if row["class_name"] == "green square")
    rows[line - 1]["class_name"] = "tabby cat"
    tiny_data.generated.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    assert main(train_argv(tiny_data, out, "--generated", str(tiny_data.generated))) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tiny_data.generated}:{line}: class_name 'tabby cat' is not a class of --class-names "
                   f"{tiny_data.names}; add it there or fix the row")
    assert not out.exists()


def test_image_folders_train_with_sorted_folder_labels_like_the_agent(tiny_data: TinyData, tmp_path: Path) -> None:
    train = image_folder(tiny_data, "train", tmp_path / "train")
    test = image_folder(tiny_data, "test", tmp_path / "test", name_of=lambda n: n.replace(" ", "_"))
    gen = tmp_path / "run" / "images"  # the agent's layout: images/<class slug>/
    for row in read_manifest(tiny_data.generated):
        (gen / slugify(row.class_name)).mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_data.generated.parent / row.path, gen / slugify(row.class_name) / Path(row.path).name)
    argv = train_argv(tiny_data, tmp_path / "out", "--generated", str(gen))
    argv[argv.index("--train") + 1], argv[argv.index("--test") + 1] = str(train), str(test)
    del argv[argv.index("--class-names"):argv.index("--class-names") + 2]
    assert main(argv) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["class_names_used"] == AGENT_ORDER  # blue, green, red square
    assert config["train_counts"] == [2, 6, 12] and config["generated_counts"] == [4, 4, 4]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["test_images"] == 12
    # The agent's --images numbers the same tree the same way.
    (tmp_path / "tail.txt").write_text("\n".join(NAMES) + "\n")
    inputs = load_inputs(tmp_path / "tail.txt", images_dir=train)
    assert {c.name: c.label for c in inputs.classes} == {n: AGENT_ORDER.index(n) for n in NAMES}


def test_folder_errors_are_one_line(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    train = image_folder(tiny_data, "train", tmp_path / "train")
    (tmp_path / "train" / "purple square").mkdir()
    argv = train_argv(tiny_data, tmp_path / "out")
    argv[argv.index("--train") + 1] = str(train)
    assert main(argv) == 2  # with --class-names, every folder must name a class
    assert capsys.readouterr().err.strip() == (
        f"error: {train / 'purple square'}: class folder 'purple square' matches no class of --class-names "
        f"{tiny_data.names}; rename the folder to a class name (or its slug) or add the class")
    argv = train_argv(tiny_data, tmp_path / "out")
    del argv[argv.index("--class-names"):argv.index("--class-names") + 2]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --class-names FILE is needed: --train {tiny_data.train} is not an ImageFolder (only an "
        f"ImageFolder's sorted folder names can stand in for the class names)")
    assert not (tmp_path / "out").exists()


def test_a_manifest_of_another_tool_trains_and_sha256_is_checked(tiny_data: TinyData, tmp_path: Path,
                                                                 capsys) -> None:
    rows = [{"path": str(tiny_data.generated.parent / r.path), "label": r.label, "width": 16}
            for r in read_manifest(tiny_data.generated)]
    rows[5]["sha256"] = read_manifest(tiny_data.generated)[5].sha256
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(train_argv(tiny_data, tmp_path / "o1", "--generated", str(other))) == 0
    assert f"note: {other}: field(s) width are not used by the trainer" in capsys.readouterr().err
    Path(rows[5]["path"]).write_bytes(Path(rows[6]["path"]).read_bytes())  # the file changed after listing
    assert main(train_argv(tiny_data, tmp_path / "o2", "--generated", str(other))) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the note line
    assert err.startswith(f"error: {other}:6: image ") and "does not have the row's sha256" in err
    assert main(train_argv(tiny_data, tmp_path / "o3", "--generated", str(other), "--skip-bad-images")) == 0
    metrics = json.loads((tmp_path / "o3" / "metrics.json").read_text())
    assert metrics["skipped_images"] == {"original": 0, "generated": 1, "test": 0}


def test_check_images_flags_a_changed_file(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    img.write_bytes(b"now")
    stale = Sample(img, 0, "m.jsonl:4", sha256=hashlib.sha256(b"before").hexdigest())
    fresh = Sample(img, 0, "m.jsonl:5", sha256=hashlib.sha256(b"now").hexdigest())
    assert check_images([fresh], skip_bad=False) == ([fresh], [])
    kept, problems = check_images([stale, fresh], skip_bad=True)
    assert kept == [] and problems[0].startswith("m.jsonl:4: image ")  # fresh is no image: skip_bad decodes it
    with pytest.raises(DataError, match=r"^m.jsonl:4: .*sha256.*\(restore the file, .* or pass --skip-bad-images\)$"):
        check_images([stale], skip_bad=False)


def test_nothing_listed_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images listed"):
        read_samples(tmp_path / "empty", ["cat"])
    with pytest.raises(DataError, match="no such file or folder"):
        read_samples(tmp_path / "nope.txt", ["cat"])
