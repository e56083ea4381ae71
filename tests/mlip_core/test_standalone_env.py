"""The exported committee runs in a fresh Python environment where pesflow is not importable,
with only torch, ase and numpy (and what they need), and reproduces the energies, forces,
stress and deviations computed by pesflow in this environment (1e-10 float64, 1e-5 float32).

Two environments: a ``venv --without-pip`` whose only extra path is a directory of links to
exactly the installed distributions of torch, ase and numpy and their requirements (seconds,
default suite), and a real ``pip install torch==<this torch> ase numpy`` into a new venv
(~40 s on 2 cores from a local wheelhouse: ``slow``)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from mlip_core import standalone_calculator
from mlip_core.calculator import CommitteeCalculator
from mlip_core.standalone import save_scripted, script_committee
from mlip_core.standalone_check import relative_differences

from .test_standalone import SYMBOLS, _model, _structures

TOL = {"float64": 1e-10, "float32": 1e-5}

CHILD = textwrap.dedent(
    """
    import importlib, sys
    for name in ("pesflow", "mlip_core", "workflows", "structure_checks", "vesin"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        raise SystemExit(f"{name} is importable in the fresh environment")
    export = sys.argv[1]
    sys.path.insert(0, export)
    import numpy as np
    from ase import Atoms
    from pesflow_calculator import PesflowCalculator

    data = np.load(f"{export}/structures.npz")
    out = {}
    for dtype in ("float64", "float32"):
        calc = PesflowCalculator(f"committee-{dtype}.pt")
        for s in range(int(data["n"])):
            atoms = Atoms(
                numbers=data[f"numbers{s}"], positions=data[f"positions{s}"],
                cell=data[f"cell{s}"], pbc=data[f"pbc{s}"],
            )
            calc.calculate(atoms, ["energy"])
            for key, value in calc.results.items():
                out[f"{dtype}/{s}/{key}"] = np.asarray(value)
    np.savez(f"{export}/results.npz", **out)
    print("ok", sys.version.split()[0], len(sys.path))
    """
)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, dict]:
    """An export folder (both precisions, the calculator, the structures) and pesflow's
    results on those structures, keyed ``dtype/structure/result``."""
    out = tmp_path_factory.mktemp("export")
    model = _model(2, True)
    structures = _structures()
    arrays: dict[str, np.ndarray] = {"n": np.asarray(len(structures))}
    for s, atoms in enumerate(structures):
        arrays[f"numbers{s}"] = atoms.numbers
        arrays[f"positions{s}"] = atoms.positions
        arrays[f"cell{s}"] = atoms.cell.array
        arrays[f"pbc{s}"] = atoms.pbc
    np.savez(out / "structures.npz", **arrays)
    shutil.copyfile(standalone_calculator.__file__, out / "pesflow_calculator.py")
    (out / "child.py").write_text(CHILD)
    reference = {}
    for name in ("float64", "float32"):
        dtype = getattr(torch, name)
        save_scripted(script_committee(model, dtype), out / f"committee-{name}.pt")
        calc = CommitteeCalculator(copy.deepcopy(model).to(dtype))
        for s, atoms in enumerate(structures):
            calc.calculate(atoms.copy(), ["energy"])
            reference[f"{name}/{s}"] = dict(calc.results)
    assert len(structures) == 5 and len(SYMBOLS) == 11
    return out, reference


def _run_child(python: Path, out: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1"}
    # -I: no PYTHONPATH, no user site, not the script's or the current directory
    proc = subprocess.run(
        [str(python), "-I", str(out / "child.py"), str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok"), proc.stdout


def _check(out: Path, reference: dict) -> dict[str, float]:
    got = np.load(out / "results.npz")
    worst: dict[str, float] = {}
    for key, ref in reference.items():
        dtype = key.split("/")[0]
        cand = {k.split("/")[2]: got[k] for k in got.files if k.startswith(key + "/")}
        assert set(ref) <= set(cand), set(ref) - set(cand)
        diffs = relative_differences(ref, cand)
        assert max(diffs.values()) <= TOL[dtype], (key, diffs)
        worst[dtype] = max(worst.get(dtype, 0.0), *diffs.values())
    return worst


def _requirements(names: tuple[str, ...]) -> set[str]:
    """The installed distributions ``names`` need at run time (closure, no extras)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for req in metadata.requires(name) or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def _links_venv(root: Path) -> Path:
    """A ``venv --without-pip`` seeing only torch, ase, numpy and their requirements,
    through one ``.pth`` line naming a directory of links to those distributions."""
    farm = root / "deps"
    farm.mkdir()
    for name in sorted(_requirements(("torch", "ase", "numpy"))):
        dist = metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops - {"..", "__pycache__"}:
            src = Path(str(dist.locate_file(top)))
            if src.exists() and not (farm / top).exists():
                (farm / top).symlink_to(src)
    assert not any(
        p.name.startswith(("pesflow", "mlip_core", "__editable__")) for p in farm.iterdir()
    )
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    (Path(site) / "standalone_deps.pth").write_text(f"{farm}\n")
    return python


def test_export_runs_without_pesflow_in_a_fresh_venv(export, tmp_path: Path):
    out, reference = export
    python = _links_venv(tmp_path)
    _run_child(python, out)
    worst = _check(out, reference)
    assert worst["float64"] <= 1e-10 and worst["float32"] <= 1e-5


def _offline_index_args() -> list[str]:
    """``--index-url``/``--extra-index-url`` of the local (file://) indexes pip is configured
    with, so the install never reaches the network; [] when there are none."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    )
    match = re.search(r"extra-index-url='([^']*)'", proc.stdout)
    urls = match.group(1).split() if match else []
    if not urls or not all(u.startswith("file://") for u in urls):
        return []
    return ["--index-url", urls[0], *(a for u in urls[1:] for a in ("--extra-index-url", u))]


@pytest.mark.slow
def test_export_runs_after_a_real_pip_install(export, tmp_path: Path):
    """``pip install torch==<this torch> ase numpy`` into a new venv (local wheels when pip is
    configured with them), then the same check."""
    out, reference = export
    venv = tmp_path / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        python = venv / "bin" / "python"
        pin = f"torch=={torch.__version__.split('+')[0]}"
        args = ["install", "-q", *_offline_index_args(), pin, "ase", "numpy"]
        proc = subprocess.run(
            [str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        _run_child(python, out)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~1.3 GB
    worst = _check(out, reference)
    assert worst["float64"] <= 1e-10 and worst["float32"] <= 1e-5
