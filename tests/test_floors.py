"""The floors of the house: every module of the package sits on one floor, and no module imports one on a
higher floor (lazy imports inside functions included). Read from the package list in pyproject.toml, so a
new package must be given its floor here."""
import ast

import pytest
from test_layout import PACKAGES, _modules

# Lowest first. A module may import its own floor and those below.
FLOORS = [
    ["ctrbench", "ctrbench.pairs", "ctrbench.files", "ctrbench.cpu"],
    ["ctrbench.models", "ctrbench.models.interactions", "ctrbench.datasets"],
    ["ctrbench.store", "ctrbench.probes"],
    ["ctrbench.training", "ctrbench.training.embedding_updates"],
    ["ctrbench.measure", "ctrbench.tuning"],
    ["ctrbench.report"],
    ["ctrbench.attention", "ctrbench.gate"],
    ["ctrbench.pytest_plugin"],
    ["ctrbench.commands", "ctrbench.__main__"],
]


def floor_of(module: str) -> int:
    """The floor of the longest floor entry that is the module or a package above it."""
    best, floor = -1, None
    for level, rooms in enumerate(FLOORS):
        for room in rooms:
            if (module == room or module.startswith(room + ".")) and len(room) > best:
                best, floor = len(room), level
    if floor is None:
        raise KeyError(module)
    return floor


def imported(module: str, tree: ast.AST, is_package: bool) -> set[str]:
    names = set()
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names |= {f"{source}.{alias.name}" for alias in node.names}
    return {name for name in names if name == "ctrbench" or name.startswith("ctrbench.")}


def resolve(name: str, modules: dict) -> str | None:
    while name and name not in modules:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def test_every_package_has_a_floor():
    missing = [package for package in PACKAGES if package != "ctrbench" and floor_of(package) is None]
    assert not missing


def test_no_module_imports_a_higher_floor():
    modules = _modules()
    upward = []
    for module, tree in modules.items():
        here = floor_of(module)
        for name in imported(module, tree, module in PACKAGES):
            target = resolve(name, modules)
            if target and target != module and floor_of(target) > here:
                upward.append(f"{module} (floor {here}) imports {target} (floor {floor_of(target)})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("module, floor", [("ctrbench.store.records", 2), ("ctrbench.probes.device", 2),
                                           ("ctrbench.measure.cells", 4), ("ctrbench.commands.tune", 8)])
def test_floor_of_reads_the_longest_room(module, floor):
    assert floor_of(module) == floor


def test_an_upward_import_is_found():
    tree = ast.parse("def f():\n    from ctrbench.commands import main\n")
    names = imported("ctrbench.store.records", tree, False)
    assert "ctrbench.commands" in names and floor_of("ctrbench.commands") > floor_of("ctrbench.store.records")
