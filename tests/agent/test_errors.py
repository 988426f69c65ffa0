"""agent/errors.py: the drawn error tree is the code's, and ``entry_point`` is the one UsageError -> exit 2 mapping."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import agent.errors
from agent.errors import EXIT_USAGE, entry_point
from agent.lifecycle.lock import RunLocked
from agent.providers.config import ConfigError
from agent.providers.local_pipeline import LocalPipelineError
from store.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
NODE = re.compile(r"^(?P<indent>[│ ]*)[├└]── (?P<name>\w+) \((?P<module>[\w.]+)\)")
ROOTS = {"ValueError", "Exception"}


def drawn_tree() -> dict[str, tuple[str, str]]:
    """``{class: (module, parent)}`` from the module docstring's drawing."""
    tree: dict[str, tuple[str, str]] = {}
    parents: list[str] = []
    for line in (agent.errors.__doc__ or "").splitlines():
        text = line.strip()
        if text in ROOTS:
            parents = [text]
            continue
        found = NODE.match(line[4:])  # the drawing is a literal block, indented four spaces
        if found:
            depth = len(found["indent"]) // 4 + 1
            parents = parents[:depth]
            tree[found["name"]] = (found["module"], parents[-1])
            parents.append(found["name"])
    return tree


def defined_classes() -> dict[str, tuple[str, list[str]]]:
    """Every class in the packages whose bases include an exception class: ``{name: (module, bases)}``."""
    out: dict[str, tuple[str, list[str]]] = {}
    for package in ("agent", "store", "trainer", "scripts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
                    if any(b.endswith(("Error", "Exception")) or b in ("RunLocked", "LimiterAborted", "BadResponse")
                           for b in bases):
                        out[node.name] = (module, bases)
    return out


def test_the_drawing_matches_the_code() -> None:
    tree, code = drawn_tree(), defined_classes()
    assert "UsageError" in tree and "ProviderError" in tree and len(tree) > 25
    for name, (module, parent) in tree.items():
        assert name in code, f"{name} is drawn but not defined"
        assert code[name][0] == module, f"{name} is drawn in {module}, defined in {code[name][0]}"
        assert parent in code[name][1], f"{name} is drawn under {parent}, its bases are {code[name][1]}"


def test_every_public_error_is_drawn() -> None:
    """A new error class anywhere (simulator internals aside, they are never raised to a user) must be drawn."""
    tree = drawn_tree()
    missing = [f"{module}.{name}" for name, (module, _) in defined_classes().items()
               if name not in tree and not name.startswith("_")]
    assert missing == []


def test_the_strays_are_folded_in() -> None:
    assert issubclass(RunLocked, UsageError) and RunLocked("x").exit_code == EXIT_USAGE
    assert issubclass(LocalPipelineError, ConfigError)


def test_entry_point_turns_a_usage_error_into_one_line_and_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    class Late(UsageError):
        exit_code = 1

    @entry_point
    def bad(argv: object = None) -> int:
        raise UsageError("--size: must be WxH, got '12'\nsecond line never shown")

    @entry_point
    def late(argv: object = None) -> int:
        raise Late("out/x: cannot write")

    @entry_point
    def good(argv: object = None) -> int:
        return 3

    assert bad([]) == EXIT_USAGE
    assert capsys.readouterr().err == "error: --size: must be WxH, got '12'\n"
    assert late([]) == 1 and good([]) == 3
    assert capsys.readouterr().err == "error: out/x: cannot write\n"
    with pytest.raises(RuntimeError):  # a bug is not a usage error: it is not hidden
        entry_point(lambda argv=None: (_ for _ in ()).throw(RuntimeError("bug")))([])


def test_agent_run_maps_usage_errors_in_one_place() -> None:
    source = (ROOT / "agent" / "run.py").read_text(encoding="utf-8")
    assert "return 2" not in source and "usage_line" not in source
    assert source.count("@entry_point") == 1
