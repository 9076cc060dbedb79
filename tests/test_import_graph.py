"""The house rules of the code base, read from the source with ``ast`` (nothing is imported).

* No import cycle among the project's own modules (``v2a_server``, ``foley_protocol``,
  ``blender_addon``), counting imports inside functions too: a cycle hidden in a function is
  still two modules that cannot be understood apart.
* ``blender_addon`` runs inside Blender's Python: it imports only Blender's own modules, numpy,
  soxr, ``foley_protocol`` (bundled with it) and the standard library. Never torch.
* ``v2a_server.serving`` (what runs when the server runs) never reaches training or the
  synthetic world, directly or through another module.
* No add-on module over ~400 lines: past that a module holds more than one idea.
  (The pipeline's parameter limit is checked in ``test_pipeline.py``.)
"""

from __future__ import annotations

import ast
import graphlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# (package name, folder holding the package)
PACKAGES = {
    "v2a_server": ROOT / "v2a_server",
    "foley_protocol": ROOT / "shared" / "foley_protocol",
    "blender_addon": ROOT / "blender_addon",
}
# Modules Blender ships with its Python: the add-on may use them like bpy itself.
BLENDER_MODULES = {"bpy", "bpy_extras", "mathutils", "aud", "gpu", "gpu_extras", "bl_math",
                   "idprop", "bmesh"}
ADDON_THIRD_PARTY = {"numpy", "soxr", "foley_protocol"}
ADDON_MAX_LINES = 420  # "about 400": a module past this holds more than one idea


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imported_names(name: str) -> set[str]:
    """Every absolute module name ``name`` imports, at any depth of its code.

    ``from pkg import thing`` counts as importing ``pkg.thing`` when that is a module of ours,
    else ``pkg``; a relative import is resolved against ``name``'s package.
    """
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if is_package(name) else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                names.add(candidate if candidate in MODULES else module)
    return names


def project_edges() -> dict[str, set[str]]:
    """Module -> the project modules it imports (the nearest enclosing module of ours)."""
    edges = {}
    for name in MODULES:
        targets = set()
        for imported in imported_names(name):
            parts = imported.split(".")
            while parts and ".".join(parts) not in MODULES:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        edges[name] = targets
    return edges


EDGES = project_edges()


def reachable(start: str) -> dict[str, str]:
    """Modules reachable from ``start`` -> the module that imports each on the first path."""
    seen = {start: ""}
    stack = [start]
    while stack:
        current = stack.pop()
        for target in EDGES[current]:
            if target not in seen:
                seen[target] = current
                stack.append(target)
    return seen


def path_to(seen: dict[str, str], end: str) -> str:
    chain = [end]
    while seen[chain[-1]]:
        chain.append(seen[chain[-1]])
    return " -> ".join(reversed(chain))


def test_the_graph_is_read():
    # the walk must see the project, or every rule below would pass on nothing
    assert {"v2a_server", "foley_protocol", "blender_addon"} <= set(MODULES)
    assert len(MODULES) > 60
    assert any(EDGES[name] for name in MODULES if name.startswith("blender_addon."))


def test_no_import_cycles():
    sorter = graphlib.TopologicalSorter(EDGES)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_blender_addon_imports_only_what_blender_has():
    allowed = BLENDER_MODULES | ADDON_THIRD_PARTY | set(sys.stdlib_module_names)
    wrong = []
    for name in MODULES:
        if not name.startswith("blender_addon"):
            continue
        for imported in imported_names(name):
            top = imported.split(".")[0]
            if top != "blender_addon" and top not in allowed:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_serving_never_reaches_training_or_synth():
    serving = [name for name in MODULES if name == "v2a_server.serving"
               or name.startswith("v2a_server.serving.")]
    assert serving, "v2a_server.serving is missing"
    forbidden = ("v2a_server.training", "v2a_server.synth")
    wrong = []
    for start in serving:
        seen = reachable(start)
        wrong += [path_to(seen, name) for name in seen
                  if name.startswith(forbidden)]
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_addon_module_is_too_long():
    long = {name: len(MODULES[name].read_text().splitlines()) for name in MODULES
            if name.startswith("blender_addon")}
    long = {name: n for name, n in long.items() if n > ADDON_MAX_LINES}
    assert not long, f"add-on modules over {ADDON_MAX_LINES} lines: {long}"
