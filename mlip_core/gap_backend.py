"""Optional GAP backend (``pip install 'pesflow[gap]'``: quippy-ase, which ships ``gap_fit``).

Training: QUIP's own ``gap_fit`` program (the binary next to ``quippy/__init__.py``), run as a
subprocess with a timeout, on the campaign's labels written as extended XYZ (``REF_energy``
eV, ``REF_forces`` eV/Å and ``REF_virial`` = -V·σ, a 3x3 in eV, from ``REF_stress``). The
descriptors are a 2-body ``distance_2b`` term (sparse points uniform in r) plus SOAP (sparse
points by CUR, dot-product kernel to the power ``zeta``). The isolated-atom energies are
``e0`` when given, else gap_fit's ``e0_method=average``. A committee of K members is K fits
that differ by their random seed (``rnd_seed``: the CUR / uniform sparse choices); GAP has no
warm start, so every iteration refits on all labels.

Prediction: quippy's ``Potential`` (an ASE calculator) with ``calc_args=local_gap_variance``.

Uncertainty (what the trust window and selection read): GAP's own **predictive variance**,
not the spread of the members. quippy gives per atom ``v_i`` = the GP variance of atom i's
local energy, eV². pesflow uses ``u_i = sqrt(mean_k v_i^(k))`` (eV) as the per-atom
uncertainty. It reaches the calculator as ``uncertainty`` / ``max_uncertainty``
(``results["uncertainty_source"] == "model"``), which the monitor judges and records as the
frame's ``uncertainty``; ``forces_std`` / ``max_force_dev`` stay the members' force spread
(eV/Å). ``u_i`` is an energy scale: the thresholds ``trust.lo`` / ``hi`` are in eV for this
backend (typically 1e-3 - 1e-1), or calibrated (``trust.calibrated``): the conformal
calibration (:mod:`mlip_core.calibration`) turns it into a force-error bound in eV/Å. ``forces_committee`` still holds the K members.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends import TrainRequest, check_dataclass_options
from .plugins import check_field_bounds

__all__ = ["GapBackend", "GapOptions", "GapTrainingError", "gap_fit_command"]


class GapTrainingError(RuntimeError):
    """gap_fit failed, timed out or wrote no model (the message ends with its stderr)."""


def _quippy_dir() -> Path:
    try:
        import quippy
    except ImportError as exc:
        raise ImportError("the GAP backend needs quippy-ase: pip install 'pesflow[gap]'") from exc
    return Path(quippy.__file__).parent


@dataclass
class GapOptions:
    """Hyper-parameters of the GAP fit (gap_fit's names; defaults sensible for a metal).

    The descriptor cutoff is the model's ``cutoff`` (``model.cutoff``).

    Attributes:
        l_max, n_max, atom_sigma: SOAP expansion (angular, radial, Gaussian width Å).
        zeta: power of the SOAP dot-product kernel.
        delta: SOAP energy scale, eV. n_sparse: SOAP sparse points (CUR).
        use_2b: add the 2-body term; delta_2b (eV), theta_2b (Å), n_sparse_2b (uniform).
        sigma_energy (eV/atom), sigma_force (eV/Å), sigma_virial (eV/atom): default_sigma.
        e0: isolated-atom energies, eV, by symbol or atomic number (``{Cu: -0.01}``);
            empty: gap_fit's ``e0_method=average``.
        timeout_s: wall-clock limit of one gap_fit run.
    """

    l_max: int = field(default=6, metadata={"ge": 1, "le": 12})
    n_max: int = field(default=8, metadata={"ge": 1, "le": 16})
    atom_sigma: float = field(default=0.5, metadata={"gt": 0})
    zeta: float = field(default=4.0, metadata={"gt": 0})
    delta: float = field(default=0.2, metadata={"gt": 0})
    n_sparse: int = field(default=400, metadata={"ge": 1})
    use_2b: bool = True
    delta_2b: float = field(default=0.5, metadata={"gt": 0})
    theta_2b: float = field(default=1.0, metadata={"gt": 0})
    n_sparse_2b: int = field(default=20, metadata={"ge": 1})
    sigma_energy: float = field(default=0.002, metadata={"gt": 0})
    sigma_force: float = field(default=0.05, metadata={"gt": 0})
    sigma_virial: float = field(default=0.05, metadata={"gt": 0})
    e0: dict = field(default_factory=dict)
    timeout_s: float = field(default=1800.0, metadata={"gt": 0})

    def __post_init__(self) -> None:
        check_field_bounds(self)
        from ase.data import atomic_numbers, chemical_symbols

        if not isinstance(self.e0, Mapping):
            raise ValueError(f"e0 must be a mapping element -> eV, got {self.e0!r}")
        for key, value in self.e0.items():
            ok = (isinstance(key, int) and 0 < key < len(chemical_symbols)) or (
                key in atomic_numbers
            )
            if not ok or isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"e0: {key!r}: {value!r} is not element -> energy (eV)")


def _symbol(key: Any) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[key] if isinstance(key, int) else str(key)


def gap_fit_command(
    opts: Mapping[str, Any], cutoff: float, xyz: Path, out: Path, seed: int, stress: bool
) -> list[str]:
    """gap_fit's argument list for one member (``out``: the model file, sparse points inside)."""
    soap = (
        f"soap l_max={opts['l_max']} n_max={opts['n_max']} cutoff={cutoff} "
        f"atom_sigma={opts['atom_sigma']} zeta={opts['zeta']} delta={opts['delta']} "
        f"n_sparse={opts['n_sparse']} sparse_method=cur_points covariance_type=dot_product "
        f"add_species=T"
    )
    gap = soap
    if opts["use_2b"]:
        gap = (
            f"distance_2b cutoff={cutoff} covariance_type=ard_se delta={opts['delta_2b']} "
            f"theta_uniform={opts['theta_2b']} sparse_method=uniform "
            f"n_sparse={opts['n_sparse_2b']} add_species=T : " + soap
        )
    sig = f"{opts['sigma_energy']} {opts['sigma_force']} {opts['sigma_virial']} 0.0"
    cmd = [
        str(_quippy_dir() / "gap_fit"),
        f"at_file={xyz}",
        "gap={" + gap + "}",
        "default_sigma={" + sig + "}",
        "energy_parameter_name=REF_energy",
        "force_parameter_name=REF_forces",
        f"gp_file={out}",
        "sparse_separate_file=F",
        f"rnd_seed={seed}",
    ]
    if stress:
        cmd.append("virial_parameter_name=REF_virial")
    if opts["e0"]:
        cmd.append("e0={" + ":".join(f"{_symbol(k)}:{v}" for k, v in opts["e0"].items()) + "}")
    else:
        cmd.append("e0_method=average")
    return cmd


def _write_labels(path: Path, structures: list[Any]) -> bool:
    """The labels as extended XYZ for gap_fit; True when any carries a virial."""
    import ase.io
    from ase.stress import voigt_6_to_full_3x3_stress

    from .labelled import read_labels

    out, any_virial = [], False
    for i, atoms in enumerate(structures):
        energy, forces, stress = read_labels(atoms, i)
        b = atoms.copy()
        b.calc, b.constraints = None, []
        b.info = {"REF_energy": float(energy)}
        b.arrays = {k: v for k, v in b.arrays.items() if k in ("numbers", "positions")}
        b.arrays["REF_forces"] = np.asarray(forces, dtype=float)
        if stress is not None and atoms.pbc.all() and atoms.get_volume() > 0:
            virial = -atoms.get_volume() * voigt_6_to_full_3x3_stress(np.asarray(stress))
            b.info["REF_virial"] = virial.ravel()  # 3x3, eV
            any_virial = True
        out.append(b)
    ase.io.write(path, out, format="extxyz")
    return any_virial


def run_gap_fit(cmd: list[str], workdir: Path, timeout_s: float) -> None:
    """Run gap_fit; :class:`GapTrainingError` on failure or timeout (with its stderr tail)."""
    log = workdir / "gap_fit.out"
    try:
        r = subprocess.run(
            cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise GapTrainingError(
            f"gap_fit ran past its {timeout_s:g} s timeout in {workdir}"
        ) from exc
    except OSError as exc:
        raise GapTrainingError(f"gap_fit could not start ({cmd[0]}): {exc}") from exc
    log.write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
        raise GapTrainingError(f"gap_fit exited with {r.returncode} (log {log}):\n{tail}")


@dataclass
class GapResult:
    """Outcome of :meth:`GapBackend.train` (the fields of a ``TrainingResult`` callers use)."""

    model: Any
    epochs: int
    wall_time_s: float
    stop_reason: str
    time_capped: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class GapBackend:
    """K GAP members, each fitted by ``gap_fit`` (QUIP) with its own random seed."""

    name: str = "gap"
    options_cls: type = field(default=GapOptions, repr=False)
    own_uncertainty: str = "eV"  # the GP's sd of the local energy, not a force deviation

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options checked against :class:`GapOptions`; ``ValueError`` also when quippy-ase is
        not installed here (a config naming this backend cannot run)."""
        import importlib.util

        if importlib.util.find_spec("quippy") is None:
            raise ValueError("model backend 'gap' needs quippy-ase: pip install 'pesflow[gap]'")
        return check_dataclass_options(GapOptions, options, self.name)

    def train(self, request: TrainRequest) -> GapResult:
        """Fit ``request.n_members`` GAPs on all labels (``request.warm`` is not used: a GP
        refits exactly on the grown data set).

        Raises:
            GapTrainingError: gap_fit failed, timed out or wrote no model.
        """
        opts = self.check_options(request.options)
        t0 = time.perf_counter()
        root = Path(request.workdir or tempfile.mkdtemp(prefix="pesflow-gap-"))
        root.mkdir(parents=True, exist_ok=True)
        xyz = root / "train.xyz"
        tc = request.training
        stress = _write_labels(xyz, list(request.structures)) and tc.stress_weight != 0
        xmls = []
        for k in range(request.n_members):
            out = root / f"gap{k}.xml"
            seed = (int(tc.seed) + 7919 * k) % 2**31
            cmd = gap_fit_command(opts, request.cutoff, xyz, out, seed, stress)
            run_gap_fit(cmd, root, float(opts["timeout_s"]))
            if not out.is_file():
                raise GapTrainingError(f"gap_fit for member {k} wrote no {out}")
            xmls.append(out.read_text())
            if request.callback is not None:
                request.callback({"member": float(k)})
        from .gap_model import GapCommittee  # torch: only where a model is built

        model = GapCommittee(xmls, list(request.species), request.cutoff)
        return GapResult(
            model=model,
            epochs=1,
            wall_time_s=time.perf_counter() - t0,
            stop_reason=f"gap_fit: {request.n_members} exact sparse-GP fits",
        )

    def to_payload(self, model: Any) -> dict[str, Any]:
        return {
            "gap_xml": list(model.xmls),
            "species": list(model.species),
            "cutoff": float(model.cutoff),
            "quippy": _quippy_version(),
        }

    def from_payload(self, payload: Mapping[str, Any]) -> Any:
        from .gap_model import GapCommittee

        return GapCommittee(list(payload["gap_xml"]), list(payload["species"]), payload["cutoff"])


def _quippy_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("quippy-ase")
    except PackageNotFoundError:  # pragma: no cover
        return os.environ.get("QUIPPY_VERSION", "unknown")
