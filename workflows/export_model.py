"""``pesflow export --format torchscript``: the committee as a potential that leaves pesflow,
and the README written into every export directory.

The torchscript export writes ``committee-float64.pt`` and ``committee-float32.pt`` (the
latest model scripted by :func:`mlip_core.standalone.script_committee`, ZBL baseline
included), ``pesflow_calculator.py`` (:mod:`mlip_core.standalone_calculator`: an ASE calculator
needing only torch, ase and numpy) and ``README.md``. Before the README is written the export
checks itself: the shipped calculator, loaded from the directory, must equal pesflow's
``CommitteeCalculator`` on a few campaign frames and a slab and a cluster cut from one
(:mod:`mlip_core.standalone_check`) to the tolerance of its precision; the measured
differences go into the README.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mlip_core.checkpoint import file_sha256

from .context import CampaignFailedError, Context

__all__ = ["CALCULATOR_FILE", "MODEL_FILES", "export_torchscript", "write_readme"]

CALCULATOR_FILE = "pesflow_calculator.py"
MODEL_FILES = {"float64": "committee-float64.pt", "float32": "committee-float32.pt"}
_CHECK_FRAMES = 2  # campaign frames the export is checked on (each also as slab and cluster)


def _pesflow_version() -> str:
    try:
        return version("pesflow")
    except PackageNotFoundError:
        return "unknown"


def provenance(ctx: Context, record: Any | None) -> dict[str, Any]:
    """Campaign and model provenance (plain data) of an export."""
    out: dict[str, Any] = {
        "campaign": ctx.handle.name,
        "pesflow": _pesflow_version(),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if record is not None:
        out.update(
            model_id=int(record.id),
            iteration_id=record.iteration_id,
            model_created_at=str(record.created_at),
            checkpoint_sha256=record.checkpoint_sha256,
            training_labels=len(record.training_label_ids),
        )
    return out


def write_readme(
    out: Path, title: str, prov: dict[str, Any], files: dict[str, str], body: str = ""
) -> Path:
    """Write ``out/README.md``: ``title``, ``body`` (markdown), the provenance and the sha256
    of each file of ``files`` (name relative to ``out`` -> what it is; a directory stands for
    every file under it)."""
    lines = [f"# {title}", ""]
    if body:
        lines += [body.strip(), ""]
    lines += ["## Provenance", ""]
    lines += [f"- {k}: `{v}`" for k, v in prov.items()]
    lines += ["", "## Files", ""]
    lines += [
        "The sha256 below identify these files; a TorchScript archive embeds its export time,",
        "so exporting the same model again gives other sums: `checkpoint_sha256` above is the",
        "stable identifier of the model.",
        "",
        "| file | sha256 | content |",
        "|---|---|---|",
    ]
    for name, what in files.items():
        path = out / name
        inside = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in inside:  # a directory (deepmd systems): each of its files
            rel = file.relative_to(out).as_posix()
            lines.append(f"| `{rel}` | `{file_sha256(file)}` | {what} |")
    readme = out / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme


def _import_calculator(path: Path) -> Any:
    """The shipped calculator module, imported from the export directory itself."""
    spec = importlib.util.spec_from_file_location("_pesflow_exported_calculator", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod


def check_export(out: Path, model: Any, frames: list) -> dict[str, dict[str, float]]:
    """Worst relative difference per result and precision between the exported calculator
    and :class:`~mlip_core.calculator.CommitteeCalculator` on :func:`probe_structures` of
    ``frames``. Raises :class:`CampaignFailedError` above :data:`TOLERANCES`."""
    import torch

    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.standalone_check import TOLERANCES, compare_calculators, probe_structures

    structures = [s for f in frames for s in probe_structures(f)]
    mod = _import_calculator(out / CALCULATOR_FILE)
    measured = {}
    for dtype, name in MODEL_FILES.items():
        reference = CommitteeCalculator(copy.deepcopy(model).to(getattr(torch, dtype)))
        worst: dict[str, float] = {}
        # float64: both neighbor lists; float32: pesflow's (vesin) neighbor order, as ASE's
        # order changes float32 sums by rounding (pesflow's own results move as much)
        for backend in ("auto", "ase") if dtype == "float64" else ("auto",):
            calc = mod.PesflowCalculator(out / name, neighbors=backend)
            for k, v in compare_calculators(reference, calc, structures).items():
                worst[k] = max(worst.get(k, 0.0), v)
        bad = {k: v for k, v in worst.items() if not v <= TOLERANCES[dtype]}
        if bad:
            raise CampaignFailedError(
                f"the {dtype} export differs from pesflow's calculator beyond "
                f"{TOLERANCES[dtype]:g} relative: "
                + ", ".join(f"{k} {v:.2e}" for k, v in sorted(bad.items()))
            )
        measured[dtype] = worst
    return measured


README_BODY = """\
The committee of campaign `{campaign}` (model {model_id}) as a potential that needs only
**torch ({torch} or a version that reads its files), ase and numpy** on Python >= 3.10: pesflow
does not have to be installed. With `vesin` installed the calculator builds its neighbor list
with it (same pairs, much faster than ASE's; `PesflowCalculator(..., neighbors="ase")` forces
ASE).

```python
from pesflow_calculator import PesflowCalculator   # this folder on sys.path, or copy the file

atoms.calc = PesflowCalculator("committee-float64.pt")  # or committee-float32.pt (faster)
e = atoms.get_potential_energy()   # eV, committee mean
f = atoms.get_forces()             # (N, 3) eV/Å
s = atoms.get_stress()             # (6,) Voigt eV/Å^3, ASE sign (fully periodic cells only)
dev = atoms.calc.results["max_force_dev"]   # eV/Å, also under "max_devi_f"
```

Without ASE: `m = torch.jit.load("committee-float64.pt")`, then
`m(positions (N,3) Å, cell (3,3) Å, numbers (N,) int64, edge_index (2,E) int64 [i; j],
shifts (E,3) integer cell shifts S, compute_stress: bool)` with every directed pair closer than
`m.cutoff` (= {cutoff:g} Å; both i->j and j->i, periodic images, no self pair;
`r_ij = x_j - x_i + S @ cell`, as `ase.neighborlist.neighbor_list("ijS", atoms, m.cutoff)`
gives). It returns a dict of float64 tensors: `energy`, `energy_committee` (K,), `forces`,
`forces_committee` (K,N,3), `forces_std` (N,), `max_force_dev`, and with stress `stress` (3,3),
`stress_committee` (K,3,3). Call it with autograd allowed (`torch.no_grad` is fine, not
`torch.inference_mode`). `torch.jit.load` also reads it from C++ (libtorch).

## What is computed

- {k} members (`energy_committee`, `forces_committee`, `stress_committee`); `energy`, `forces`,
  `stress` are their means. Species: {species}. Cutoff {cutoff:g} Å.
  {repulsion}
- Units: energy eV, forces eV/Å, stress eV/Å^3 (`stress = (1/V) dE/d strain`, ASE's sign:
  positive under tension). Forces and stress are exact derivatives of the energy (autograd).
- `forces_std` (N,): per-atom force deviation `sigma_i = sqrt(mean_k |F_i^k - <F_i>|^2)`
  (population std over members of the force vectors, norm per atom), eV/Å; `max_force_dev`
  = `max_devi_f` = `max_i sigma_i`, the frame's uncertainty as pesflow and DP-GEN use it
  (pesflow's `mlip_core.uncertainty.max_force_deviation`). `energy_std`: population std of the
  member energies; `max_force_dev_rel` = `max_i sigma_i / (|<F_i>| + 1 eV/Å)`.
- The committee was trained in {trained}; `committee-float64.pt` evaluates its weights in
  float64, `committee-float32.pt` in float32 (faster; reference energies and the ZBL baseline
  stay float64 in both).

## Checked at export

The shipped calculator was compared with pesflow's `CommitteeCalculator` on {n_structures}
structures ({n_frames} campaign frames rattled by 0.02 Å, each also as a slab periodic in x, y
and as a cluster without a cell); float64 with both neighbor lists (vesin, ASE), float32 with
pesflow's neighbor order (vesin: with ASE's order float32 sums differ by rounding, up to ~1e-5
relative, as much as pesflow's own results move when its neighbor order changes). Largest relative difference `max|a-b| / max|b|` (for `forces_std` and
`max_force_dev`, `b` is the larger of the deviation and the member forces: a spread of float32
forces is only as precise as the forces):

| result | float64 (tolerance {tol64:g}) | float32 (tolerance {tol32:g}) |
|---|---|---|
{rows}
"""


def export_torchscript(
    ctx: Context,
    out_dir: str | Path,
    *,
    extras: dict[str, tuple[Path, str]] | None = None,
    extra_body: str = "",
) -> tuple[list[Path], Path, Path]:
    """Write the torchscript export of the campaign's latest model into ``out_dir``.

    Args:
        ctx: the campaign.
        out_dir: the export directory (created).
        extras: more files to ship, copied once the export passed its check: name in
            ``out_dir`` -> (source file, what it is, for the README's file table).
        extra_body: markdown appended to the README body (``--format lammps``).

    Returns:
        ``(model files, calculator file, README)``.

    Raises:
        CampaignFailedError: no model yet, a corrupt checkpoint, a backend other than the
            native committee, or an export that fails its equality check.
    """
    import torch

    from mlip_core import standalone_calculator
    from mlip_core.model import CommitteePotential
    from mlip_core.repulsion import unwrap
    from mlip_core.standalone import save_scripted, script_committee
    from mlip_core.standalone_check import TOLERANCES

    from .train import load_model, training_data

    record = ctx.store.latest_model(ctx.campaign_id)
    if record is None:
        raise CampaignFailedError(f"campaign {ctx.handle.name!r} has no model yet to export")
    try:
        model = load_model(ctx, record)
    except (FileNotFoundError, ValueError) as exc:
        raise CampaignFailedError(
            f"cannot export model {record.id}: {' '.join(str(exc).split())}; "
            f"`pesflow resume {ctx.handle.name}` rebuilds it from its recorded inputs"
        ) from exc
    learned, rep = unwrap(model)
    if not isinstance(learned, CommitteePotential):
        raise CampaignFailedError(
            f"--format torchscript exports the native committee; model {record.id} is "
            f"{type(learned).__name__} (export --format mace gives its checkpoint and loader)"
        )
    train, val, _ = training_data(ctx)
    frames = list((val or train)[:_CHECK_FRAMES])
    if not frames:
        raise CampaignFailedError("no labelled frame to check the export on")
    prov = provenance(ctx, record)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = []
    for dtype, name in MODEL_FILES.items():
        scripted = script_committee(model, getattr(torch, dtype))
        save_scripted(scripted, out / name, {"provenance": prov})
        models.append(out / name)
    calc = out / CALCULATOR_FILE
    shutil.copyfile(str(standalone_calculator.__file__), calc)
    try:
        measured = check_export(out, model, frames)
    except CampaignFailedError:
        for path in (*models, calc):  # no unchecked potential left behind
            path.unlink(missing_ok=True)
        raise
    keys = [k for k in measured["float64"] if k in measured["float32"]]
    rows = "\n".join(
        f"| `{k}` | {measured['float64'][k]:.1e} | {measured['float32'][k]:.1e} |" for k in keys
    )
    body = README_BODY.format(
        campaign=ctx.handle.name,
        model_id=record.id,
        torch=torch.__version__.split("+")[0],
        cutoff=learned.cutoff,
        k=learned.n_members,
        species=", ".join(str(z) for z in learned.species),
        repulsion="The ZBL screened nuclear repulsion baseline is included (float64)."
        if rep is not None
        else "No repulsion baseline.",
        trained=str(learned.dtype).removeprefix("torch."),
        n_structures=3 * len(frames),
        n_frames=len(frames),
        tol64=TOLERANCES["float64"],
        tol32=TOLERANCES["float32"],
        rows=rows,
    )
    files = {
        MODEL_FILES["float64"]: "TorchScript committee, float64",
        MODEL_FILES["float32"]: "TorchScript committee, float32",
        CALCULATOR_FILE: "ASE calculator (needs torch, ase, numpy)",
    }
    for name, (source, what) in (extras or {}).items():
        shutil.copyfile(source, out / name)
        files[name] = what
    if extra_body:
        body = body.rstrip() + "\n\n" + extra_body.strip() + "\n"
    readme = write_readme(out, f"pesflow committee `{ctx.handle.name}`", prov, files, body)
    return models, calc, readme
