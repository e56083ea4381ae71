"""Label wall time per backend, measured side by side in one run (``python -m benchmarks.dft_adapters``).

Prints the median over repeats of one ``label()`` call (pre-flight + scratch handling + code)
for each backend that is available here, and each one's ratio to the EMT mock. Codes that are
not installed are reported as skipped, never as failures.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from ase import Atoms
from ase.build import bulk, molecule

from dft_adapters import Labeler, LabelResult, get_labeler


def _median_time(labeler: Labeler, atoms: Atoms, repeats: int, root: Path) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        result = labeler.label(atoms, workdir=root / f"{labeler.name}-{i}")
        times.append(time.perf_counter() - t0)
        if not isinstance(result, LabelResult):
            raise RuntimeError(
                f"{labeler.name} failed in the benchmark: {result.kind}: {result.message}"
            )
    return statistics.median(times)


def main() -> None:
    """Run the benchmark and print a table."""
    cu = bulk("Cu", cubic=True).repeat((2, 2, 2))
    cu.rattle(0.05, seed=0)
    si = bulk("Si", "diamond", a=5.43)
    si.rattle(0.05, seed=0)
    water = molecule("H2O")
    cases: list[tuple[str, Callable[[], Labeler], Atoms, int, str | None]] = [
        ("emt  Cu32", lambda: get_labeler("emt"), cu, 20, None),
        ("lj   Cu32", lambda: get_labeler("lj", sigma=2.3), cu, 20, None),
        ("morse Cu32", lambda: get_labeler("morse", r0=2.55), cu, 20, None),
        ("pyscf H2O PBE/6-31g", lambda: get_labeler("pyscf", basis="6-31g"), water, 3, None),
        (
            "espresso Si2 20 Ry 3x3x3",
            lambda: get_labeler(
                "espresso", ecutwfc=20, kpts=(3, 3, 3), pseudopotentials={"Si": "Si.pbe-rrkj.UPF"}
            ),
            si,
            3,
            "pw.x",
        ),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pesflow-bench-") as tmp:
        for name, make, atoms, repeats, exe in cases:
            if exe is not None and shutil.which(exe) is None:
                rows.append((name, None, f"skipped: {exe} not found"))
                continue
            rows.append(
                (name, _median_time(make(), atoms, repeats, Path(tmp)), f"median of {repeats}")
            )
    base = rows[0][1]
    print(f"{'backend / system':28s} {'label wall time':>16s} {'x EMT':>10s}")
    for name, seconds, note in rows:
        if seconds is None:
            print(f"{name:28s} {'-':>16s} {'-':>10s}  {note}")
        else:
            ratio = seconds / base if base else float("nan")
            print(f"{name:28s} {seconds * 1e3:13.1f} ms {ratio:10.1f}  {note}")


if __name__ == "__main__":
    main()
