"""Quantum ESPRESSO ``pw.x`` backend: input written and output parsed by ASE 3.29's
``EspressoTemplate``, command built by ``EspressoProfile``, process run through the executor.

One pw.x run gives energy, forces and stress (``tprnfor``/``tstress`` set). Failures:
"convergence NOT achieved" in the output -> ``scf_unconverged``; a non-zero exit -> ``crashed``
with QE's ``Error in routine ...`` message; executor timeout -> ``timeout``. Pseudopotentials come
from ``settings.pseudopotentials`` or are picked from ``pseudo_dir`` by element and functional
(:func:`find_pseudopotential`); k-points from a density in reciprocal space.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import kptdensity2monkhorstpack
from ase.units import Ry

from .base import RawLabel
from .execution import ProcessResult
from .files import read_text, tail
from .results import FailureKind, LabelError
from .settings import (
    OPERATOR,
    AuthorSettingsError,
    Scalar,
    Settings,
    check_plain_name,
)
from .state import total_charge
from .template import FileLabeler, FileRun

__all__ = ["DEFAULT_PSEUDO_DIR", "EspressoLabeler", "EspressoSettings", "find_pseudopotential"]

DEFAULT_PSEUDO_DIR = "/usr/share/espresso/pseudo"
"""Where Debian's ``quantum-espresso-data`` puts its UPF files (``$ESPRESSO_PSEUDO`` wins)."""

_EXCLUDED_TOKENS = {"rel"}  # fully relativistic pseudopotentials need noncollinear runs


def _default_pseudo_dir() -> str:
    return os.environ.get("ESPRESSO_PSEUDO", DEFAULT_PSEUDO_DIR)


@dataclass(frozen=True)
class EspressoSettings(Settings):
    """What pw.x computes (QE units where QE has them: cutoffs in Ry).

    ``smearing`` is the Marzari–Vanderbilt width in eV (``None``: fixed occupations);
    ``kpoint_density`` is k-points per Å^-1 of reciprocal length (ASE's ``kptdensity``),
    overridden by an explicit ``kpts`` grid; ``conv_thr`` is QE's SCF threshold in Ry per cell;
    ``input_data`` adds or overrides pw.x namelist entries (flat or nested).
    ``pseudo_dir`` is *where* the files are: not hashed, and an operator setting (execution
    profile). From a campaign author, pseudopotentials are plain file names and ``input_data``
    may not name files or directories (:meth:`_check_author`).
    """

    ecutwfc: float = 40.0
    ecutrho: float | None = None
    kpoint_density: float = 3.5
    kpts: tuple[int, int, int] | None = None
    smearing: float | None = 0.1
    max_scf_steps: int = 100
    mixing: float = 0.7
    conv_thr: float = 1e-8
    functional: str = "pbe"
    pseudopotentials: Mapping[str, str] = field(default_factory=dict)
    input_data: Mapping[str, Scalar | Mapping[str, Scalar | Mapping[str, Scalar]]] = field(
        default_factory=dict
    )
    pseudo_dir: str = field(default_factory=_default_pseudo_dir, metadata=OPERATOR)

    def __post_init__(self) -> None:
        if self.ecutwfc <= 0 or self.max_scf_steps < 1 or not 0 < self.mixing <= 1:
            raise ValueError(
                "EspressoSettings needs ecutwfc > 0, max_scf_steps >= 1, 0 < mixing <= 1"
            )
        if self.kpts is not None:
            object.__setattr__(self, "kpts", tuple(int(k) for k in self.kpts))
        object.__setattr__(self, "pseudopotentials", dict(self.pseudopotentials))
        object.__setattr__(self, "input_data", dict(self.input_data))

    @classmethod
    def _check_author(cls, values: Mapping[str, Any]) -> None:
        """Pseudopotentials are plain file names (in the operator's ``pseudo_dir``);
        ``input_data`` names known namelists and plain keys, none of the path or file-name
        entries (:data:`AUTHOR_REFUSED_KEYS`), and no string with a path separator or quote."""
        for element, name in dict(values.get("pseudopotentials") or {}).items():
            check_plain_name(name, f"pseudopotentials.{element}")
        for key, value in dict(values.get("input_data") or {}).items():
            if isinstance(value, Mapping):
                if str(key).lower() not in NAMELISTS:
                    raise AuthorSettingsError(
                        f"input_data.{key}: not a pw.x namelist (one of {', '.join(NAMELISTS)})"
                    )
                for k, v in value.items():
                    _check_entry(f"input_data.{key}.{k}", str(k), v)
            else:
                _check_entry(f"input_data.{key}", str(key), value)


NAMELISTS = ("control", "system", "electrons", "ions", "cell", "fcp", "rism")
"""pw.x namelists ``input_data`` may hold."""

AUTHOR_REFUSED_KEYS = frozenset(
    {"outdir", "wfcdir", "pseudo_dir", "prefix", "input_xml_schema_file", "vdw_table_name"}
)
"""pw.x entries that name files or directories: set by pesflow or the operator, never by a
campaign author."""

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\([0-9, ]+\))?")


def _check_entry(where: str, key: str, value: Any) -> None:
    if not _KEY.fullmatch(key):
        raise AuthorSettingsError(f"{where}: not a pw.x namelist entry name")
    if key.split("(")[0].lower() in AUTHOR_REFUSED_KEYS:
        raise AuthorSettingsError(
            f"{where}: names a file or directory; pesflow and the operator set it, "
            "not a campaign config"
        )
    values = value.values() if isinstance(value, Mapping) else [value]
    for v in values:
        if isinstance(v, str) and any(c in v for c in "/\\'\""):
            raise AuthorSettingsError(f"{where}: a string with a path separator or quote")


def find_pseudopotential(
    element: str, pseudo_dir: str | Path, functional: str = "pbe"
) -> str | None:
    """Pick a UPF file for ``element`` in ``pseudo_dir`` whose name has ``functional`` as a token.

    Names look like ``Si.pbe-rrkj.UPF``: the element, then tokens split by ``.``, ``-``, ``_``.
    Fully relativistic (``rel``) files are skipped. Among matches the shortest name wins
    (then alphabetical), so the choice is deterministic. ``None`` when nothing fits.
    """
    directory = Path(pseudo_dir)
    if not directory.is_dir():
        return None
    candidates = []
    for path in directory.iterdir():
        if not path.is_file() or path.suffix.lower() != ".upf":
            continue
        head = path.name.partition(".")[0]
        if head.lower() != element.lower() and not re.fullmatch(
            rf"{re.escape(element)}[_-].*", head, flags=re.IGNORECASE
        ):
            continue
        tokens = {t.lower() for t in re.split(r"[._-]", path.stem)[1:]}
        if functional.lower() in tokens and not tokens & _EXCLUDED_TOKENS:
            candidates.append(path.name)
    if not candidates:
        return None
    return sorted(candidates, key=lambda n: (len(n), n))[0]


_VERSION = re.compile(r"Program PWSCF\s+v\.(\S+)")
_ERROR = re.compile(r"Error in routine\s+(.*?)\n(.*?)\n\s*%{10,}", re.S)


def _qe_error(text: str) -> str | None:
    match = _ERROR.search(text)
    if match is None:
        return None
    return (
        f"Error in routine {match.group(1).strip().rstrip(':')}: {' '.join(match.group(2).split())}"
    )


class EspressoLabeler(FileLabeler):
    """Quantum ESPRESSO pw.x through ASE (registry name ``espresso``)."""

    name: ClassVar[str] = "espresso"
    settings_cls: ClassVar[type[Settings]] = EspressoSettings
    default_command: ClassVar[str | None] = "pw.x"
    code: ClassVar[str] = "pw.x"
    honours: ClassVar[frozenset[str]] = frozenset({"initial_magmoms", "initial_charges"})

    def pseudopotentials_for(self, atoms: Atoms, settings: EspressoSettings) -> dict[str, str]:
        """Element -> UPF file name for the elements of ``atoms`` (raises ``LabelError``)."""
        chosen: dict[str, str] = {}
        missing = []
        for element in sorted(set(atoms.get_chemical_symbols())):
            name = settings.pseudopotentials.get(element) or find_pseudopotential(
                element, settings.pseudo_dir, settings.functional
            )
            if name is None or not (Path(settings.pseudo_dir) / name).is_file():
                missing.append(f"{element} ({name or 'no ' + settings.functional + ' UPF'})")
            else:
                chosen[element] = name
        if missing:
            raise LabelError(
                FailureKind.INVALID_INPUT,
                f"no pseudopotential for element(s) {', '.join(missing)} in {settings.pseudo_dir}",
            )
        return chosen

    def check_inputs(self, atoms: Atoms, settings: Settings) -> str | None:
        """pw.x needs a cell with a volume and a pseudopotential file per element (and, for
        initial moments, each moment within its element's valence charge)."""
        if abs(atoms.cell.volume) < 1e-6:
            return "pw.x needs a simulation cell with non-zero volume (set atoms.cell, e.g. atoms.center(vacuum=6))"
        params = self.input_parameters(atoms, settings)  # type: ignore[arg-type]
        self.magnetized(atoms, settings, params["pseudopotentials"])  # type: ignore[arg-type]
        return None

    def magnetized(
        self, atoms: Atoms, settings: EspressoSettings, pseudopotentials: Mapping[str, str]
    ) -> Atoms:
        """``atoms`` with its initial moments (μB) turned into pw.x's ``starting_magnetization``
        (the fraction of the element's valence charge, -1 to 1: m / z_valence of its UPF),
        which ASE's writer takes from the moments, one species per (element, moment) — an
        antiferromagnet gets an up and a down species. ``atoms`` itself when it has none.
        Raises ``LabelError`` (``invalid_input``) for a moment beyond the valence charge or a
        UPF without ``z_valence``."""
        moments = atoms.get_initial_magnetic_moments()
        if not np.any(moments):
            return atoms
        out = atoms.copy()
        fractions = np.zeros(len(atoms))
        for element in sorted(set(atoms.get_chemical_symbols())):
            upf = Path(settings.pseudo_dir) / pseudopotentials[element]
            found = re.search(
                r'z_valence\s*=\s*"\s*([-+\d.EeDd]+)|([-+\d.EeDd]+)\s+Z valence',
                upf.read_text(errors="replace")[:20000],
            )
            if found is None:
                raise LabelError(FailureKind.INVALID_INPUT, f"{upf}: no z_valence")
            zval = float((found.group(1) or found.group(2)).replace("D", "E"))
            mask = np.array(atoms.get_chemical_symbols()) == element
            fractions[mask] = moments[mask] / zval
            if np.any(np.abs(fractions[mask]) > 1):
                raise LabelError(
                    FailureKind.INVALID_INPUT,
                    f"initial magnetic moment {np.abs(moments[mask]).max():g} μB on {element} "
                    f"exceeds its {zval:g} valence electrons ({upf.name})",
                )
        out.set_initial_magnetic_moments(np.round(fractions, 10))
        return out

    def kpoint_grid(self, atoms: Atoms, settings: EspressoSettings) -> tuple[int, int, int] | None:
        """Monkhorst–Pack grid (1 along non-periodic directions); ``None`` for Γ only."""
        if settings.kpts is not None:
            grid = settings.kpts
        elif not atoms.pbc.any():
            return None
        else:
            grid = tuple(
                int(k) for k in kptdensity2monkhorstpack(atoms, settings.kpoint_density, even=False)
            )
        return tuple(int(k) if atoms.pbc[i] else 1 for i, k in enumerate(grid))  # type: ignore[return-value]

    def input_parameters(self, atoms: Atoms, settings: EspressoSettings) -> dict[str, Any]:
        """The keyword parameters ASE's ``espresso-in`` writer receives."""
        system: dict[str, Any] = {"ecutwfc": settings.ecutwfc}
        if settings.ecutrho is not None:
            system["ecutrho"] = settings.ecutrho
        if settings.smearing:
            system.update(occupations="smearing", smearing="mv", degauss=settings.smearing / Ry)
        else:
            system["occupations"] = "fixed"
        input_data: dict[str, Any] = {
            "control": {
                "calculation": "scf",
                "tprnfor": True,
                "tstress": True,
                "outdir": "./out",
                "prefix": "pwscf",
                "disk_io": "low",
                "pseudo_dir": str(settings.pseudo_dir),
            },
            "system": system,
            "electrons": {
                "electron_maxstep": int(settings.max_scf_steps),
                "mixing_beta": float(settings.mixing),
                "conv_thr": float(settings.conv_thr),
            },
        }
        for key, value in settings.input_data.items():
            if isinstance(value, Mapping):
                input_data.setdefault(key.lower(), {}).update(value)
            else:  # flat key: ASE's Namelist.to_nested puts it into its namelist (and wins)
                input_data[key] = value
        given = input_data["system"].get("tot_charge", input_data.get("tot_charge", 0))
        charge = total_charge(atoms, int(given) if float(given).is_integer() else 0)
        if charge:
            input_data["system"]["tot_charge"] = charge
        return {
            "input_data": input_data,
            "pseudopotentials": self.pseudopotentials_for(atoms, settings),
            "kpts": self.kpoint_grid(atoms, settings),
        }

    def write_files(self, atoms: Atoms, settings: Settings, directory: Path) -> FileRun:
        """``espresso.pwi`` by ASE's ``EspressoTemplate`` (pseudo_dir from the profile);
        pw.x runs as ``<launcher> <command> -in espresso.pwi``."""
        from ase.calculators.espresso import EspressoProfile, EspressoTemplate

        assert isinstance(settings, EspressoSettings)
        template = EspressoTemplate()
        profile = EspressoProfile(
            command=self.executor.command_line(self.default_command or "pw.x"),
            pseudo_dir=settings.pseudo_dir,
        )
        params = self.input_parameters(atoms, settings)
        resolved = {"pseudopotentials": dict(params["pseudopotentials"]), "kpts": params["kpts"]}
        inp = self.magnetized(atoms, settings, params["pseudopotentials"])
        if inp is not atoms:
            resolved["starting_magnetization"] = sorted(
                {
                    (a.symbol, float(m))
                    for a, m in zip(inp, inp.get_initial_magnetic_moments(), strict=True)
                }
            )
        template.write_input(profile, directory, inp, dict(params), ["energy", "forces", "stress"])
        return FileRun(
            args=tuple(profile.get_calculator_command(template.inputname)),
            stdout=template.outputname,
            stderr=template.errorname,
            resolved=resolved,
            context=template,
        )

    def code_version(self, text: str, directory: Path) -> str | None:
        """``pw.x <version>`` from the output's header."""
        found = _VERSION.search(text)
        return f"pw.x {found.group(1)}" if found else None

    def classify(
        self,
        directory: Path,
        proc: ProcessResult,
        text: str,
        version: str | None,
        run: FileRun,
    ) -> LabelError | None:
        """ "convergence NOT achieved" -> ``scf_unconverged`` (whatever the exit status); a
        non-zero exit -> ``crashed`` with QE's ``Error in routine`` message; no ``JOB DONE``
        -> ``crashed`` (incomplete)."""
        unconverged = re.search(r"^.*convergence NOT achieved.*$", text, re.M)
        if unconverged:
            return LabelError(FailureKind.SCF_UNCONVERGED, unconverged.group(0).strip(), version)
        if proc.returncode != 0:
            err = read_text(directory / run.stderr)
            message = (
                _qe_error(text) or _qe_error(read_text(directory / "CRASH")) or tail(err or text)
            )
            return LabelError(
                FailureKind.CRASHED,
                f"pw.x exited with status {proc.returncode}: {message}",
                version,
            )
        if "JOB DONE" not in text:
            return LabelError(FailureKind.CRASHED, f"pw.x output is incomplete:\n{tail(text, 5)}")
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
        """ASE's reader (the pw.x 6.x and 7.x layouts: fixtures of 6.7 and 7.2); anything it
        cannot read is ``unparsable_output``. The wavefunctions (``out/``) are deleted."""
        try:
            results = run.context.read_results(directory)
        except Exception as exc:  # a finished run ASE cannot read: another layout
            raise LabelError(
                FailureKind.UNPARSABLE_OUTPUT,
                f"cannot read the output of {version or 'an unnamed pw.x version'}: {exc!r}",
                version,
            ) from exc
        if results.get("forces") is None or results.get("energy") is None:
            raise LabelError(
                FailureKind.UNPARSABLE_OUTPUT,
                f"no energy or forces read from the output of "
                f"{version or 'an unnamed pw.x version'} (a layout ASE's reader does not know)",
                version,
            )
        shutil.rmtree(directory / "out", ignore_errors=True)  # wavefunctions: large, not needed
        stress = results.get("stress")
        return RawLabel(
            energy=float(results["energy"]),
            forces=np.asarray(results["forces"], dtype=float),
            stress=None if stress is None else np.asarray(stress, dtype=float),
            code_version=version or "pw.x unknown",
        )
