"""Layers import downward only: store <- engine <- agent <- mission; cli and server on top.

Every module under src/tether is parsed; every `import` (including those under
TYPE_CHECKING) must point at its own layer or one below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "tether"
ORDER = ["foundation", "store", "engine", "agent", "mission", "top"]
PACKAGE_LAYER = {
    "store": "store",
    "engine": "engine",
    "agent": "agent",
    "mission": "mission",
    "cli": "top",
    "server": "top",
    "sync": "top",  # tether.sync: a facade of blocking waits, like tether itself
}
BANNED = {
    "engine": {"sqlite3", "psycopg", "psycopg_pool"},
    "agent": {"sqlite3", "psycopg"},
    "mission": {"sqlite3", "psycopg"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """tether.errors, .codec, .clock ... are the foundation; packages are their own layer;
    the `tether` facade re-exports every layer's public names, so it sits on top."""
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    return PACKAGE_LAYER.get(parts[1], "foundation")


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down_only(path: Path):
    me = module_name(path)
    mine = layer(me)
    for target in imports(path):
        assert target.split(".")[0] not in BANNED.get(mine, set()), f"{me} imports {target}"
        if target.split(".")[0] != "tether":
            continue
        theirs = layer(target)
        assert ORDER.index(theirs) <= ORDER.index(mine), (
            f"{me} ({mine}) imports {target} ({theirs}): layers import downward only"
        )


def test_every_layer_module_is_classified():
    assert {layer(module_name(p)) for p in MODULES} <= set(ORDER)
