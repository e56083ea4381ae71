"""The campaign of ``examples/sic_qe.yaml`` reduced to seconds and run by ``pesflow run`` with
the real Quantum ESPRESSO ``pw.x`` and, with only the labeler block changed
(``examples/sic_cp2k.yaml``), the real CP2K: 8-atom zinc-blende SiC cells, 4 bootstrap + 2
validation labels, 2 then 1 selected frames, two 2-member committees, cheap DFT settings.

The DFT code is started through a wrapper (the operator's ``execution.labelers.<name>.command``)
that counts its invocations (instrumentation outside pesflow, not read back from the database)
and, on one invocation, lowers the code's SCF step limit to 2 in the input pesflow wrote before
exec'ing the real binary: the code really fails to converge, the adapter classifies
``scf_unconverged`` and the retry policy's next attempt (more steps, less mixing) converges.

Both tests fail (not skip) in CI when a code is missing (:mod:`tests._codes`)."""

from __future__ import annotations

import copy
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pesflow.cli import app

from .._codes import require_cp2k, require_pw_x
from .._procs import wait_group_gone
from .conftest import ROOT

runner = CliRunner()
QE_EXAMPLE = ROOT / "examples" / "sic_qe.yaml"
CP2K_EXAMPLE = ROOT / "examples" / "sic_cp2k.yaml"

REDUCED: dict[str, Any] = {
    "bootstrap": {"n_structures": 4, "rattle": 0.05, "strain": 0.02},
    "validation": {"n_structures": 2, "min_per_regime": 1, "holdout_fraction": 0.0},
    "model": {"backend": "native", "n_members": 2, "cutoff": 4.0, "channels": 8, "n_layers": 1},
    "training": {"max_epochs": 20, "warm_start_epochs": 10, "max_time_s": 20},
    "exploration": {
        "walkers": [
            {"temperature": t, "steps": 20, "timestep": 1.0, "record_every": 5} for t in (300, 1500)
        ]
    },
    "trust": {"lo": 0.01, "hi": 10.0},  # (nearly) every explored frame a candidate
    "selection": {"max_per_iteration": 2, "strategy": "fps"},
    # iteration 0: 4 + 2 seeded + 2 selected; iteration 1: 1 (the budget), then max_iterations
    "convergence": {"accurate_ratio": 1.0, "patience": 1, "max_iterations": 2, "label_budget": 9},
}
"""Sections replacing the example's: bootstrap + 1 iteration, 9 labels."""

CHEAP: dict[str, dict[str, Any]] = {
    # ~1-2 s per label on one core: the example's pseudopotentials and smearing, Γ only
    "espresso": {"ecutwfc": 20, "ecutrho": 160, "kpts": [1, 1, 1], "conv_thr": 1e-8},
    # ~3 s: minimal basis, coarse grids, Γ-point diagonalisation (the smearing) and a looser
    # integral screening than CP2K's default
    "cp2k": {
        "basis_set": "SZV-MOLOPT-SR-GTH",
        "cutoff": 120,
        "rel_cutoff": 30,
        "kpts": None,
        "eps_scf": 1e-6,
        "inp": "&FORCE_EVAL\n&DFT\n&QS\nEPS_DEFAULT 1.0E-8\n&END QS\n&END DFT\n&END FORCE_EVAL\n",
    },
}
"""Labeler settings replacing the example's (cutoffs, k-points), per code."""

# code name -> (binary, input file pesflow writes, sed expression setting an SCF limit of 2)
CODES = {
    "espresso": ("pw.x", "espresso.pwi", r"s/electron_maxstep *= *[0-9]+/electron_maxstep = 2/"),
    "cp2k": ("cp2k", "cp2k.inp", r"s/MAX_SCF +[0-9]+/MAX_SCF 2/"),
}

WRAPPER = """#!/bin/sh
# pesflow test: log this invocation (pid and directory); the {fail_at}th gets an SCF limit of 2
exec 9>>"{log}.lock"
flock 9
n=$(( $(wc -l < "{log}") + 1 ))
echo "$$ $PWD" >> "{log}"
flock -u 9
exec 9>&-
if [ "$n" -eq {fail_at} ]; then
  sed -i -E '{sed}' "{input}"
fi
exec "{real}" "$@"
"""


def write_wrapper(directory: Path, code: str, fail_at: int = 2) -> tuple[Path, Path]:
    """A shell script that runs the real binary of ``code`` (see module docstring); returns
    (script, invocation log: one ``<pid> <cwd>`` line per run)."""
    binary, inp, sed = CODES[code]
    log = directory / f"{code}-invocations.log"
    log.write_text("")
    script = directory / f"{code}-wrapper.sh"
    real = shutil.which(binary)
    assert real is not None
    script.write_text(
        WRAPPER.format(fail_at=fail_at, log=log, sed=sed, input=inp, real=real),
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


def reduced_config(example: Path, path: Path, command: Path) -> Path:
    """``example`` with :data:`REDUCED` sections, the cheap settings of its code and an
    inline execution section whose command for that code is ``command``."""
    data = yaml.safe_load(example.read_text())
    data.update(copy.deepcopy(REDUCED))
    code = data["labeler"]["name"]
    settings = {**data["labeler"]["settings"], **CHEAP[code]}
    data["labeler"]["settings"] = {k: v for k, v in settings.items() if v is not None}
    data["execution"] = {
        "task_runner": "threads",
        "max_workers": 2,
        "labelers": {code: {"command": str(command), "env": {"OMP_NUM_THREADS": "1"}}},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_reduced(example: Path, root: Path) -> dict[str, Any]:
    """Run the reduced campaign of ``example`` through ``pesflow run``; the CLI result, the
    store, the campaign row and the wrapper's invocation lines."""
    from database import Store

    code = yaml.safe_load(example.read_text())["labeler"]["name"]
    script, log = write_wrapper(root, code)
    cfg = reduced_config(example, root / f"{example.stem}-reduced.yaml", script)
    data = root / "data"
    res = runner.invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"])
    invocations = [line.split(maxsplit=1) for line in log.read_text().splitlines()]
    for pid, _ in invocations:  # every DFT process (a session leader) and its children gone
        assert wait_group_gone(int(pid)), f"{code} process group {pid} is still alive"
    store = Store.sqlite(data)
    rec = store.get_campaign(yaml.safe_load(example.read_text())["name"])
    return {"res": res, "store": store, "rec": rec, "runs": invocations, "code": code, "data": data}


def check_campaign(run: dict[str, Any]) -> list:
    """What both codes' campaigns must show: 9 labels stored, two committees, one settings
    hash, and exactly one DFT run more than labels: the failed SCF, recovered by the retry
    policy. Returns the labels."""
    res, store, rec = run["res"], run["store"], run["rec"]
    assert res.exit_code == 0, res.output
    assert rec.status == "paused", rec.status_message
    assert rec.status_message.startswith("stopped at max_iterations=2"), rec.status_message
    labels = store.list_labels(rec.id, limit=None)
    assert len(labels) == 9 and all(lb.status == "done" for lb in labels)
    assert len(store.list_models(rec.id)) == 2  # the bootstrap committee and its successor
    # one potential-energy surface: every label of the campaign under one settings hash
    from workflows.setup import RUNTIME_KEY

    assert {lb.settings_hash for lb in labels} == {rec.config[RUNTIME_KEY]["settings_hash"]}
    assert len(run["runs"]) == len(labels) + 1  # the code ran once per label, plus one retry
    retried = [lb for lb in labels if lb.attempts > 1]
    assert len(retried) == 1 and retried[0].attempts == 2
    assert all(lb.energy is not None and np.isfinite(lb.energy) for lb in labels)
    return labels


def check_retry(
    run: dict[str, Any], labels: list, clean_settings: dict[str, Any], says: str
) -> None:
    """The retried label: its failed attempt (the wrapper's run, whose message has ``says``)
    and the retry are stored, its directory is kept, it was trained on unless held out, and
    its energy and forces are those of a clean run of the same structure."""
    from dft_adapters import get_labeler

    store, rec = run["store"], run["rec"]
    (label,) = [lb for lb in labels if lb.attempts == 2]
    failed_dir = Path(run["runs"][1][1])  # the 2nd invocation: the broken one
    assert failed_dir.parts[-3:-1] == (str(label.id), "round-0")
    first, second = store.list_label_attempts(label.id)
    assert (first.attempt, first.status) == (0, "scf_unconverged") and says in first.message
    assert (second.attempt, second.status) == (1, "ok")
    assert set(second.settings_changes) == {"max_scf_steps", "mixing"}
    assert second.settings_changes["max_scf_steps"] == 2 * clean_settings["max_scf_steps"]
    assert failed_dir.with_name(failed_dir.name + ".failed-scf_unconverged").is_dir()
    assert label.effective_settings_hash != label.settings_hash  # ran with other SCF knobs ...
    val = {s.structure_id for s in store.list_selections(rec.id) if s.reason == "validation"}
    last = store.list_models(rec.id)[-1]
    assert label.structure_id in val or label.id in set(last.training_label_ids.tolist())
    # ... which do not change the converged answer: a clean run of the same structure
    atoms = store.get_atoms([label.structure_id])[0]
    clean = get_labeler(run["code"], **clean_settings).label(atoms)
    assert clean.ok, clean.message
    assert label.energy == pytest.approx(clean.energy, abs=1e-4)  # eV per 8-atom cell
    assert np.allclose(label.forces, clean.forces, atol=2e-3)  # eV/Å (measured: 4e-4, 2e-6)


def test_the_cp2k_example_is_the_qe_example_with_another_labeler():
    """``sic_cp2k.yaml`` and ``sic_qe.yaml`` differ only in the labeler block and the name,
    and both are valid campaigns."""
    from workflows.config import load_config

    qe, cp2k = (yaml.safe_load(p.read_text()) for p in (QE_EXAMPLE, CP2K_EXAMPLE))
    assert (qe.pop("name"), cp2k.pop("name")) == ("sic-qe", "sic-cp2k")
    assert (qe.pop("labeler")["name"], cp2k.pop("labeler")["name"]) == ("espresso", "cp2k")
    assert qe == cp2k
    for path in (QE_EXAMPLE, CP2K_EXAMPLE):
        cfg = load_config(path)
        assert cfg.structures[0].generate.elements == ("Si", "C")


def example_settings(example: Path) -> dict[str, Any]:
    """The labeler settings the reduced campaign of ``example`` runs with."""
    labeler = yaml.safe_load(example.read_text())["labeler"]
    settings = {**labeler["settings"], **CHEAP[labeler["name"]]}
    return {k: v for k, v in settings.items() if v is not None}


@pytest.mark.qe
def test_reduced_sic_campaign_with_real_pw_x_recovers_a_failed_scf(prefect_harness, tmp_path):
    settings = example_settings(QE_EXAMPLE)
    require_pw_x(settings["pseudopotentials"].values())
    run = run_reduced(QE_EXAMPLE, tmp_path)
    try:
        check_retry(run, check_campaign(run), settings, "convergence NOT achieved after   2")
        # the README's table: per iteration and in all, wall s of training / MD / DFT
        res = runner.invoke(app, ["status", "sic-qe", "--markdown", "--data-dir", str(run["data"])])
        assert res.exit_code == 0, res.output
        table = res.output.split("\n\n")[0].splitlines()  # then the per-regime table
        rows = [line.split("|") for line in table if line.startswith("| ")]
        times = [[float(x) for x in r[-2].strip(" *").split(" / ")] for r in rows[1:]]
        assert rows[-1][1:3] == [" all ", " 9 "] and len(times) == 3
        assert times[-1] == pytest.approx(np.sum(times[:-1], axis=0), abs=0.11)
        assert min(times[-1]) > 0
    finally:
        run["store"].close()


def test_reduced_sic_campaign_with_real_cp2k_recovers_a_failed_scf(prefect_harness, tmp_path):
    require_cp2k()
    run = run_reduced(CP2K_EXAMPLE, tmp_path)
    try:
        check_retry(run, check_campaign(run), example_settings(CP2K_EXAMPLE), "SCF run NOT conv")
    finally:
        run["store"].close()
