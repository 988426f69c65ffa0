"""The house's shape, as docs/DESIGN.md §2–3 draws it: checked on the files, so a change that breaks it says so."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("agent", "store", "trainer", "scripts", "prompts")


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((REPO / folder).rglob("*.py"))]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_agent_root_holds_commands_and_little_else() -> None:
    root_modules = sorted(p.name for p in (REPO / "agent").glob("*.py"))
    assert len(root_modules) <= 12, root_modules
    packages = sorted(p.name for p in (REPO / "agent").iterdir() if (p / "__init__.py").is_file())
    assert {"graph", "providers", "batch", "lifecycle", "readout"} <= set(packages)


def test_imports_run_one_way() -> None:
    """store imports neither side; the trainer never imports the agent; nothing imports tests."""
    problems = []
    for path in _python_files(*SOURCE_FOLDERS):
        top = path.relative_to(REPO).parts[0]
        for module in _imported_modules(path):
            head = module.split(".")[0]
            if head == "tests" or (top == "store" and head in ("agent", "trainer", "scripts")) \
                    or (top == "trainer" and head in ("agent", "scripts")) or (top in ("agent", "prompts") and head == "scripts"):
                problems.append(f"{path.relative_to(REPO)} imports {module}")
    assert problems == []


def test_the_repository_stands_alone() -> None:
    """Nothing outside docs/ points at a folder a clone does not have."""
    outside = "../" + "shared"  # spelled in two parts so this file does not match itself
    hits = [str(p.relative_to(REPO)) for p in _python_files(*SOURCE_FOLDERS, "tests")
            if outside in p.read_text(encoding="utf-8")]
    hits += [name for name in ("pyproject.toml", "README.md", "BENCHMARKS.md", ".ci/run")
             if (REPO / name).is_file() and outside in (REPO / name).read_text(encoding="utf-8")]
    assert hits == []
