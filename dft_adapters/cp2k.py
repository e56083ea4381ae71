"""CP2K backend: input built with ASE's CP2K input-section helpers, ``cp2k -i cp2k.inp -o
cp2k.out`` run through the executor (batch mode, so the launcher, timeout and scratch apply —
ASE's ``CP2K`` calculator drives an interactive ``cp2k_shell`` instead), output parsed here.

CP2K is silent about an unconverged SCF: it prints forces anyway. The output is scanned for
"SCF run NOT converged" and such a run is ``scf_unconverged``. The layout of the output changed
between releases (:data:`LAYOUTS`); a finished run in another layout is ``unparsable_output``,
naming the CP2K version, and is not rerun. Units: energy Hartree -> eV,
forces Hartree/Bohr -> eV/Å, stress GPa (CP2K sign: pressure-positive) -> ASE eV/Å^3.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.units import Ry

from .base import RawLabel
from .cp2k_output import LAYOUTS, CP2KLayout, cp2k_version, parse_cp2k_output
from .execution import ProcessResult
from .files import read_text, tail
from .results import FailureKind, LabelError
from .settings import OPERATOR, AuthorSettingsError, Settings, check_plain_name
from .state import total_charge
from .template import FileLabeler, FileRun

__all__ = ["LAYOUTS", "CP2KLabeler", "CP2KLayout", "CP2KSettings", "parse_cp2k_output"]

DEFAULT_DATA_DIR = "/usr/share/cp2k"


def _default_data_dir() -> str:
    return os.environ.get("CP2K_DATA_DIR", DEFAULT_DATA_DIR)


@dataclass(frozen=True)
class CP2KSettings(Settings):
    """What CP2K computes (Quickstep GPW).

    ``cutoff`` is the plane-wave cutoff in Ry; ``smearing`` (eV, Fermi–Dirac) switches from the
    orbital-transformation (OT) minimiser to diagonalisation with Broyden mixing, whose
    fraction is ``mixing``; ``kpts`` a Monkhorst–Pack grid (needs diagonalisation; ``None``:
    Γ only); ``inp`` extra CP2K input merged in. OT (the default) needs a band gap: a rattled
    Si2 cell at Γ did not converge in 200 OT steps here, with ``smearing=0.1`` it took 5 s.
    ``data_dir`` (not hashed; an operator setting) holds the basis and potential files. From a
    campaign author the file names are plain names in ``data_dir`` and ``inp`` may hold no
    preprocessor directive and no keyword naming a file (:meth:`_check_author`).
    """

    xc: str = "PBE"
    basis_set: str = "DZVP-MOLOPT-SR-GTH"
    potential: str = "GTH-PBE"
    basis_set_file: str = "BASIS_MOLOPT"
    potential_file: str = "GTH_POTENTIALS"
    cutoff: float = 400.0
    rel_cutoff: float = 50.0
    eps_scf: float = 1e-7
    max_scf_steps: int = 50
    mixing: float = 0.4
    smearing: float | None = None
    kpts: tuple[int, int, int] | None = None
    charge: int = 0
    multiplicity: int | None = None
    inp: str = ""
    data_dir: str = field(default_factory=_default_data_dir, metadata=OPERATOR)

    def __post_init__(self) -> None:
        if self.max_scf_steps < 1 or not 0 < self.mixing <= 1 or self.cutoff <= 0:
            raise ValueError("CP2KSettings needs max_scf_steps >= 1, 0 < mixing <= 1, cutoff > 0")
        if self.kpts is not None:
            object.__setattr__(self, "kpts", tuple(int(k) for k in self.kpts))

    @classmethod
    def _multiline_fields(cls) -> frozenset[str]:
        return frozenset({"inp"})

    @classmethod
    def _check_author(cls, values: Mapping[str, Any]) -> None:
        """Basis and potential files are plain names (in the operator's ``data_dir``); no
        ``$`` or leading ``@`` in any text (CP2K's preprocessor); ``inp`` has no preprocessor
        directive (``@INCLUDE``, ``@SET``, ``@IF`` ...), no section in
        :data:`AUTHOR_REFUSED_SECTIONS` and no keyword naming a file (``*FILE_NAME``,
        ``FILENAME``, ``PROJECT`` ...)."""
        for key in ("basis_set_file", "potential_file"):
            if key in values:
                check_plain_name(values[key], key)
        for key, value in values.items():
            if (
                isinstance(value, str)
                and key != "inp"
                and ("$" in value or value.lstrip().startswith("@"))
            ):
                raise AuthorSettingsError(f"{key}: '$' and a leading '@' are not allowed")
        inp = values.get("inp") or ""
        if not isinstance(inp, str):
            return
        if "$" in inp:
            raise AuthorSettingsError("inp: '$' (CP2K preprocessor variables) is not allowed")
        for n, raw in enumerate(inp.splitlines(), start=1):
            line = re.split(r"[#!]", raw, maxsplit=1)[0].strip()
            if not line:
                continue
            if line.startswith("@"):
                raise AuthorSettingsError(
                    f"inp: line {n}: preprocessor directive {line.split()[0]!r} is not allowed"
                )
            word = line.split()[0].upper()
            if word.startswith("&"):
                name = word[1:]
                if name in AUTHOR_REFUSED_SECTIONS:
                    raise AuthorSettingsError(f"inp: line {n}: section &{name} is not allowed")
                continue
            if _FILE_KEYWORD.search(word) or word in AUTHOR_REFUSED_KEYWORDS:
                raise AuthorSettingsError(
                    f"inp: line {n}: keyword {word} names a file; pesflow and the operator "
                    "set files, not a campaign config"
                )


AUTHOR_REFUSED_SECTIONS = frozenset({"EXT_RESTART", "FARMING", "SWARM"})
"""CP2K input sections a campaign author may not use (they read other inputs or restarts)."""

AUTHOR_REFUSED_KEYWORDS = frozenset({"PROJECT", "PROJECT_NAME", "PROGRAM_NAME", "PROGRAM"})
"""CP2K keywords a campaign author may not use besides those matching ``FILE`` names."""

_FILE_KEYWORD = re.compile(r"(^|_)FILE(_|NAME|$)")


def _kinds(atoms: Atoms) -> list[tuple[str, str, float]]:
    """(CP2K kind name, element, initial moment μB) per atom: one kind per element, or per
    (element, moment) where an element carries several moments (an antiferromagnet gets
    ``Ni1``/``Ni2``, each with its ``MAGNETIZATION``)."""
    symbols = atoms.get_chemical_symbols()
    moments = [float(m) for m in atoms.get_initial_magnetic_moments()]
    per: dict[str, list[float]] = {}
    for sym, m in zip(symbols, moments, strict=True):
        if m not in per.setdefault(sym, []):
            per[sym].append(m)
    return [
        (sym if len(per[sym]) == 1 else f"{sym}{per[sym].index(m) + 1}", sym, m)
        for sym, m in zip(symbols, moments, strict=True)
    ]


def multiplicity_of(atoms: Atoms, settings: CP2KSettings) -> int | None:
    """2S + 1 for CP2K's ``MULTIPLICITY``, or ``None`` (not fixed). Initial moments are a
    starting guess (per-kind ``MAGNETIZATION``), as in VASP and pw.x, never the spin state:
    with smearing the total moment relaxes (unrestricted, no multiplicity); without smearing
    CP2K fixes the total spin, so ``settings.multiplicity`` must say which — a structure with
    moments and neither raises ``LabelError`` (``invalid_input``)."""
    if settings.multiplicity or not np.any(atoms.get_initial_magnetic_moments()):
        return settings.multiplicity
    if settings.smearing:
        return None
    raise LabelError(
        FailureKind.INVALID_INPUT,
        "CP2K without smearing fixes the total spin: the structure's initial moments are only "
        "a starting guess, so give labeler.settings.multiplicity (2S + 1) or a smearing",
    )


def _has_entry(path: Path, element: str, name: str) -> bool:
    """True when a CP2K data file has a line ``<element> ... <name> ...``."""
    try:
        with open(path, errors="replace") as fh:
            for line in fh:
                tokens = line.split()
                if len(tokens) >= 2 and tokens[0] == element and name in tokens[1:]:
                    return True
    except OSError:
        return False
    return False


def _abort_message(text: str) -> str | None:
    """The text of CP2K's ``[ABORT]`` box, without the ASCII art."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "[ABORT]" in line:
            msg = []
            for raw in lines[i + 1 : i + 8]:
                if raw.strip().startswith("****"):
                    break
                body = raw.strip().strip("*")
                body = re.sub(r"^\s*(\\___/|\||O/\||/\| \||/ \\)", "", body).strip()
                if body:
                    msg.append(body)
            return " ".join(msg) or None
    return None


class CP2KLabeler(FileLabeler):
    """CP2K in batch mode (registry name ``cp2k``)."""

    name: ClassVar[str] = "cp2k"
    settings_cls: ClassVar[type[Settings]] = CP2KSettings
    default_command: ClassVar[str | None] = "cp2k"
    code: ClassVar[str] = "CP2K"
    honours: ClassVar[frozenset[str]] = frozenset({"initial_magmoms", "initial_charges"})

    def check_inputs(self, atoms: Atoms, settings: Settings) -> str | None:
        """A cell with volume, basis set + potential entries for every element, and (with
        initial moments) a multiplicity or a smearing."""
        assert isinstance(settings, CP2KSettings)
        if abs(atoms.cell.volume) < 1e-6:
            return "CP2K needs a simulation cell with non-zero volume (e.g. atoms.center(vacuum=6))"
        multiplicity_of(atoms, settings)  # moments need a multiplicity or a smearing
        total_charge(atoms, settings.charge)
        data = Path(settings.data_dir)
        missing = []
        for element in sorted(set(atoms.get_chemical_symbols())):
            if not _has_entry(data / settings.basis_set_file, element, settings.basis_set):
                missing.append(f"basis {settings.basis_set} for {element}")
            if not _has_entry(data / settings.potential_file, element, settings.potential):
                missing.append(f"potential {settings.potential} for {element}")
        if missing:
            return f"not found in {data}: {'; '.join(missing)}"
        return None

    def write_input(self, atoms: Atoms, settings: CP2KSettings) -> str:
        """The CP2K input file for ``atoms``."""
        from ase.calculators.cp2k import InputSection, parse_input

        root = parse_input(settings.inp)
        root.add_keyword("GLOBAL", "PROJECT cp2k")
        root.add_keyword("GLOBAL", "RUN_TYPE ENERGY_FORCE")
        root.add_keyword("GLOBAL", "PRINT_LEVEL LOW")
        root.add_keyword("FORCE_EVAL", "METHOD Quickstep")
        root.add_keyword("FORCE_EVAL/PRINT/FORCES", "_SECTION_PARAMETERS_ ON")
        if atoms.pbc.all():
            root.add_keyword("FORCE_EVAL", "STRESS_TENSOR ANALYTICAL")
            root.add_keyword("FORCE_EVAL/PRINT/STRESS_TENSOR", "_SECTION_PARAMETERS_ ON")
        dft = "FORCE_EVAL/DFT"
        root.add_keyword(
            dft, f"BASIS_SET_FILE_NAME {Path(settings.data_dir) / settings.basis_set_file}"
        )
        root.add_keyword(
            dft, f"POTENTIAL_FILE_NAME {Path(settings.data_dir) / settings.potential_file}"
        )
        charge = total_charge(atoms, settings.charge)
        if charge:
            root.add_keyword(dft, f"CHARGE {charge}")
        multiplicity = multiplicity_of(atoms, settings)
        if multiplicity or np.any(atoms.get_initial_magnetic_moments()):
            root.add_keyword(dft, "UNRESTRICTED_KOHN_SHAM ON")
        if multiplicity:
            root.add_keyword(dft, f"MULTIPLICITY {multiplicity}")
        root.add_keyword(f"{dft}/MGRID", f"CUTOFF {settings.cutoff}")
        root.add_keyword(f"{dft}/MGRID", f"REL_CUTOFF {settings.rel_cutoff}")
        root.add_keyword(f"{dft}/SCF", f"MAX_SCF {settings.max_scf_steps}")
        root.add_keyword(f"{dft}/SCF", f"EPS_SCF {settings.eps_scf}")
        if settings.smearing or settings.kpts is not None:
            root.add_keyword(f"{dft}/SCF", "ADDED_MOS 20")
            root.add_keyword(f"{dft}/SCF/DIAGONALIZATION", "ALGORITHM STANDARD")
            root.add_keyword(f"{dft}/SCF/MIXING", "METHOD BROYDEN_MIXING")
            root.add_keyword(f"{dft}/SCF/MIXING", f"ALPHA {settings.mixing}")
            if settings.smearing:
                temperature = settings.smearing / 8.617333262e-5  # eV -> K
                root.add_keyword(f"{dft}/SCF/SMEAR", "METHOD FERMI_DIRAC")
                root.add_keyword(
                    f"{dft}/SCF/SMEAR", f"ELECTRONIC_TEMPERATURE [K] {temperature:.6f}"
                )
        else:
            root.add_keyword(f"{dft}/SCF/OT", "MINIMIZER DIIS")
            root.add_keyword(f"{dft}/SCF/OT", "PRECONDITIONER FULL_SINGLE_INVERSE")
        if settings.kpts is not None:
            k = " ".join(str(int(x)) for x in settings.kpts)
            root.add_keyword(f"{dft}/KPOINTS", f"SCHEME MONKHORST-PACK {k}")
        root.add_keyword(f"{dft}/XC/XC_FUNCTIONAL", f"_SECTION_PARAMETERS_ {settings.xc}")
        if not atoms.pbc.any():
            root.add_keyword(f"{dft}/POISSON", "PERIODIC NONE")
            root.add_keyword(f"{dft}/POISSON", "PSOLVER MT")
        kinds = _kinds(atoms)
        for (kind, _, _), pos in zip(kinds, atoms.positions, strict=True):
            root.add_keyword(
                "FORCE_EVAL/SUBSYS/COORD",
                f"{kind} {pos[0]:.12f} {pos[1]:.12f} {pos[2]:.12f}",
                unique=False,
            )
        periodic = "".join(a for a, p in zip("XYZ", atoms.pbc, strict=True) if p) or "NONE"
        root.add_keyword("FORCE_EVAL/SUBSYS/CELL", f"PERIODIC {periodic}")
        for label, vec in zip("ABC", atoms.cell.array, strict=True):
            root.add_keyword(
                "FORCE_EVAL/SUBSYS/CELL", f"{label} {vec[0]:.12f} {vec[1]:.12f} {vec[2]:.12f}"
            )
        subsys = root.get_subsection("FORCE_EVAL/SUBSYS").subsections
        for name, element, moment in sorted(set(kinds)):
            kind = InputSection(name="KIND", params=name)
            kind.keywords.append(f"ELEMENT {element}")
            kind.keywords.append(f"BASIS_SET {settings.basis_set}")
            kind.keywords.append(f"POTENTIAL {settings.potential}")
            if moment:
                kind.keywords.append(f"MAGNETIZATION {moment:.10g}")
            subsys.append(kind)
        return "\n".join(["! generated by pesflow dft_adapters.cp2k", *root.write()]) + "\n"

    def write_files(self, atoms: Atoms, settings: Settings, directory: Path) -> FileRun:
        """``cp2k.inp`` (:meth:`write_input`); CP2K runs in batch mode as
        ``<launcher> <command> -i cp2k.inp -o cp2k.out``."""
        assert isinstance(settings, CP2KSettings)
        (directory / "cp2k.inp").write_text(self.write_input(atoms, settings))
        return FileRun(
            args=("-i", "cp2k.inp", "-o", "cp2k.out"),
            stdout="cp2k.stdout",
            stderr="cp2k.stderr",
            output="cp2k.out",
            resolved={"cutoff_eV": settings.cutoff * Ry},
        )

    def code_version(self, text: str, directory: Path) -> str | None:
        """``CP2K version <x>`` from the output's header."""
        return cp2k_version(text)

    def classify(
        self,
        directory: Path,
        proc: ProcessResult,
        text: str,
        version: str | None,
        run: FileRun,
    ) -> LabelError | None:
        """A non-zero exit -> ``crashed`` with CP2K's ``[ABORT]`` message; "SCF run NOT
        converged" -> ``scf_unconverged`` (CP2K prints forces anyway); no "PROGRAM ENDED AT"
        -> ``crashed`` (incomplete)."""
        if proc.returncode != 0:
            message = _abort_message(text) or tail(read_text(directory / run.stderr) or text, 10)
            return LabelError(
                FailureKind.CRASHED, f"CP2K exited with status {proc.returncode}: {message}"
            )
        if "SCF run NOT converged" in text:
            line = re.search(r"^.*SCF run NOT converged.*$", text, re.M)
            return LabelError(
                FailureKind.SCF_UNCONVERGED,
                line.group(0).strip() if line else "SCF run NOT converged",
                version,
            )
        if "PROGRAM ENDED AT" not in text:
            return LabelError(
                FailureKind.CRASHED, f"CP2K output is incomplete:\n{tail(text, 5)}", version
            )
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
        """:func:`~dft_adapters.cp2k_output.parse_cp2k_output` (layouts in :data:`LAYOUTS`)."""
        parsed = parse_cp2k_output(text, len(atoms), stress=bool(atoms.pbc.all()))
        return RawLabel(
            energy=parsed["energy"],
            forces=parsed["forces"],
            stress=parsed["stress"],
            code_version=parsed["version"],
        )
