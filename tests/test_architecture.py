"""The layout's rules: imports flow one way, the core never imports Flask, APIs are curated."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import explainer
import model_store

ROOT = Path(__file__).resolve().parents[1]
#: Layers from the top; a module may import only its own layer or the ones below it.
LAYERS = [
    {"explainer.api", "explainer.cli", "explainer.server", "explainer.batch", "explainer.pages"},
    {"explainer.service"},
    {
        "explainer.methods",
        "explainer.rationale",
        "explainer.archive",
        "explainer.fairness",
        "explainer.validation",
        "explainer.io",
        "explainer.plots",
        "explainer.reasons",
        "explainer.keys",
        "explainer.report",
        "explainer.quality",
        "explainer.logs",
    },
    {"explainer.types", "explainer.exceptions", "explainer.config", "explainer.group_runner"},
    {"model_store"},
]


def layer_of(module: str) -> int | None:
    for depth, layer in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in layer):
            return depth
    return None


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for package in ("explainer", "model_store"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out.append((name, path))
    return out


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_only_flow_downwards(module: str, path: Path) -> None:
    own = layer_of(module)
    if own is None:
        return  # the package roots re-export; they are checked by __all__ below
    for imported in imports_of(path):
        target = layer_of(imported)
        if target is not None:
            assert target >= own, f"{module} (layer {own}) imports {imported} (layer {target})"


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_the_core_never_imports_flask(module: str, path: Path) -> None:
    if module.startswith(("explainer.api", "explainer.server", "explainer.pages")):
        return
    assert not any(i == "flask" or i.startswith("flask.") for i in imports_of(path))


@pytest.mark.parametrize("package", [explainer, model_store])
def test_public_api_is_curated(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert names == sorted(names)
    for name in names:
        assert hasattr(package, name), name
