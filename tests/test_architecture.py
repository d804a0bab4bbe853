"""The shape of the package, read from its source: no import cycle, no reach into another
module's private names, the CLI imported only by itself, and every import going down the layers.

Each rule is a function of a package folder, so the same rule is run on ``dispatch/`` and on a
small package written for the test that breaks it (a rule that finds nothing there is broken).
Every import counts, including those inside functions and under ``TYPE_CHECKING``: a deferred
import hides a dependency from the interpreter, not from the design.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.nodb

PACKAGE = Path(__file__).resolve().parent.parent / "dispatch"

# Bottom to top; a module may import from its own rank or below. The longest prefix decides.
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        (
            "config",
            "extensions",
            "models",
            "clock",
            "calendar",
            "text",
            "audit",
            "archive",
            "transaction",
        ),
        0,
    ),
    "letters": 1,
    "accounts": 2,
    "directory": 2,
    "signing": 2,
    "drafting": 3,
    "mail": 4,
    "issuing": 5,
    "receipts": 6,
    "inbound": 6,
    "edxml": 6,
    "amendments": 6,
    "reporting": 7,
    "processes": 8,
    "views": 9,
    "cli": 9,
}
# The app factory (the package's ``__init__``) wires everything, so it stands above every layer.
FACTORY_RANK = max(LAYERS.values()) + 1
# The only modules that may build the app: the command line (``dispatch`` runs a FlaskGroup).
FACTORY_USERS = ("cli",)


# --- reading the package ----------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One name a module takes from a module of the package, at a line of its source."""

    importer: str
    target: str  # the module imported (a dotted name inside the package)
    name: str | None  # the name taken from it (``from target import name``); None for the module
    line: int

    def where(self) -> str:
        taken = f" ({self.name})" if self.name else ""
        return f"{self.importer}:{self.line} -> {self.target}{taken}"


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package in ``root``, by dotted name (``pkg.sub.mod``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(modules: Mapping[str, Path], name: str) -> bool:
    return modules[name].name == "__init__.py"


def _absolute(modules: Mapping[str, Path], importer: str, node: ast.ImportFrom) -> str:
    """The dotted module of ``from … import``, relative imports resolved against ``importer``."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(modules, importer):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _inside(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def imports_of(root: Path) -> list[Import]:
    """Every import of one module of the package by another, with the names taken."""
    modules = module_names(root)
    package = root.name
    found: list[Import] = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _inside(package, alias.name):
                        found.append(
                            Import(importer, _known(modules, alias.name), None, node.lineno)
                        )
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(modules, importer, node)
                if not _inside(package, source):
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:
                        # A private module keeps its name: taking it is a reach like any other.
                        taken = alias.name if _private(alias.name) else None
                        found.append(Import(importer, submodule, taken, node.lineno))
                    else:
                        found.append(
                            Import(importer, _known(modules, source), alias.name, node.lineno)
                        )
        found.extend(_private_attributes(modules, importer, tree))
    return found


def _known(modules: Mapping[str, Path], name: str) -> str:
    """``name`` if it is a module of the package, else the longest module it starts with."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for an attribute chain of names, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _private_attributes(
    modules: Mapping[str, Path], importer: str, tree: ast.Module
) -> Iterator[Import]:
    """``module._name`` on a module of the package bound by an import in ``importer``."""
    package = next(iter(modules)).split(".")[0]
    bound: dict[str, str] = {}  # local name -> module of the package it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _inside(package, alias.name):
                    continue
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    # ``import pkg.a.b`` binds ``pkg``; the chain is read back in full below.
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(modules, importer, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        chain = _dotted(node.value)
        if chain is None:
            continue
        head, _, rest = chain.partition(".")
        if head not in bound:
            continue
        target = ".".join(filter(None, (bound[head], rest)))
        if target in modules and target != importer:
            yield Import(importer, target, node.attr, node.lineno)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# --- the rules ---------------------------------------------------------------------------------


def module_graph(root: Path) -> dict[str, set[str]]:
    """Which modules each module imports; the app factory (the package itself) imports nothing,
    since it stands on top and imports the rest by design."""
    package = root.name
    graph: dict[str, set[str]] = {name: set() for name in module_names(root)}
    for edge in imports_of(root):
        if edge.importer != package and edge.target != edge.importer:
            graph[edge.importer].add(edge.target)
    return graph


def import_cycles(root: Path) -> list[list[str]]:
    """One cycle (``[a, b, …, a]``) per strongly connected group of modules that import each
    other, found with Tarjan's algorithm."""
    graph = module_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: Mapping[str, set[str]], group: set[str]) -> list[str]:
    """The shortest way round from the first module of ``group`` back to itself."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group has one


def factory_imports(root: Path, allowed: Iterable[str] = FACTORY_USERS) -> list[Import]:
    """Imports of ``create_app`` (or of anything else from the app factory) outside ``allowed``
    packages: building the app is the job of the top floor only."""
    package = root.name
    allowed_packages = [f"{package}.{name}" for name in allowed]
    return [
        edge
        for edge in imports_of(root)
        if edge.target == package
        and edge.importer != package
        and edge.name is not None
        and not any(_inside(p, edge.importer) for p in allowed_packages)
    ]


def private_imports(root: Path) -> list[Import]:
    """Names starting with ``_`` that one module takes from another (a private module is
    open to the modules of its own package)."""

    def own_private_module(edge: Import) -> bool:
        parent, _, last = edge.target.rpartition(".")
        return last == edge.name and _inside(parent, edge.importer)

    return [
        edge
        for edge in imports_of(root)
        if edge.name is not None
        and _private(edge.name)
        and edge.target != edge.importer
        and not own_private_module(edge)
    ]


def cli_imports(root: Path, cli: str = "cli") -> list[Import]:
    """Imports of the command-line package from outside it (the app factory aside)."""
    package = root.name
    commands = f"{package}.{cli}"
    return [
        edge
        for edge in imports_of(root)
        if _inside(commands, edge.target)
        and not _inside(commands, edge.importer)
        and edge.importer != package
    ]


def rank_of(module: str, package: str, layers: Mapping[str, int]) -> int | None:
    """The layer of a module (the app factory above all), None when no layer names it."""
    if module == package:
        return max(layers.values()) + 1
    parts = module.split(".")[1:]
    for length in range(len(parts), 0, -1):
        rank = layers.get(".".join(parts[:length]))
        if rank is not None:
            return rank
    return None


def unranked_modules(root: Path, layers: Mapping[str, int] = LAYERS) -> list[str]:
    """Modules that no layer names (each new room must be given its place)."""
    return [name for name in module_names(root) if rank_of(name, root.name, layers) is None]


def upward_imports(root: Path, layers: Mapping[str, int] = LAYERS) -> list[Import]:
    """Imports from a higher layer than the importer's. Imports of the app factory itself are
    the business of ``factory_imports``."""
    package = root.name
    found = []
    for edge in imports_of(root):
        if edge.importer == package or edge.target == package:
            continue
        own = rank_of(edge.importer, package, layers)
        theirs = rank_of(edge.target, package, layers)
        if own is not None and theirs is not None and theirs > own:
            found.append(edge)
    return found


# What touches the database; ``letters`` renders from data alone and never imports these.
DATABASE_MODULES = ("extensions", "models", "transaction", "audit", "archive")


def database_imports(
    root: Path, room: str = "letters", database: Iterable[str] = DATABASE_MODULES
) -> list[Import]:
    """Imports by the modules of ``room`` of a module that reaches the database."""
    package = root.name
    reached = [f"{package}.{name}" for name in database]
    return [
        edge
        for edge in imports_of(root)
        if _inside(f"{package}.{room}", edge.importer)
        and any(_inside(module, edge.target) for module in reached)
    ]


def _listing(edges: Iterable[Import]) -> str:
    return "\n".join(f"  {edge.where()}" for edge in edges)


# --- the package as it is ----------------------------------------------------------------------


def test_no_module_of_the_package_is_part_of_an_import_cycle():
    cycles = import_cycles(PACKAGE)
    assert not cycles, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


def test_only_the_command_line_builds_the_app():
    found = factory_imports(PACKAGE)
    assert not found, "modules importing from the app factory (dispatch/__init__.py):\n" + (
        _listing(found)
    )


def test_no_module_reaches_for_another_modules_private_names():
    found = private_imports(PACKAGE)
    assert not found, "private names used from another module:\n" + _listing(found)


def test_nothing_outside_the_command_line_imports_it():
    found = cli_imports(PACKAGE)
    assert not found, "imports of dispatch.cli from outside it:\n" + _listing(found)


def test_every_module_has_a_layer():
    missing = unranked_modules(PACKAGE)
    assert not missing, "modules without a layer in LAYERS: " + ", ".join(missing)


def test_no_module_imports_from_a_higher_layer():
    found = upward_imports(PACKAGE)
    assert not found, "imports from a higher layer:\n" + "\n".join(
        f"  {edge.where()}  (rank {rank_of(edge.importer, 'dispatch', LAYERS)} imports rank "
        f"{rank_of(edge.target, 'dispatch', LAYERS)})"
        for edge in found
    )


def test_the_letters_stay_database_free():
    found = database_imports(PACKAGE)
    assert not found, "dispatch.letters importing the database:\n" + _listing(found)


def test_the_reader_sees_imports_inside_functions_and_relative_ones():
    """A guard on the guard: the real package's deferred imports are read (create_app's)."""
    edges = {(edge.importer, edge.target) for edge in imports_of(PACKAGE)}
    assert ("dispatch", "dispatch.views") in edges
    assert ("dispatch", "dispatch.cli") in edges
    assert ("dispatch.cli", "dispatch") in edges


# --- each rule on a package built to break it --------------------------------------------------


def write_package(root: Path, files: Mapping[str, str]) -> Path:
    """Write a package ``app`` under ``root`` from ``{relative path: source}``; returns it."""
    package = root / "app"
    for relative, source in {"__init__.py": "", **files}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    for folder in [package, *package.rglob("*")]:
        if folder.is_dir() and not (folder / "__init__.py").exists():
            (folder / "__init__.py").write_text("", encoding="utf-8")
    return package


SYNTHETIC_LAYERS = {"ground": 0, "rooms": 1, "cli": 2, "views": 2}


def test_a_cycle_through_a_deferred_import_is_named(tmp_path):
    package = write_package(
        tmp_path,
        {
            "ground.py": "from app.rooms import mail\n",
            "rooms/mail.py": "def send():\n    from . import outbox\n",
            "rooms/outbox.py": "import app.ground as g\n",
            "rooms/fine.py": "from app import ground\n",
        },
    )

    assert import_cycles(package) == [
        ["app.ground", "app.rooms.mail", "app.rooms.outbox", "app.ground"]
    ]


def test_a_package_without_cycles_passes_even_though_its_factory_imports_everything(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "def create_app():\n    from app import cli, views\n",
            "cli.py": "def main():\n    from app import create_app\n",
            "views.py": "from app import ground\n",
            "ground.py": "",
        },
    )

    assert import_cycles(package) == []
    assert factory_imports(package) == []
    assert cli_imports(package) == []


def test_building_the_app_outside_the_command_line_is_named(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "def create_app():\n    pass\n",
            "rooms/scheduler.py": "def run():\n    from app import create_app\n",
            "cli/run.py": "from app import create_app\n",
        },
    )

    found = factory_imports(package)

    assert [(e.importer, e.name) for e in found] == [("app.rooms.scheduler", "create_app")]


def test_private_names_taken_or_reached_for_are_named(tmp_path):
    package = write_package(
        tmp_path,
        {
            "ground.py": "_secret = 1\n__all__ = []\n",
            "rooms/a.py": "from app.ground import _secret, __all__\n",
            "rooms/b.py": "from app import ground\nx = ground._secret\n",
            "rooms/c.py": "import app.ground\nx = app.ground._secret\n",
            "rooms/d.py": "import app.ground as g\ny = g.__all__\n\nz = [g._secret]\n",
            "rooms/e.py": "from .. import ground\n_mine = ground\nx = _mine\n",
            "rooms/_shared.py": "",
            "rooms/f.py": "from app.rooms import _shared\n",
            "views.py": "\n\nfrom app.rooms import _shared\n",
        },
    )

    found = private_imports(package)

    assert sorted((e.importer, e.line) for e in found) == [
        ("app.rooms.a", 1),
        ("app.rooms.b", 2),
        ("app.rooms.c", 2),
        ("app.rooms.d", 4),
        ("app.views", 3),
    ]


def test_an_import_of_the_command_line_from_outside_it_is_named(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "def create_app():\n    from app import cli\n",
            "cli/__init__.py": "from app.cli import options\n",
            "cli/options.py": "",
            "rooms/devserver.py": "def run():\n    from app.cli.options import at\n",
        },
    )

    found = cli_imports(package)

    assert [(e.importer, e.target) for e in found] == [("app.rooms.devserver", "app.cli.options")]


def test_an_import_from_a_higher_layer_is_named_and_siblings_may_import_each_other(tmp_path):
    package = write_package(
        tmp_path,
        {
            "ground.py": "def f():\n    from app.rooms import mail\n",
            "rooms/mail.py": "from app.rooms import outbox\nfrom app import ground\n",
            "rooms/outbox.py": "from app.views import pages\n",
            "views/pages.py": "from app.rooms.mail import send\nfrom app import cli\n",
            "cli.py": "",
            "stray.py": "",
        },
    )

    found = upward_imports(package, SYNTHETIC_LAYERS)

    assert sorted((e.importer, e.target) for e in found) == [
        ("app.ground", "app.rooms.mail"),
        ("app.rooms.outbox", "app.views.pages"),
    ]
    assert unranked_modules(package, SYNTHETIC_LAYERS) == ["app.stray"]


def test_a_letter_module_that_reaches_the_database_is_named(tmp_path):
    package = write_package(
        tmp_path,
        {
            "config.py": "",
            "models.py": "",
            "letters/pdf.py": "from app import config\n\n\ndef f():\n    from app import models\n",
            "rooms/mail.py": "from app import models\n",
        },
    )

    found = database_imports(package)

    assert [(e.importer, e.target, e.line) for e in found] == [("app.letters.pdf", "app.models", 5)]
