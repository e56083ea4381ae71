"""`pesflow export --format lammps`: the torchscript export plus ``run_lammps.py``, a LAMMPS MD
driver that runs without pesflow (torch, ase, numpy, lammps, mpich), with a README section.

The MD test is skipped without the ``lammps`` module, and fails in CI, which installs it."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from mlip_core import lammps, lammps_setup
from mlip_core.checkpoint import file_sha256
from tests._codes import require_lammps
from workflows import lammps_driver
from workflows.export_lammps import LAMMPS_FILES

from .test_export_torchscript import trained  # noqa: F401  (the module-scoped campaign)

SHIPPED = ("pesflow_lammps", "pesflow_lammps_setup", "pesflow_calculator")

CHILD = textwrap.dedent(
    """
    import importlib.abc, runpy, sys

    BANNED = ("pesflow", "mlip_core", "workflows", "structure_checks", "database", "api")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BANNED:
                raise ImportError(f"run_lammps.py imported {name}")
            return None

    sys.meta_path.insert(0, Block())
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code:
            raise
    bad = [m for m in sys.modules if m.split(".")[0] in BANNED]
    assert not bad, bad
    """
)


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Root names of a file's absolute imports outside ``try`` blocks, and those inside."""
    tree = ast.parse(path.read_text())
    guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for n in ast.walk(t)}
    roots: set[str] = set()
    optional: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {("." * node.level) + str(node.module).split(".")[0]}
        else:
            continue
        (optional if id(node) in guarded else roots).update(names)
    return roots, optional


def test_shipped_lammps_files_import_no_pesflow_module():
    """What ``--format lammps`` copies verbatim must run without pesflow: the standard library,
    numpy, ase, torch (through the calculator) and the other shipped files only."""
    std = set(sys.stdlib_module_names)
    roots, optional = _imports(Path(lammps_setup.__file__))
    assert roots - std == {"numpy", "ase"} and not optional
    roots, optional = _imports(Path(lammps.__file__))
    assert roots - std == {"numpy", "ase"}
    assert optional == {".lammps_setup", "pesflow_lammps_setup"}  # in pesflow / in the export
    roots, optional = _imports(Path(lammps_driver.__file__))
    assert roots - std == {"ase", "numpy", "pesflow_calculator", "pesflow_lammps"}
    assert not optional
    assert set(LAMMPS_FILES) == {"run_lammps.py", "pesflow_lammps.py", "pesflow_lammps_setup.py"}


def test_lammps_export_runs_nve_md_without_pesflow(trained, tmp_path):  # noqa: F811
    from ase.build import bulk
    from ase.io import read, write

    from pesflow.cli import app

    require_lammps()
    _, data = trained
    out = tmp_path / "lmp"
    args = ["export", "ts", "-o", str(out), "--format", "lammps", "--data-dir", str(data)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {
        "committee-float64.pt",
        "committee-float32.pt",
        "pesflow_calculator.py",
        "README.md",
        *LAMMPS_FILES,
    }
    readme = (out / "README.md").read_text()
    for name, module in LAMMPS_FILES.items():
        source = Path(sys.modules[module].__file__)
        assert (out / name).read_bytes() == source.read_bytes()  # verbatim copies
        assert file_sha256(out / name) in readme
    assert "## Molecular dynamics in LAMMPS" in readme and "fix external" in readme
    assert "No MPI parallelism" in readme and "max_devi_f min_devi_f avg_devi_f" in readme

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.03, seed=2)
    write(tmp_path / "start.xyz", atoms, format="extxyz")
    (tmp_path / "child.py").write_text(CHILD)
    steps, every = 50, 10
    cmd = [sys.executable, "-I", str(tmp_path / "child.py"), str(out / "run_lammps.py")]
    cmd += [str(tmp_path / "start.xyz"), "--ensemble", "nve", "--temperature", "300"]
    cmd += ["--steps", str(steps), "--timestep", "1.0", "--every", str(every)]
    cmd += ["--thermo-every", "5", "--trajectory", "md.extxyz", "--model-devi", "model_devi.out"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    lines = proc.stdout.splitlines()
    head = lines[0].split()
    assert head == ["step", "temp", "pe", "ke", "etotal", "press", "vol"]
    thermo = np.array([[float(v) for v in line.split()] for line in lines[1 : steps // 5 + 2]])
    assert thermo[:, 0].tolist() == list(range(0, steps + 1, 5))
    etotal = thermo[:, head.index("etotal")]
    assert np.abs(etotal - etotal[0]).max() / len(atoms) < 1e-4  # eV/atom, 50 fs NVE (seen: 8e-6)
    assert thermo[:, head.index("temp")].max() > 50  # it moved

    rows = np.loadtxt(tmp_path / "model_devi.out", comments="#", ndmin=2)
    header = (tmp_path / "model_devi.out").read_text().splitlines()[0].split()
    assert header == ["#", "step", *lammps_setup.MODEL_DEVI_COLUMNS[1:]]
    assert rows.shape == (steps // every + 1, 8)
    assert rows[:, 0].tolist() == list(range(0, steps + 1, every))
    assert np.all(np.isfinite(rows[:, 1:]))
    assert np.all(rows[:, 4] >= rows[:, 6]) and np.all(rows[:, 5] >= 0)
    frames = read(tmp_path / "md.extxyz", index=":")
    assert len(frames) == len(rows)
    assert [f.info["step"] for f in frames] == rows[:, 0].astype(int).tolist()
    assert np.allclose([f.info["max_force_dev"] for f in frames], rows[:, 4], rtol=1e-5)
    assert frames[-1].get_forces().shape == (len(atoms), 3)
