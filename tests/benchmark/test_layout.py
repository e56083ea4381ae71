"""Benchmarks stay out of the product: not in the wheel, never imported by it, and matplotlib
(which only the benchmarks use) is an extra, not a core dependency."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _wheel_packages() -> list[str]:
    from setuptools import find_packages

    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return find_packages(str(ROOT), include=include)


def test_wheel_has_no_benchmarks() -> None:
    pkgs = _wheel_packages()
    assert {"workflows", "mlip_core", "database", "dft_adapters", "api"} <= set(pkgs)
    assert not [p for p in pkgs if p.split(".")[0] in ("benchmarks", "tests")]


def test_matplotlib_is_a_bench_extra() -> None:
    project = _pyproject()["project"]
    name = lambda req: req.split(">")[0].split("=")[0].split("[")[0].strip()  # noqa: E731
    assert "matplotlib" not in {name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert "matplotlib" in {name(r) for r in extras["bench"]}
    assert "matplotlib" in {name(r) for r in extras["dev"]}  # the tests plot


def test_product_never_imports_benchmarks_or_matplotlib() -> None:
    bad = []
    for pkg in sorted({p.split(".")[0] for p in _wheel_packages()}):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                else:
                    continue
                bad += [
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                    for n in names
                    if n.split(".")[0] in ("benchmarks", "matplotlib")
                ]
    assert not bad, "\n".join(bad)


def test_benchmarks_import_names_the_product_has() -> None:
    """Every product name a benchmark imports (function-level imports too) exists, so a
    restructured product breaks this test rather than ``make bench``."""
    import importlib

    ours = {p.split(".")[0] for p in _wheel_packages()}
    missing = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] not in ours:
                continue
            mod = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(mod, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}"
                    )
    assert not missing, "\n".join(missing)
