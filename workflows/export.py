"""Export a campaign: its training set and validation set as extended XYZ (``REF_energy``,
``REF_forces``, ``REF_stress`` keys, readable by plain ASE, MACE and NequIP), the latest
committee checkpoint, and a small Python loader that returns it as an ASE calculator."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .context import CampaignFailedError, Context
from .train import load_model, training_data

__all__ = ["ExportResult", "export_campaign", "load_exported_calculator"]

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
    """Paths written by :func:`export_campaign` and how many frames each dataset has."""

    dataset: Path
    validation: Path
    checkpoint: Path | None
    loader: Path | None
    n_train: int
    n_validation: int


def export_campaign(ctx: Context, out_dir: str | Path) -> ExportResult:
    """Write ``dataset.extxyz``, ``validation.extxyz``, ``committee.pt`` (the latest model,
    sha256-checked against the database) and ``load_calculator.py`` into ``out_dir``."""
    import ase.io

    model = ctx.store.latest_model(ctx.campaign_id)
    if model is not None:
        try:  # before anything is written: a corrupt checkpoint leaves no half export behind
            load_model(ctx, model)
        except (FileNotFoundError, ValueError) as exc:
            raise CampaignFailedError(
                f"cannot export model {model.id}: {' '.join(str(exc).split())}; "
                f"`pesflow resume {ctx.handle.name}` rebuilds it from its recorded inputs"
            ) from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, val, _ = training_data(ctx)
    for atoms in val:
        atoms.info["config_type"] = "validation"
    ds, vs = out / "dataset.extxyz", out / "validation.extxyz"
    ase.io.write(ds, train, format="extxyz")
    ase.io.write(vs, val, format="extxyz")
    ckpt = loader = None
    if model is not None:
        ckpt = out / "committee.pt"
        shutil.copyfile(ctx.resolve(model.checkpoint_uri), ckpt)
        loader = out / "load_calculator.py"
        loader.write_text(LOADER.format(name=ctx.handle.name, sha=model.checkpoint_sha256))
    return ExportResult(ds, vs, ckpt, loader, len(train), len(val))


def load_exported_calculator(out_dir: str | Path, **kwargs):
    """The calculator of an export directory (what its ``load_calculator.py`` returns)."""
    from mlip_core.checkpoint import load_calculator

    return load_calculator(Path(out_dir) / "committee.pt", **kwargs)
