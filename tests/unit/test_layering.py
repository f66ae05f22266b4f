"""The package's layers import each other one way only: the types leaf, then heads and losses, then the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "yolokd"

# package part -> the yolokd parts it must not import at run time (annotations under TYPE_CHECKING are fine)
FORBIDDEN = {
    "views": ("yolokd",),  # the leaf: View, Targets, HeadSpec
    "heads": ("yolokd.engine", "yolokd.losses", "yolokd.config"),
    "losses": ("yolokd.engine", "yolokd.heads", "yolokd.config"),
    "models": ("yolokd.engine", "yolokd.heads", "yolokd.losses", "yolokd.config"),  # Ultralytics modules only
}


def runtime_imports(path: Path) -> list[str]:
    """Modules a file imports when it runs: every import except those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def files_of(part: str) -> list[Path]:
    return [PACKAGE / f"{part}.py"] if (PACKAGE / f"{part}.py").is_file() else sorted((PACKAGE / part).glob("*.py"))


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(part):
    """views imports nothing of yolokd; heads and losses import neither the engine, the config nor each other."""
    for path in files_of(part):
        bad = [name for name in runtime_imports(path) if name.startswith(FORBIDDEN[part])]
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"
