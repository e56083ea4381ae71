"""The shape of the code: which package may import which, no import cycles inside a package,
no module in the wheel over 400 lines.

Imports are read with :mod:`ast` (nothing is imported), function-level imports included;
imports under ``if TYPE_CHECKING:`` are ignored (they never run).

Allowed arrows between packages (``docs/architecture.md``)::

    pesflow (the CLI root) -> anything
    api       -> workflows, database
    workflows -> mlip_core, dft_adapters, database
    every package -> structure_checks (a leaf: imports none of them)
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = (
    "pesflow",
    "api",
    "workflows",
    "database",
    "mlip_core",
    "dft_adapters",
    "structure_checks",
)
"""The packages the wheel ships (``[tool.setuptools.packages.find] include``)."""

ALLOWED: dict[str, set[str]] = {
    "pesflow": set(PACKAGES) - {"pesflow"},
    "api": {"workflows", "database", "structure_checks"},
    "workflows": {"mlip_core", "dft_adapters", "database", "structure_checks"},
    "database": {"structure_checks"},
    "mlip_core": {"structure_checks"},
    "dft_adapters": {"structure_checks"},
    "structure_checks": set(),
}

MAX_LINES = 400

LINE_EXEMPT: dict[str, str] = {}
"""Modules allowed over :data:`MAX_LINES`, each with the reason."""


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` (``__init__`` as the
    package's own name)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@cache
def _all_modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in PACKAGES:
        out.update(_modules(p))
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, *, top_level_only: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements of a module, skipping ``if TYPE_CHECKING:`` blocks; with
    ``top_level_only`` not those inside functions."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for c in child.orelse:
                    visit_one(c)
                continue
            visit_one(child)

    def visit_one(child: ast.AST) -> None:
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append(child)
        elif top_level_only and isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        ):
            return
        else:
            visit(child)

    visit(tree)
    return found


def _imported(module: str, path: Path, *, top_level_only: bool) -> set[str]:
    """Names of the modules ``module`` imports (absolute, dotted; for ``from X import y`` the
    submodule ``X.y`` when it is one of ours, else ``X``)."""
    tree = ast.parse(path.read_text(), str(path))
    ours = _all_modules()
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _import_nodes(tree, top_level_only=top_level_only):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
            continue
        if node.level:
            base = module.split(".")
            if not is_pkg:
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            out.add(sub if sub in ours else target)
    return out


def _package_edges() -> list[tuple[str, str, str]]:
    """(importing module, its package, imported package) for every import across packages."""
    edges = []
    for mod, path in _all_modules().items():
        pkg = mod.split(".")[0]
        for target in _imported(mod, path, top_level_only=False):
            tpkg = target.split(".")[0]
            if tpkg in PACKAGES and tpkg != pkg:
                edges.append((mod, pkg, tpkg))
    return edges


def test_package_import_graph() -> None:
    """Only the allowed arrows between packages (function-level imports included)."""
    bad = sorted(
        f"{mod} imports {tpkg}" for mod, pkg, tpkg in _package_edges() if tpkg not in ALLOWED[pkg]
    )
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles_inside_package(package: str) -> None:
    """No cycle among a package's modules, counting function-level (lazy) imports too: a lazy
    import that only hides a cycle is still one. An import of the package itself
    (``from database import Store`` inside ``database``) counts as importing its
    ``__init__``."""
    mods = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for target in _imported(mod, path, top_level_only=False):
            # ``import a.b.c`` runs a/__init__, a/b/__init__ too: the named module is enough
            if target in mods and target != mod:
                graph[mod].add(target)
    # a package's __init__ imported from one of its own modules through ``from . import x``
    # maps to ``x``; the remaining edges to ``package`` itself are real
    cycles = _cycles(graph)
    assert not cycles, f"import cycles in {package}:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_structure_checks_is_a_leaf() -> None:
    """``structure_checks`` imports no other package of ours."""
    bad = [m for m, pkg, t in _package_edges() if pkg == "structure_checks"]
    assert not bad


def test_no_module_over_400_lines() -> None:
    """No module of the wheel's packages is longer than :data:`MAX_LINES` (exemptions listed
    with their reason in :data:`LINE_EXEMPT`)."""
    long = []
    for path in _all_modules().values():
        rel = str(path.relative_to(ROOT))
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and rel not in LINE_EXEMPT:
            long.append(f"{rel}: {n} lines")
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(sorted(long))


def test_exemptions_are_still_needed() -> None:
    """An exempted module that has shrunk loses its exemption."""
    stale = [rel for rel in LINE_EXEMPT if len((ROOT / rel).read_text().splitlines()) <= MAX_LINES]
    assert not stale


# --------------------------------------------------------------------------- API -> workflows
API_WORKFLOWS_ENTRY = {"workflows.service", "workflows.settings", "workflows.cli_support"}
"""What the API may import from ``workflows``: the facade, the core settings it extends, the
command plumbing of its ``serve`` / ``token`` commands."""


def test_api_uses_the_workflows_facade() -> None:
    """``api`` reaches ``workflows`` only through :data:`API_WORKFLOWS_ENTRY` (no step internals)."""
    bad = []
    for mod, path in _modules("api").items():
        for target in _imported(mod, path, top_level_only=False):
            if target.split(".")[0] == "workflows" and target not in API_WORKFLOWS_ENTRY:
                bad.append(f"{mod} imports {target}")
    assert not bad, "\n".join(sorted(bad))


# --------------------------------------------------------------------------- one vocabulary
def test_one_vocabulary() -> None:
    """Data keys, failure kinds and label statuses: one definition
    (:mod:`structure_checks.vocabulary`) that every package agrees with."""
    import database.extxyz
    import database.models
    from dft_adapters.results import FailureKind
    from mlip_core import labelled
    from structure_checks import vocabulary as v

    assert tuple(k.value for k in FailureKind) == v.LABELER_FAILURE_KINDS
    assert (*v.LABELER_FAILURE_KINDS, v.OTHER_FAILURE) == v.FAILURE_KINDS
    assert database.models.FAILURE_KINDS is v.FAILURE_KINDS
    assert database.models.LABEL_STATUSES is v.LABEL_STATUSES
    ref = (labelled.REF_ENERGY, labelled.REF_FORCES, labelled.REF_STRESS)
    assert ref == v.REF_KEYS
    db = (database.extxyz.ENERGY_KEY, database.extxyz.FORCES_KEY, database.extxyz.STRESS_KEY)
    assert db == v.REF_KEYS


def test_api_filters_use_the_vocabulary() -> None:
    """The API's label-status and failure-kind filters accept exactly the stored values."""
    from api.routes import labels, structures
    from database import vocabulary as v

    src = (ROOT / "api" / "routes" / "labels.py").read_text()
    assert "Literal[LABEL_STATUSES]" in src and "Literal[FAILURE_KINDS]" in src
    assert "Literal[STRUCTURE_LABEL_FILTERS]" in (ROOT / "api/routes/structures.py").read_text()
    assert labels.LABEL_STATUSES is v.LABEL_STATUSES
    assert (*v.LABEL_STATUSES, "unlabelled") == structures.STRUCTURE_LABEL_FILTERS


def test_one_settings_class() -> None:
    """Every settings class reading ``PESFLOW_*`` is the core :class:`PesflowSettings` or
    extends it."""
    from api.settings import ApiSettings
    from workflows.settings import PesflowSettings

    readers = []
    for mod, path in _all_modules().items():
        if 'env_prefix="PESFLOW_"' in path.read_text():
            readers.append(mod)
    assert sorted(readers) == ["api.settings", "workflows.settings"]
    assert issubclass(ApiSettings, PesflowSettings)


def test_wheel_packages_are_the_checked_ones() -> None:
    """The packages the wheel ships (``packages.find include``) are :data:`PACKAGES`, and the
    ``pesflow`` script is the composition root's app."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = {p.split(".")[0].rstrip("*") for p in include}
    assert tops == set(PACKAGES)
    assert project["project"]["scripts"]["pesflow"] == "pesflow.cli:app"
