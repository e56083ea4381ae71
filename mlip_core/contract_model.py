"""The committee-model and model-backend contracts (see :mod:`mlip_core.contract`).

:func:`check_committee_model` holds the physics every committee must satisfy whatever its
architecture: shapes; invariance under rotation, translation and atom permutation; forces
``F = -dE/dr`` and stress ``sigma = (1/V) dE/d(strain)`` (central differences); extensivity and
batching; the ASE calculator's results. :func:`check_model_backend` trains a tiny committee
through a backend on the residual of the ZBL baseline (:mod:`mlip_core.repulsion`), checks the
learned part and the wrapped committee (with a pair inside the baseline's switching region),
saves and reloads it as a checkpoint (same predictions), and warm-starts a second one from it.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["alloy", "check_committee_model", "check_model_backend", "pushed"]


def alloy() -> Any:
    """A rattled 16-atom Cu-Au cell (3 Au), the structure the checks use by default."""
    from ase.build import bulk

    at = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    at.numbers[[1, 6, 11]] = 79
    at.rattle(0.08, seed=3)
    return at


def pushed(atoms: Any, i: int, j: int, distance: float) -> Any:
    """A copy of ``atoms`` with atom ``i`` moved along the line to atom ``j`` (nearest image)
    until they are ``distance`` Å apart."""
    out = atoms.copy()
    vec = atoms.get_distance(i, j, mic=True, vector=True)
    out.positions[i] += vec * (1.0 - distance / float(np.linalg.norm(vec)))
    return out


def _run(model: Any, atoms: Any, stress: bool = True) -> tuple[np.ndarray, np.ndarray, Any]:
    from .neighbors import build_graph

    idx = {z: i for i, z in enumerate(model.species)}
    g = build_graph(atoms, model.cutoff, idx)
    out = model.predict(g, compute_stress=stress)
    return (
        out.energy.detach().double().numpy(),
        out.forces.detach().double().numpy(),
        None if out.stress is None else out.stress.detach().double().numpy(),
    )


def _close(a: Any, b: Any, what: str, atol: float, rtol: float = 0.0) -> None:
    if not np.allclose(a, b, atol=atol, rtol=rtol):
        worst = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        raise AssertionError(f"{what}: differ by up to {worst:.3g} (atol {atol:g})")


def check_committee_model(model: Any, atoms: Any = None, *, tol: float = 1e-6) -> None:
    """Check a :class:`mlip_core.model.CommitteeModel` (float64 recommended; ``tol`` scales the
    tolerances for float32 models). ``atoms``: a periodic structure of the model's species
    (default :func:`alloy`, which needs Cu and Au)."""
    from scipy.spatial.transform import Rotation

    from .calculator import CommitteeCalculator
    from .committee import CommitteeModel

    assert isinstance(model, CommitteeModel), f"{model!r} does not implement CommitteeModel"
    at = atoms if atoms is not None else alloy()
    k = model.n_members
    e0, f0, s0 = _run(model, at)
    assert e0.shape == (k, 1) and f0.shape == (k, len(at), 3), "energy (K, 1), forces (K, N, 3)"
    assert s0 is not None and s0.shape == (k, 1, 3, 3), "stress (K, B, 3, 3) on a periodic cell"
    assert np.isfinite(e0).all() and np.isfinite(f0).all() and np.isfinite(s0).all()
    assert k == 1 or np.ptp(e0[:, 0]) > 0, "committee members must differ"
    rot = Rotation.random(random_state=2).as_matrix()
    turned = at.copy()
    turned.set_cell(at.cell.array @ rot.T)
    turned.positions = at.positions @ rot.T + np.array([0.3, -0.2, 1.1])
    e1, f1, s1 = _run(model, turned)
    _close(e1, e0, "energy after a rotation and translation", 100 * tol)
    _close(f1, f0 @ rot.T, "forces after a rotation (must rotate with it)", 100 * tol)
    _close(s1, rot @ s0 @ rot.T, "stress after a rotation", 100 * tol)
    perm = np.random.default_rng(0).permutation(len(at))
    e2, f2, _ = _run(model, at[perm])
    _close(e2, e0, "energy after permuting atoms", 100 * tol)
    _close(f2, f0[:, perm], "forces after permuting atoms", 100 * tol)
    h = 1e-4 if tol > 1e-6 else 1e-5

    def energy(a: Any) -> np.ndarray:
        return _run(model, a, stress=False)[0][:, 0]

    for i, d in [(0, 0), (len(at) // 2, 2), (len(at) - 1, 1)]:
        p, m = at.copy(), at.copy()
        p.positions[i, d] += h
        m.positions[i, d] -= h
        _close(f0[:, i, d], -(energy(p) - energy(m)) / (2 * h), "F = -dE/dr", tol, 10 * tol)
    eps = np.zeros((3, 3))
    eps[0, 2] = eps[2, 0] = h
    p, m = at.copy(), at.copy()
    p.set_cell(at.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    m.set_cell(at.cell.array @ (np.eye(3) - eps), scale_atoms=True)
    fd = (energy(p) - energy(m)) / (2 * h) / at.get_volume() / 2
    scale = float(np.abs(s0).max())  # eV/Å^3: a shear derivative is judged against it
    _close(s0[:, 0, 0, 2], fd, "stress = dE/dstrain / V", tol / 100 + 1e-4 * scale, 10 * tol)
    sup = at.repeat((1, 1, 2))
    e3, _, _ = _run(model, sup, stress=False)
    _close(e3, 2 * e0, "energy of a doubled cell (extensivity)", 200 * tol)
    eb, fb, _ = _run(model, [at, sup], stress=False)
    _close(eb[:, 0], e0[:, 0], "batched energy", 100 * tol)
    _close(fb[:, : len(at)], f0, "batched forces", 100 * tol)
    calc_at = at.copy()
    calc_at.calc = CommitteeCalculator(model)
    e = calc_at.get_potential_energy()
    members = calc_at.calc.get_property("energy_committee", calc_at)
    assert abs(e - float(np.mean(members))) < 1e-8, "calculator energy = committee mean"
    assert calc_at.get_stress().shape == (6,), "calculator stress in Voigt form"


def _labelled(n: int) -> list[Any]:
    from ase.build import bulk
    from ase.calculators.emt import EMT

    out = []
    for i in range(n):
        a = bulk("Cu", "fcc", a=3.61 * (1 + 0.01 * (i % 3 - 1)), cubic=True)
        a.rattle(0.05, seed=i)
        a.calc = EMT()
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces()
        a.info["REF_stress"] = a.get_stress()
        a.calc = None
        out.append(a)
    return out


def check_model_backend(
    backend: Any,
    workdir: str | Path | None = None,
    options: dict[str, Any] | None = None,
    *,
    n_members: int = 2,
    epochs: int = 2,
) -> None:
    """Train a ``n_members`` committee of the backend on the residual of the ZBL baseline of
    6 labelled Cu cells (EMT) for ``epochs`` epochs
    (:func:`mlip_core.backends.train_with_repulsion`), check its learned part and the wrapped
    committee
    (:func:`check_committee_model` in float64, on a Cu cell and on one with a pair at 1.6 Å),
    save it as a checkpoint and load it back (same predictions, the backend and the baseline
    recorded), and warm-start a second training from it.
    ``options``: the backend's hyper-parameters (keep them tiny)."""
    from .backends import BACKENDS, ModelBackend, TrainRequest, train_with_repulsion
    from .checkpoint import load_committee, save_committee
    from .plugins import missing_members
    from .repulsion import WithRepulsion, ZBLRepulsion
    from .training import TrainingConfig

    assert isinstance(backend, ModelBackend), (
        f"{backend!r} does not implement ModelBackend: lacks "
        f"{missing_members(backend, ModelBackend)}"
    )
    name = f"_contract_{backend.name}"
    BACKENDS.register(name, backend, replace=True)
    root = Path(workdir or tempfile.mkdtemp(prefix="pesflow-backend-"))
    try:
        opts = backend.check_options(options or {})
        assert isinstance(opts, dict), "check_options returns a dict"
        try:
            backend.check_options({"surely_not_an_option": 1})
        except ValueError as exc:
            assert "surely_not_an_option" in str(exc), "the error names the bad key"
        else:
            raise AssertionError("an unknown option must raise ValueError")
        data = _labelled(6)
        tc = TrainingConfig(max_epochs=epochs, batch_size=2, seed=1, patience=epochs)
        req = TrainRequest(data, [29], n_members, 4.0, opts, tc, workdir=root / "first")
        repulsion = ZBLRepulsion([29], cutoff=4.0)
        result = train_with_repulsion(backend, req, repulsion)
        model = result.model
        assert isinstance(model, WithRepulsion), "the trained committee carries the baseline"
        assert model.n_members == n_members, f"{model.n_members} members, asked {n_members}"
        assert (
            result.epochs >= 1 and result.wall_time_s >= 0 and isinstance(result.stop_reason, str)
        )
        cu = data[0].copy()
        close = pushed(cu, 0, 1, 1.6)  # a pair inside the switching region (1.32-1.98 Å)
        as64 = copy.deepcopy(model).double() if hasattr(model, "double") else model
        check_committee_model(as64.learned, cu)
        check_committee_model(as64, close)
        path = root / "committee.pt"
        sha = save_committee(model, path, {"contract": True}, backend=name)
        loaded, meta = load_committee(path, expected_sha256=sha)
        assert meta["backend"] == name, "the checkpoint records its backend"
        assert isinstance(loaded, WithRepulsion), "the checkpoint keeps the baseline"
        _close(_run(loaded, close)[0], _run(model, close)[0], "energies after save/load", 1e-6)
        warm = train_with_repulsion(
            backend,
            TrainRequest(data, [29], n_members, 4.0, opts, tc, warm=loaded, workdir=root / "warm"),
            repulsion,
        )
        assert warm.model.n_members == n_members, "warm start keeps the committee size"
    finally:
        BACKENDS.unregister(name)
