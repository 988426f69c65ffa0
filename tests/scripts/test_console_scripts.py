"""Every console script in pyproject.toml names an importable ``main(argv)`` that answers ``--help``."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SCRIPTS: dict[str, str] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
PACKAGES = ("agent", "trainer", "store", "prompts", "scripts")  # [tool.setuptools.packages.find] include


def test_the_documented_commands_are_all_there() -> None:
    assert set(SCRIPTS) == {"ltgc-agent", "ltgc-traces", "ltgc-report", "ltgc-train", "ltgc-eval", "ltgc-review",
                            "ltgc-export", "ltgc-lt"}
    readme = (PYPROJECT.parent / "README.md").read_text(encoding="utf-8")
    for name, target in SCRIPTS.items():
        assert f"`{name}`" in readme, f"README does not mention {name}"
        assert target.split(".")[0] in PACKAGES, f"{target}: not in an installed package"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_entry_resolves_to_a_main_taking_argv(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module_name, _, attr = SCRIPTS[name].partition(":")
    main = getattr(importlib.import_module(module_name), attr)
    assert callable(main) and list(inspect.signature(main).parameters) == ["argv"]
    try:
        code = main(["--help"])
    except SystemExit as exc:  # argparse's --help exits 0 after printing
        code = exc.code
    assert code in (0, None)
    assert "usage:" in capsys.readouterr().out
