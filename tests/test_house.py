"""The house's import directions: dashboard -> training -> engagement -> recsite, training/ml free of Django.

Read from the source (every import, also those inside functions), so a wrong-way import
fails here before review. README "Layout" draws the picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"recsite": 0, "engagement": 1, "training": 2, "dashboard": 3}  # each may import only lower or equal
NOT_IN_ML = ("django", "rest_framework", "celery", "kombu", "drf_spectacular", *LAYERS)
MAX_LINES = 450


def app_modules() -> dict[str, Path]:
    modules = {}
    for app in LAYERS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name an import in ``path`` can mean (``from a import b`` gives a and a.b)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Return (every name each module imports, the app modules each one imports)."""
    modules = app_modules()
    names, edges = {}, {}
    for module, path in modules.items():
        names[module] = imported_names(module, path)
        edges[module] = set()
        for name in names[module]:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges[module].add(name)
    return names, edges


def wrong_way(names: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in names.items():
        app = module.split(".")[0]
        for name in imported:
            top = name.split(".")[0]
            if top in LAYERS and LAYERS[top] > LAYERS[app]:
                found.append(f"{module} -> {name}")
            if module.startswith("training.ml") and top in NOT_IN_ML and not name.startswith("training.ml"):
                found.append(f"{module} -> {name} (training/ml is plain PyTorch)")
    return sorted(found)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_imports_run_one_way():
    names, _ = import_graph()
    assert wrong_way(names) == []


def test_no_circle_between_modules():
    _, edges = import_graph()
    assert circles(edges) == []


def test_no_app_module_is_over_450_lines():
    long = {m: n for m, p in app_modules().items() if (n := p.read_text().count("\n")) > MAX_LINES}
    long.pop("recsite.settings", None)  # one flat list of settings, read top to bottom
    assert long == {}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("engagement.tasks", "from training.services import precompute\n", "engagement.tasks -> training.services"),
        ("training.ml.loop", "import django.db\n", "training.ml.loop -> django.db (training/ml is plain PyTorch)"),
        ("recsite.health", "def f():\n    from training import serving\n", "recsite.health -> training"),
        ("dashboard.views", "from training.serving import x\n", None),
    ],
)
def test_the_check_catches_a_wrong_way_import_and_lets_a_right_one_be(tmp_path, module, source, expected):
    path = tmp_path / "module.py"
    path.write_text(source)
    found = wrong_way({module: imported_names(module, path)})
    assert (found[0] if found else None) == expected


def test_the_check_catches_a_circle():
    edges = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}
    assert circles(edges) == [["a.x", "a.y", "a.z"]]
