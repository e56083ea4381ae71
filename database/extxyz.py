"""Dataset export / import as extended XYZ (ASE's writer and reader).

Export format, one frame per ``done`` label:

* ``info``: ``REF_energy`` (eV), ``REF_stress`` (Voigt xx yy zz yz xz xy, eV/Å^3, when known),
  ``config_type``, and provenance: ``label_id``, ``structure_id``, ``structure_hash``,
  ``labeler``, ``labeler_version``, ``settings_hash``, ``campaign``, ``source``, and when
  known ``iteration``, ``walker``, ``temperature`` (K), ``md_step``;
* ``arrays``: ``REF_forces`` (eV/Å).

The bare keys ``energy`` / ``forces`` / ``stress`` are never written: ASE would turn them into a
``SinglePointCalculator`` on reading. MACE (``--energy_key=REF_energy --forces_key=REF_forces
--stress_key=REF_stress``) and NequIP (``key_mapping``) train on these files directly.
Positions and forces are written with 8 decimals; energies and stresses in full precision.

The file is byte-for-byte what ``ase.io.write(path, images, format="extxyz",
write_results=False)`` writes (a test checks this): the comment line comes from ASE's own
``ase.io.extxyz.output_column_format``, and the per-atom lines are formatted with numpy
(:mod:`database.fastfmt`, identical to ``%16.8f``) instead of one ``%`` per atom.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from structure_checks.outputs import vasprun_complete
from structure_checks.vocabulary import REF_ENERGY, REF_FORCES, REF_STRESS

from .errors import DatabaseInputError
from .fastfmt import atom_lines_many
from .label_keys import frame_stress, unread_label_keys
from .records import LabelledStructure, Origin

if TYPE_CHECKING:  # pragma: no cover
    from .store import CampaignRef, Store

_ATOM_LINE_FMT = "%-2s %16.8f %16.8f %16.8f %16.8f %16.8f %16.8f\n"
ENERGY_KEY, FORCES_KEY, STRESS_KEY = REF_ENERGY, REF_FORCES, REF_STRESS


CONSTRAINTS_KEY = "pesflow_constraints"
"""``info`` key of an exported frame: its constraints as ASE ``todict()`` JSON (extxyz itself
keeps only ``FixAtoms``, as ``move_mask``; selective dynamics ``F F T`` would be lost)."""


def labelled_atoms(
    item: LabelledStructure,
    *,
    config_type: str = "pesflow",
    campaign: str | None = None,
    iteration: int | None = None,
):
    """One training example as ``ase.Atoms`` with ``REF_*`` keys and provenance in ``info``."""
    atoms = item.structure.to_atoms()
    lb, st = item.label, item.structure
    info: dict[str, Any] = {ENERGY_KEY: float(lb.energy)}
    if lb.stress is not None:
        info[STRESS_KEY] = np.asarray(lb.stress, dtype=np.float64).copy()
    info.update(
        config_type=config_type,
        label_id=lb.id,
        structure_id=st.id,
        structure_hash=st.hash,
        labeler=lb.labeler,
        labeler_version=lb.labeler_version or "-",
        settings_hash=lb.settings_hash,
        source=st.source,
    )
    optional = {
        "campaign": campaign,
        "iteration": iteration,
        "walker": st.walker,
        "temperature": st.temperature,
        "md_step": st.md_step,
    }
    info.update({k: v for k, v in optional.items() if v is not None})
    if st.state.get("constraints"):  # extxyz keeps only FixAtoms (move_mask): all of them here
        info[CONSTRAINTS_KEY] = json.dumps(st.state["constraints"], separators=(",", ":"))
    atoms.info.update(info)
    atoms.arrays[FORCES_KEY] = np.asarray(lb.forces, dtype=np.float64).copy()
    return atoms


def export_extxyz(
    store: Store,
    path: str | Path,
    campaign: CampaignRef,
    *,
    labeler: str,
    settings_hash: str,
    config_type: str = "pesflow",
) -> int:
    """Write a campaign's training set (all ``done`` labels for one labeler / settings hash)
    to ``path`` as extended XYZ; returns the number of frames written."""
    c = store.get_campaign(campaign)
    index_of = {it.id: it.index for it in store.list_iterations(c.id)}
    items = store.training_set(c.id, labeler=labeler, settings_hash=settings_hash)
    images = [
        labelled_atoms(
            x,
            config_type=config_type,
            campaign=c.name,
            iteration=index_of.get(x.label.iteration_id),
        )
        for x in items
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        write_frames(fh, images)
    return len(images)


def write_frames(fh, images: Sequence[Any], batch: int = 256) -> None:
    """Write frames carrying ``REF_forces`` (and no other per-atom array, no constraints) in
    exactly ASE's extxyz layout; anything else is handed to ``ase.io.write``."""
    for start in range(0, len(images), batch):
        _write_batch(fh, images[start : start + batch])


def _fast_ok(atoms) -> bool:
    extra = set(atoms.arrays) - {"numbers", "positions", FORCES_KEY}
    return not extra and not atoms.constraints and atoms.calc is None and FORCES_KEY in atoms.arrays


def _write_batch(fh, images: Sequence[Any]) -> None:
    import ase.io
    from ase.io.extxyz import output_column_format

    headers: list[str | None] = []
    fast = []
    for atoms in images:
        if not _fast_ok(atoms):
            headers.append(None)
            continue
        symbols = np.array(atoms.get_chemical_symbols())
        arrays = {
            "symbols": symbols,
            "positions": atoms.positions,
            FORCES_KEY: atoms.arrays[FORCES_KEY],
        }
        comment, _, _, fmt = output_column_format(atoms, list(arrays), arrays, True)
        if fmt != _ATOM_LINE_FMT:  # ASE's layout changed: let ASE write this frame
            headers.append(None)
            continue
        headers.append(f"{len(atoms)}\n{comment}\n")
        fast.append((symbols, atoms.positions, atoms.arrays[FORCES_KEY]))
    bodies = atom_lines_many(*map(list, zip(*fast, strict=True))) if fast else []
    if bodies is None:  # a value needs Python formatting (|x| >= 1e6, non-finite)
        bodies = [(_ATOM_LINE_FMT * len(s)) % tuple(_rows(s, p, f)) for s, p, f in fast]
    it = iter(bodies)
    for atoms, header in zip(images, headers, strict=True):
        if header is None:
            ase.io.write(fh, atoms, format="extxyz", write_results=False)
        else:
            fh.write(header)
            fh.write(next(it))


def _rows(symbols, positions, forces) -> list:
    table = np.empty((len(symbols), 7), dtype=object)
    table[:, 0] = symbols
    table[:, 1:4] = positions
    table[:, 4:7] = forces
    return table.ravel().tolist()


def reference_from_atoms(
    atoms,
    *,
    energy_key: str = ENERGY_KEY,
    forces_key: str = FORCES_KEY,
    stress_key: str = STRESS_KEY,
    where: str = "frame",
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """(energy, forces, stress-or-None) of a labelled frame.

    Looks for ``info[energy_key]`` / ``arrays[forces_key]`` first, then for a calculator's
    results (extxyz with bare ``energy``/``forces``, VASP ``vasprun.xml``); from a calculator
    the force-consistent ``free_energy`` is preferred when present. The stress comes from
    ``info[stress_key]``, the calculator or a virial (:func:`database.label_keys.frame_stress`).
    Raises :class:`DatabaseInputError` naming the frame when energy or forces are missing,
    when two stated labels disagree, or when a label-like key is not one pesflow reads."""
    results = dict(getattr(atoms.calc, "results", {}) or {}) if atoms.calc is not None else {}
    unread = unread_label_keys(atoms, {energy_key, forces_key, stress_key})
    if unread:
        raise DatabaseInputError(
            f"{where}: label-like keys pesflow does not read: {', '.join(unread)} (name the "
            "one to use with the energy / forces / stress key options, or remove them)"
        )
    if energy_key in atoms.info:
        energy = atoms.info[energy_key]
    elif "free_energy" in results:
        energy = results["free_energy"]
    elif "energy" in results:
        energy = results["energy"]
    else:
        raise DatabaseInputError(f"{where}: no energy ({energy_key!r} in info or a calculator)")
    if forces_key in atoms.arrays:
        forces = atoms.arrays[forces_key]
    elif "forces" in results:
        forces = results["forces"]
    else:
        raise DatabaseInputError(f"{where}: no forces ({forces_key!r} in arrays or a calculator)")
    stress = frame_stress(atoms, results, stress_key, where)
    _same_as_calculator(atoms, results, energy_key, forces_key, where)
    return (
        energy,
        np.asarray(forces, dtype=np.float64),
        stress,
    )


def _same_as_calculator(
    atoms: Any, results: dict[str, Any], energy_key: str, forces_key: str, where: str
) -> None:
    """A frame with both ``REF_`` values and a calculator's (bare ``energy`` / ``free_energy``
    / ``forces``) must say the same thing: two different labels of one frame are refused, not
    picked (the ``REF_`` energy may equal either the free or the extrapolated energy)."""
    energies = [results[k] for k in ("free_energy", "energy") if results.get(k) is not None]
    pairs = [(energy_key, atoms.info.get(energy_key), "energy", energies)]
    forces = [results["forces"]] if results.get("forces") is not None else []
    pairs.append((forces_key, atoms.arrays.get(forces_key), "forces", forces))
    for key, ours, other_key, others in pairs:
        if ours is None or not others:
            continue
        if not any(np.allclose(ours, o, rtol=1e-6, atol=1e-6) for o in others):
            raise DatabaseInputError(f"{where}: {key} and the calculator's {other_key} disagree")


def read_labelled(
    path: str | Path, *, format: str | None = None, index: str | int = ":"
) -> list[Any]:
    """Read all frames of a labelled file with ASE (format guessed from the name:
    ``*.xyz``/``*.extxyz`` → extxyz, ``vasprun*.xml`` → vasp-xml, else ASE's guess).
    Raises :class:`DatabaseInputError` naming the file and the frame it could not read
    (a truncated vasprun.xml, a broken extxyz line ...)."""
    import ase.io

    path = Path(path)
    if format is None:
        name = path.name.lower()
        if name.endswith((".xyz", ".extxyz")):
            format = "extxyz"
        elif name.startswith("vasprun") and name.endswith(".xml"):
            format = "vasp-xml"
    frames: list[Any] = []
    try:
        for atoms in ase.io.iread(path, index=index, format=format):
            frames.append(atoms)
    except FileNotFoundError:
        raise DatabaseInputError(f"{path}: no such file") from None
    except Exception as exc:  # every reader failure: one input error naming file and frame
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise DatabaseInputError(
            f"{path} frame {len(frames)}: cannot read as {format or 'ASE-guessed format'}: {msg}"
        ) from None
    if format == "vasp-xml":
        _complete_vasprun(path, len(frames))
    for k, atoms in enumerate(frames):
        text = atoms.info.pop(CONSTRAINTS_KEY, None)
        if text is not None:  # written by labelled_atoms: the constraints as stored
            from ase.constraints import dict2constraint

            try:
                atoms.set_constraint([dict2constraint(dict(c)) for c in json.loads(text)])
            except Exception as exc:
                raise DatabaseInputError(
                    f"{path} frame {k}: {CONSTRAINTS_KEY} is not pesflow's constraint list: {exc}"
                ) from None
    return frames


def _complete_vasprun(path: Path, frames: int) -> None:
    """Refuse a vasprun.xml that does not end with ``</modeling>`` (VASP killed or still
    running): ASE reads the ``frames`` ionic steps before the cut and drops the rest without a
    word. Only the file's last bytes are read."""
    if not vasprun_complete(path):
        raise DatabaseInputError(
            f"{path} frame {frames}: cannot read as vasp-xml: cut short after {frames} "
            "complete ionic step(s) (no closing </modeling>)"
        )


def import_labelled(
    store: Store,
    paths: str | Path | Sequence[str | Path],
    campaign: CampaignRef,
    *,
    labeler: str,
    settings_hash: str,
    labeler_version: str = "",
    settings: dict[str, Any] | None = None,
    format: str | None = None,
    energy_key: str = ENERGY_KEY,
    forces_key: str = FORCES_KEY,
    stress_key: str = STRESS_KEY,
    reason: str = "seed",
) -> list[int]:
    """Seed a campaign with existing labelled data (one transaction for all files): every
    frame becomes a structure (deduplicated), a ``seed`` selection and a ``done`` label.
    Returns label ids in frame order. Nothing is stored if any frame is invalid."""
    if isinstance(paths, str | Path):
        paths = [paths]
    atoms_list, energies, forces, stresses, origins = [], [], [], [], []
    for p in paths:
        for i, atoms in enumerate(read_labelled(p, format=format)):
            e, f, s = reference_from_atoms(
                atoms,
                energy_key=energy_key,
                forces_key=forces_key,
                stress_key=stress_key,
                where=f"{p} frame {i}",
            )
            atoms_list.append(atoms)
            energies.append(e)
            forces.append(f)
            stresses.append(s)
            extra = {"file": str(p), "frame": i}
            if "config_type" in atoms.info:
                extra["config_type"] = str(atoms.info["config_type"])
            origins.append(Origin(info=extra))
    return store.add_labelled(
        campaign,
        atoms_list,
        energies=energies,
        forces=forces,
        stresses=stresses,
        labeler=labeler,
        settings_hash=settings_hash,
        labeler_version=labeler_version,
        settings=settings,
        source="import",
        reason=reason,
        origins=origins,
    )
