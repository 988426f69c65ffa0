"""slugify: hostile names become short, safe, distinct folder names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from store.slug import slugify

SAFE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")

HOSTILE = [
    "../../etc/passwd", "..", ".", "/", "a/b", "a\\b", "nul\x00byte", "tab\there", "bell\x07\x1b[31m",
    "x" * 500, "Ærøskøbing", "北京烤鸭", "🦊 fox", "", " ", "-", "CON", "red fox", "Red Fox", "red_fox",
    "red-fox", "red  fox", "café", "cafe", "cafe\u0301", "\ud800lone surrogate",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_slug_is_safe_and_short(name: str, tmp_path: Path) -> None:
    slug = slugify(name)
    assert SAFE.fullmatch(slug), slug
    assert len(slug) <= 70
    assert slugify(name) == slug  # deterministic
    # As a path component it stays directly inside its parent.
    assert (tmp_path / slug).resolve().parent == tmp_path.resolve()


def test_plain_slug_names_are_kept_as_is() -> None:
    assert slugify("red-fox") == "red-fox"
    assert slugify("n01440764") == "n01440764"


def test_lossy_names_keep_a_readable_prefix() -> None:
    assert slugify("Red Fox").startswith("red-fox-")
    assert slugify("../../etc/passwd").startswith("etc-passwd-")
    assert slugify("北京烤鸭").startswith("class-")
    assert slugify("x" * 500).startswith("x" * 60 + "-")


def test_distinct_names_stay_distinct() -> None:
    names = list(dict.fromkeys(HOSTILE))
    names += [slugify("red fox"), slugify("Red Fox")]  # names that look like hashed slugs
    names += [f"class {i}" for i in range(300)] + ["x" * 499, "x" * 501, "x" * 60 + "y", "x" * 60 + "z"]
    slugs = [slugify(n) for n in names]
    assert len(set(slugs)) == len(names)
