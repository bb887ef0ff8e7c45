"""The package dependency direction of ARCHITECTURE.md §2, enforced on every import statement.

client.wire  -> nothing from the project
client.*     -> client.wire (and client itself)
storage      -> client.wire
controller   -> client.wire, storage
broker       -> storage, client, controller
tools        -> client, storage
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROJECT = ("broker", "controller", "client", "storage", "tools")

ALLOWED: dict[str, tuple[str, ...]] = {
    "client.wire": ("client.wire",),
    "client": ("client",),
    "storage": ("storage", "client.wire"),
    "controller": ("controller", "client.wire", "storage"),
    "broker": ("broker", "storage", "client", "controller"),
    "tools": ("tools", "client", "storage"),
}


def _layer(module: str) -> str:
    return "client.wire" if module.startswith("client.wire") else module.split(".")[0]


def _imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return [m for m in found if m.split(".")[0] in PROJECT]


def _sources() -> list[pathlib.Path]:
    return sorted(p for pkg in PROJECT for p in (ROOT / pkg).rglob("*.py"))


def test_sources_exist() -> None:
    assert any(p.parts[-2] == "wire" for p in _sources())


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_dependency_direction(path: pathlib.Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    layer = _layer(module)
    allowed = ALLOWED[layer]
    for imported in _imports(path):
        assert any(imported == a or imported.startswith(a + ".") for a in allowed), (
            f"{module} ({layer}) imports {imported}; allowed: {allowed}")


def test_the_checker_flags_a_wrong_import(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from storage.log import Log\nimport broker.main\n")
    imported = _imports(bad)
    assert imported == ["storage.log", "broker.main"]
    assert not any(i.startswith(a) for i in imported for a in ALLOWED["client.wire"])
