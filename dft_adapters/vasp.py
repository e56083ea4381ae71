"""VASP backend (clusters only): input through pymatgen input sets (``MPStaticSet`` by
default), output parsed with pymatgen's ``Vasprun`` (the one parser used for VASP here).

Atoms are grouped by element (stable order) for the POSCAR and the forces are mapped back to
the caller's atom order. The energy is the force-consistent ``e_fr_energy`` (TOTEN); the stress
in ``vasprun.xml`` (kBar, VASP sign) is converted to ASE's eV/Å^3 Voigt convention.
A truncated or unparsable ``vasprun.xml`` is a ``crashed`` failure; an electronic loop that hit
NELM is ``scf_unconverged``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.units import GPa

from structure_checks.outputs import vasprun_complete

from .base import RawLabel
from .execution import Executor, ProcessResult
from .files import read_text, tail
from .results import FailureKind, LabelError
from .settings import AuthorSettingsError, Scalar, Settings, check_plain_name
from .template import FileLabeler, FileRun

__all__ = ["VaspLabeler", "VaspSettings", "parse_vasprun", "species_order"]

KBAR = 0.1 * GPa  # 1 kBar in eV/Å^3


@dataclass(frozen=True)
class VaspSettings(Settings):
    """What VASP computes: a pymatgen input set plus overrides.

    ``kpoint_density`` is pymatgen's ``reciprocal_density`` (k-points per Å^-3);
    ``smearing`` is SIGMA in eV with Gaussian smearing (ISMEAR = 0); ``max_scf_steps`` is NELM;
    ``mixing`` is AMIX; ``ediff`` EDIFF in eV; ``incar`` overrides anything (applied last);
    ``potcar`` maps element -> POTCAR symbol (``user_potcar_settings``). ``input_set`` is the
    name of a pymatgen ``VaspInputSet`` subclass (nothing else is looked up); from a campaign
    author POTCAR symbols and the functional are plain names (:meth:`_check_author`).
    """

    input_set: str = "MPStaticSet"
    kpoint_density: float = 64.0
    smearing: float = 0.05
    max_scf_steps: int = 100
    mixing: float = 0.4
    ediff: float = 1e-6
    incar: Mapping[str, Scalar | list[Scalar]] = field(default_factory=dict)
    potcar: Mapping[str, str] = field(default_factory=dict)
    potcar_functional: str | None = None

    def __post_init__(self) -> None:
        if self.max_scf_steps < 1 or not 0 < self.mixing <= 1 or self.kpoint_density <= 0:
            raise ValueError(
                "VaspSettings needs max_scf_steps >= 1, 0 < mixing <= 1, kpoint_density > 0"
            )
        object.__setattr__(self, "incar", dict(self.incar))
        object.__setattr__(self, "potcar", dict(self.potcar))

    @classmethod
    def _check_author(cls, values: Mapping[str, Any]) -> None:
        """``input_set`` looks like an input-set class name, POTCAR symbols and the POTCAR
        functional are plain names, INCAR tags are plain words."""
        if "input_set" in values and not _INPUT_SET.fullmatch(str(values["input_set"])):
            raise AuthorSettingsError(
                "input_set: must name a pymatgen input set, e.g. 'MPStaticSet'"
            )
        for element, symbol in dict(values.get("potcar") or {}).items():
            check_plain_name(symbol, f"potcar.{element}")
        if values.get("potcar_functional") is not None:
            check_plain_name(values["potcar_functional"], "potcar_functional")
        for tag in dict(values.get("incar") or {}):
            if not _TAG.fullmatch(str(tag)):
                raise AuthorSettingsError(f"incar.{tag}: not an INCAR tag name")


_INPUT_SET = re.compile(r"[A-Z][A-Za-z0-9]*Set")
_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def species_order(atoms: Atoms) -> np.ndarray:
    """Permutation grouping atoms by element in order of first appearance (stable)."""
    symbols = atoms.get_chemical_symbols()
    first = {s: i for i, s in reversed(list(enumerate(symbols)))}
    return np.array(sorted(range(len(symbols)), key=lambda i: (first[symbols[i]], i)), dtype=int)


def vasprun_version(path: Path) -> str | None:
    """``vasp <version>`` from the generator block of a vasprun.xml, or ``None``."""
    with open(path, "rb") as fh:
        head = fh.read(4096).decode("latin-1")
    found = re.search(r'<i name="version" type="string">\s*([^<\s]+)', head)
    return f"vasp {found.group(1)}" if found else None


def parse_vasprun(path: Path) -> dict[str, Any]:
    """Parse ``vasprun.xml`` with pymatgen: energy (eV), forces (eV/Å), stress (eV/Å^3, ASE Voigt
    order and sign, ``None`` if absent), ``converged_electronic``, ``nelm``, ``version``.

    Raises whatever pymatgen raises on a truncated file (the caller maps it to ``crashed``).
    """
    from pymatgen.io.vasp.outputs import Vasprun

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = Vasprun(
            str(path),
            parse_dos=False,
            parse_eigen=False,
            parse_projected_eigen=False,
            parse_potcar_file=False,
            exception_on_bad_xml=True,
        )
    if not run.ionic_steps:
        raise ValueError("vasprun.xml has no ionic step")
    step = run.ionic_steps[-1]
    stress = None
    if step.get("stress") is not None:
        s = -np.asarray(step["stress"], dtype=float) * KBAR  # VASP: kBar, pressure-positive
        s = 0.5 * (s + s.T)
        stress = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return {
        "energy": float(step["e_fr_energy"]),
        "forces": np.asarray(step["forces"], dtype=float),
        "stress": stress,
        "converged_electronic": bool(run.converged_electronic),
        "nelm": run.parameters.get("NELM"),
        "n_electronic_steps": len(step.get("electronic_steps", [])),
        "version": str(run.vasp_version),
    }


class VaspLabeler(FileLabeler):
    """VASP through pymatgen (registry name ``vasp``).

    ``potcar_spec=True`` writes ``POTCAR.spec`` instead of a POTCAR (input generation without
    POTCAR files, e.g. in tests or dry runs; VASP itself needs the real POTCAR).
    """

    name: ClassVar[str] = "vasp"
    settings_cls: ClassVar[type[Settings]] = VaspSettings
    default_command: ClassVar[str | None] = "vasp_std"
    code: ClassVar[str] = "VASP"
    honours: ClassVar[frozenset[str]] = frozenset({"initial_magmoms"})

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        potcar_spec: bool = False,
        executor: Executor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, executor=executor, **kwargs)
        self.potcar_spec = potcar_spec

    def input_set(self, atoms: Atoms, settings: VaspSettings) -> Any:
        """The pymatgen input set for ``atoms`` (already grouped by element)."""
        from pymatgen.io.ase import AseAtomsAdaptor
        from pymatgen.io.vasp import sets as pmg_sets

        cls = getattr(pmg_sets, settings.input_set, None)
        if not (isinstance(cls, type) and issubclass(cls, pmg_sets.VaspInputSet)):
            raise LabelError(
                FailureKind.INVALID_INPUT, f"unknown pymatgen input set {settings.input_set!r}"
            )
        incar: dict[str, Any] = {
            "NSW": 0,
            "IBRION": -1,
            "ISIF": 2,
            "ISMEAR": 0,
            "SIGMA": settings.smearing,
            "NELM": settings.max_scf_steps,
            "AMIX": settings.mixing,
            "EDIFF": settings.ediff,
            "LWAVE": False,
            "LCHARG": False,
        }
        incar.update(settings.incar)
        kwargs: dict[str, Any] = {
            "user_incar_settings": incar,
            "user_kpoints_settings": {"reciprocal_density": settings.kpoint_density},
            "sort_structure": False,
        }
        if settings.potcar:
            kwargs["user_potcar_settings"] = dict(settings.potcar)
        if settings.potcar_functional:
            kwargs["user_potcar_functional"] = settings.potcar_functional
        structure = AseAtomsAdaptor.get_structure(atoms)
        # the structure's own moments (zeros when it has none), never the input set's
        # per-element defaults (MP's would start NiO ferromagnetic at 5 μB per Ni)
        structure.add_site_property(
            "magmom", [float(m) for m in atoms.get_initial_magnetic_moments()]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(structure, **kwargs)

    def write_inputs(
        self, atoms: Atoms, directory: Path, settings: VaspSettings | None = None
    ) -> np.ndarray:
        """Write INCAR/KPOINTS/POSCAR/POTCAR(.spec) for ``atoms``; return the atom permutation."""
        settings = settings or self.settings  # type: ignore[assignment]
        order = species_order(atoms)
        vis = self.input_set(atoms[order], settings)  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vis.write_input(str(directory), potcar_spec=self.potcar_spec)
        return order

    def check_inputs(self, atoms: Atoms, settings: Settings) -> str | None:
        """A 3D cell, and a POTCAR symbol (or POTCAR file) for every element."""
        if not atoms.pbc.all() or abs(atoms.cell.volume) < 1e-6:
            return "VASP needs a cell periodic in all three directions (molecules: put them in a box with pbc=True)"
        try:
            vis = self.input_set(atoms[species_order(atoms)], settings)  # type: ignore[arg-type]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self.potcar_spec:
                    vis.potcar_symbols  # noqa: B018 - raises for an element without a POTCAR symbol
                else:
                    vis.potcar  # noqa: B018 - raises without PMG_VASP_PSP_DIR
        except LabelError:
            raise
        except Exception as exc:
            return f"cannot build VASP inputs ({type(exc).__name__}): {exc}"
        return None

    def write_files(self, atoms: Atoms, settings: Settings, directory: Path) -> FileRun:
        """INCAR/KPOINTS/POSCAR/POTCAR(.spec) (:meth:`write_inputs`); VASP runs as
        ``<launcher> <command>`` with its output in ``vasp.out``."""
        order = self.write_inputs(atoms, directory, settings)  # type: ignore[arg-type]
        return FileRun(stdout="vasp.out", stderr="vasp.err", context=order)

    def code_version(self, text: str, directory: Path) -> str | None:
        """``vasp <version>`` from the generator block of ``vasprun.xml`` (``None`` without)."""
        vasprun = directory / "vasprun.xml"
        return vasprun_version(vasprun) if vasprun.is_file() else None

    def classify(
        self,
        directory: Path,
        proc: ProcessResult,
        text: str,
        version: str | None,
        run: FileRun,
    ) -> LabelError | None:
        """A non-zero exit or no ``vasprun.xml`` -> ``crashed`` (the SCF is judged from
        ``vasprun.xml`` in :meth:`read_output`)."""
        if proc.returncode != 0:
            err = read_text(directory / run.stderr)
            return LabelError(
                FailureKind.CRASHED,
                f"VASP exited with status {proc.returncode}:\n{tail(err or text, 10)}",
            )
        if not (directory / "vasprun.xml").is_file():
            return LabelError(FailureKind.CRASHED, f"VASP wrote no vasprun.xml:\n{tail(text, 10)}")
        return None

    def read_output(
        self,
        directory: Path,
        atoms: Atoms,
        settings: Settings,
        text: str,
        version: str | None,
        run: FileRun,
    ) -> RawLabel:
        """``vasprun.xml`` by pymatgen: truncated -> ``crashed`` (rerun), complete but
        unreadable -> ``unparsable_output``, electronic loop at NELM -> ``scf_unconverged``;
        forces mapped back to the caller's atom order."""
        vasprun = directory / "vasprun.xml"
        try:
            parsed = parse_vasprun(vasprun)
        except Exception as exc:
            if not vasprun_complete(vasprun):  # cut by a kill or a full disk: rerun
                raise LabelError(
                    FailureKind.CRASHED,
                    f"vasprun.xml is truncated ({type(exc).__name__}: {exc})",
                    version,
                ) from exc
            raise LabelError(
                FailureKind.UNPARSABLE_OUTPUT,
                f"cannot read the vasprun.xml of {version or 'an unnamed VASP version'} "
                f"({type(exc).__name__}: {exc})",
                version,
            ) from exc
        version = version or f"vasp {parsed['version']}"
        if not parsed["converged_electronic"]:
            raise LabelError(
                FailureKind.SCF_UNCONVERGED,
                f"electronic SCF not converged: {parsed['n_electronic_steps']} steps reached NELM = {parsed['nelm']}",
                code_version=version,
            )
        forces_sorted = parsed["forces"]
        if forces_sorted.shape != (len(atoms), 3):
            raise LabelError(
                FailureKind.CRASHED,
                f"vasprun.xml has forces for {forces_sorted.shape[0]} atoms, the input has {len(atoms)}",
            )
        forces = np.empty_like(forces_sorted)
        forces[run.context] = forces_sorted
        return RawLabel(
            energy=parsed["energy"],
            forces=forces,
            stress=parsed["stress"],
            code_version=version,
        )
