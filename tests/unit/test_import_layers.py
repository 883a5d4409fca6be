"""The import graph of `edgead/` (read with `ast`, lazy imports inside functions included).

Floors (docs/ARCHITECTURE.md, STYLE.md section 2.1):
- ground floor: `edgead.ops.*`, `edgead.bundle` (+ `bundle_checks`, `signing`), `edgead.errors`,
  `edgead._io`, `edgead.config`;
  imports nothing else of edgead and no torch / scikit-learn / scipy / pandas.
- data (`edgead.data.*`), models (`edgead.models.*`) and the device side (`edgead.runtime.*`,
  `edgead.devices.*`) each stand on the ground floor and never import each other upwards or
  sideways (the runtime loads no data sets, no training code, no scikit-learn).
- no circle anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "edgead"
GROUND_MODULES = {
    "edgead.bundle",
    "edgead.bundle_checks",
    "edgead.signing",
    "edgead.errors",
    "edgead._io",
    "edgead.config",
}
#: floor -> the floors it may import (besides itself and the ground floor).
ALLOWED = {
    "ground": set(),
    "data": set(),
    "models": {"metrics"},
    "device": set(),
}
BANNED_THIRD_PARTY = {
    "ground": {"torch", "torchvision", "timm", "sklearn", "scipy", "pandas"},
    "device": {"torch", "torchvision", "timm", "sklearn", "scipy", "pandas"},
    "data": {"torch", "torchvision", "timm"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _floor(module: str) -> str:
    if module in GROUND_MODULES or module.startswith("edgead.ops"):
        return "ground"
    if module.startswith(("edgead.runtime", "edgead.devices")):
        return "device"
    if module.startswith("edgead.data"):
        return "data"
    if module.startswith("edgead.models"):
        return "models"
    return module.removeprefix("edgead.")  # upper floors: training, export, cli, ...


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(edgead modules, third-party top-level packages) that `module` imports anywhere."""
    tree = ast.parse(MODULES[module].read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    ours, third = set(), set()
    for name in names:
        if name.split(".")[0] != "edgead":
            third.add(name.split(".")[0])
            continue
        while name and name not in MODULES:  # `from edgead.x import func` -> edgead.x
            name = name.rpartition(".")[0]
        if name and name not in (module, "edgead"):
            ours.add(name)
    return ours, third


GRAPH = {module: _imports(module) for module in MODULES}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _floor(m) in ALLOWED))
def test_lower_floors_import_only_downwards(module: str) -> None:
    floor = _floor(module)
    ours, third = GRAPH[module]
    allowed = {floor, "ground"} | ALLOWED[floor]
    upward = sorted(d for d in ours if _floor(d) not in allowed)
    assert not upward, f"{module} ({floor} floor) imports {upward}"
    banned = sorted(third & BANNED_THIRD_PARTY.get(floor, set()))
    assert not banned, f"{module} ({floor} floor) imports {banned}"


def test_import_graph_has_no_circle() -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH[module][0]):
            if state.get(dep) == 1:
                circle = path[path.index(dep) :] + [dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


def test_the_checker_sees_lazy_imports() -> None:
    ours, _ = GRAPH["edgead.cli.eval"]  # imports only inside its command function
    assert "edgead.evaluation" in ours
