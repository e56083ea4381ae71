"""Core pieces: settings hash, registry, pre-flight geometry checks, retry policy, executor."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from dft_adapters import (
    Executor,
    FailureKind,
    PreflightLimits,
    RetryPolicy,
    SubprocessRunner,
    available_labelers,
    canonical_json,
    check_geometry,
    get_labeler,
    settings_hash,
)
from dft_adapters.espresso import EspressoSettings
from dft_adapters.mock import EMTSettings
from dft_adapters.registry import UnknownLabelerError

from .conftest import cu4, too_close


# ----------------------------------------------------------------------------- settings hash
def test_canonical_json_is_order_and_type_stable() -> None:
    assert canonical_json({"b": 1.0, "a": [1, 2.5], "c": {"y": True, "x": None}}) == (
        '{"a":[1,2.5],"b":1,"c":{"x":null,"y":true}}'
    )


def test_settings_hash_depends_on_what_not_where_or_how() -> None:
    a = get_labeler(
        "espresso", ecutwfc=30, pseudo_dir="/a", pseudopotentials={"Si": "x.UPF", "O": "o.UPF"}
    )
    b = get_labeler(
        "espresso",
        ecutwfc=30.0,
        pseudo_dir="/elsewhere",
        pseudopotentials={"O": "o.UPF", "Si": "x.UPF"},
        executor=Executor(command="pw.x -nk 4", launcher="srun", timeout=100),
    )
    c = get_labeler(
        "espresso", ecutwfc=31, pseudo_dir="/a", pseudopotentials={"Si": "x.UPF", "O": "o.UPF"}
    )
    assert a.settings_hash == b.settings_hash
    assert a.settings_hash != c.settings_hash
    assert a.settings_hash != settings_hash("cp2k", a.settings)  # the code is part of the identity
    assert len(a.settings_hash) == 64 and int(a.settings_hash, 16) >= 0


def test_settings_are_frozen_and_validated() -> None:
    s = EspressoSettings()
    with pytest.raises(AttributeError):
        s.ecutwfc = 10  # type: ignore[misc]
    with pytest.raises(ValueError, match="mixing"):
        EspressoSettings(mixing=1.5)
    assert s.replace(ecutwfc=50).ecutwfc == 50 and s.ecutwfc == 40
    assert s.diff(s.replace(mixing=0.3)) == {"mixing": 0.3}


# ----------------------------------------------------------------------------- registry
def test_registry_names_and_errors() -> None:
    assert {"emt", "lj", "morse", "espresso", "pyscf", "vasp", "cp2k"} <= set(available_labelers())
    with pytest.raises(UnknownLabelerError, match="unknown labeler 'gaussian'"):
        get_labeler("gaussian")
    with pytest.raises(ValueError):  # UnknownLabelerError is a ValueError
        get_labeler("nope")
    with pytest.raises(TypeError):
        get_labeler("emt", ecutwfc=30)  # not an EMT setting


def test_registry_builds_settings_and_how_from_keywords() -> None:
    ex = Executor(timeout=5)
    labeler = get_labeler(
        "espresso", ecutwfc=25, executor=ex, retry_policy=RetryPolicy.no_retries()
    )
    assert labeler.settings.ecutwfc == 25 and labeler.executor is ex
    assert labeler.retry_policy.max_retries(FailureKind.SCF_UNCONVERGED) == 0
    same = get_labeler("espresso", settings=EspressoSettings(ecutwfc=25))
    assert same.settings_hash == labeler.settings_hash
    assert get_labeler("emt").settings == EMTSettings()
    described = labeler.describe()
    assert (
        described["settings_hash"] == labeler.settings_hash
        and described["executor"]["timeout"] == 5
    )


def test_third_party_backend_can_register() -> None:
    from dft_adapters.testing import ZeroLabeler, registered

    assert "zero" not in available_labelers()
    with registered(ZeroLabeler):
        assert "zero" in available_labelers()
        assert get_labeler("zero", scale=2.0).label(cu4()).energy == 0.0
    assert "zero" not in available_labelers()  # registered for the block only


# ----------------------------------------------------------------------------- pre-flight
def test_atoms_point_one_angstrom_apart_are_rejected_with_indices() -> None:
    message = check_geometry(too_close(molecule("H2O")))
    assert (
        message is not None
        and "atom 0 (O)" in message
        and "atom 1 (H)" in message
        and "0.100 Å" in message
    )


def test_periodic_image_too_close_is_rejected() -> None:
    atoms = Atoms("H", cell=[0.3, 5, 5], pbc=True)
    assert "its own periodic image" in check_geometry(
        atoms, PreflightLimits(min_volume_per_atom=0.1)
    )


def test_image_distance_across_the_boundary_counts() -> None:
    atoms = Atoms("Cu2", positions=[[0.05, 0, 0], [4.95, 0, 0]], cell=[5, 5, 5], pbc=True)
    assert "0.100 Å" in check_geometry(atoms)
    atoms.pbc = False  # 4.9 Å apart without periodic images
    assert check_geometry(atoms) is None


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (
            [[2, 0, 0], [0, 2, 0], [0, 0, 0]],
            "periodic vectors (axes [0, 1, 2]) are zero or linearly dependent",
        ),
        (
            [[1, 0, 0], [0, 1, 0], [0, 0, 0.5]],
            "volume per atom 0.50 Å^3 below min_volume_per_atom=1",
        ),
        ([[100, 0, 0], [0, 100, 0], [0, 0, 100]], "above max_volume_per_atom=10000"),
    ],
)
def test_insane_cell_volumes_are_rejected(cell, expected: str) -> None:
    atoms = Atoms("Cu", cell=cell, pbc=True)
    assert expected in check_geometry(atoms)


def test_empty_and_nan_structures_are_rejected() -> None:
    assert "no atoms" in check_geometry(Atoms())
    atoms = bulk("Cu")
    atoms.positions[0, 1] = np.nan
    assert "non-finite" in check_geometry(atoms)


def test_sane_structures_pass() -> None:
    assert check_geometry(cu4()) is None
    assert check_geometry(molecule("CH3CH2OH")) is None


def test_preflight_failure_is_returned_not_raised_and_no_scratch_is_made(tmp_path: Path) -> None:
    outcome = get_labeler("emt").label(too_close(cu4()), workdir=tmp_path / "w")
    assert outcome.kind is FailureKind.INVALID_INPUT and outcome.attempts == ()


# ----------------------------------------------------------------------------- retry policy
def test_retry_policy_is_data_with_the_issue_rules() -> None:
    policy = RetryPolicy()
    assert policy.max_retries(FailureKind.CRASHED) == 1
    assert policy.max_retries(FailureKind.INVALID_INPUT) == 0
    assert policy.max_retries(FailureKind.MISSING_EXECUTABLE) == 0
    assert policy.max_retries(FailureKind.SCF_UNCONVERGED) == 2
    assert policy.to_dict()["scf_steps_factor"] == 2.0
    nxt = policy.next_settings(
        EspressoSettings(max_scf_steps=50, mixing=0.4, smearing=0.1), FailureKind.SCF_UNCONVERGED
    )
    assert (nxt.max_scf_steps, nxt.mixing, nxt.smearing) == (
        100,
        0.2,
        0.1,
    )  # 1st retry: numerics only
    second = policy.next_settings(nxt, FailureKind.SCF_UNCONVERGED, retry=2)
    assert (second.max_scf_steps, second.mixing, second.smearing) == (200, 0.1, 0.1)  # physics kept
    opted = RetryPolicy(physics_keys=("smearing",))
    second = opted.next_settings(nxt, FailureKind.SCF_UNCONVERGED, retry=2)
    assert (second.max_scf_steps, second.mixing, second.smearing) == (200, 0.1, 0.15)
    with pytest.raises(ValueError, match=r"physics_keys: \['ecutwfc'\] unknown"):
        RetryPolicy(physics_keys=("ecutwfc",))
    same = EspressoSettings()
    assert policy.next_settings(same, FailureKind.CRASHED) is same
    no_smear = policy.next_settings(EspressoSettings(smearing=None), FailureKind.SCF_UNCONVERGED)
    assert no_smear.smearing is None  # fixed occupations are not silently smeared
    capped = RetryPolicy(max_smearing=0.12, physics_keys=("smearing",)).next_settings(
        EspressoSettings(smearing=0.1), "scf_unconverged", retry=2
    )
    assert capped.smearing == 0.12
    with pytest.raises(ValueError):
        RetryPolicy(scf_retries=-1)


def test_crashed_is_retried_once_and_each_attempt_is_recorded() -> None:
    from dft_adapters.mock import FaultInjection

    labeler = get_labeler("emt", faults=FaultInjection({FailureKind.CRASHED: 1.0}))
    outcome = labeler.label(cu4())
    assert outcome.kind is FailureKind.CRASHED
    assert [a.status for a in outcome.attempts] == ["crashed", "crashed"]
    assert [a.index for a in outcome.attempts] == [0, 1]
    assert outcome.attempts[0].to_dict()["status"] == "crashed"


# ----------------------------------------------------------------------------- execution
def test_subprocess_runner_kills_the_process_group_on_timeout(tmp_path: Path) -> None:
    marker = tmp_path / "child_survived"
    script = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        f"\"import time; time.sleep(1.5); open('{marker}', 'w').close()\"]); time.sleep(30)"
    )
    t0 = time.perf_counter()
    result = SubprocessRunner(kill_grace=1.0)(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=dict(os.environ),
        timeout=0.5,
        stdout=tmp_path / "o",
        stderr=tmp_path / "e",
    )
    assert result.timed_out and time.perf_counter() - t0 < 5
    time.sleep(1.5)
    assert not marker.exists()  # the grandchild died with its group


def test_subprocess_runner_reports_exit_status_and_output(tmp_path: Path) -> None:
    result = SubprocessRunner()(
        [sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"],
        cwd=tmp_path,
        env=dict(os.environ),
        timeout=10,
        stdout=tmp_path / "o",
        stderr=tmp_path / "e",
    )
    assert result.returncode == 3 and not result.timed_out
    assert (tmp_path / "o").read_text() == "hello\n"


def test_executor_builds_argv_and_finds_missing_executables() -> None:
    ex = Executor(command="pw.x -nk 2", launcher="mpirun -np 4", env={"OMP_NUM_THREADS": "1"})
    assert ex.argv("ignored") == ["mpirun", "-np", "4", "pw.x", "-nk", "2"]
    assert ex.environment()["OMP_NUM_THREADS"] == "1"
    missing = Executor(command="surely-not-here.x", launcher="no-such-mpirun").missing_executables(
        "x"
    )
    assert missing == ["no-such-mpirun", "surely-not-here.x"]
    assert Executor().missing_executables(sys.executable) == []
    with pytest.raises(ValueError):
        Executor(timeout=0)


def test_cp2k_data_dir_is_not_hashed() -> None:
    a = get_labeler("cp2k", data_dir="/a")
    b = get_labeler("cp2k", data_dir="/b")
    assert a.settings_hash == b.settings_hash
    assert a.settings_hash != get_labeler("cp2k", cutoff=300).settings_hash


def test_missing_pw_x_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from .. import _codes
    from . import conftest

    monkeypatch.setattr(_codes.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the real QE tests"):
        conftest.require_pw_x()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match=r"pw\.x"):
        conftest.require_pw_x()


def test_outcomes_serialise_to_json_for_the_database() -> None:
    import json

    from dft_adapters.mock import FaultInjection

    ok = get_labeler("emt").label(cu4())
    record = json.loads(json.dumps(ok.to_dict()))
    assert record["status"] == "ok" and len(record["forces"]) == 4 and len(record["stress"]) == 6
    assert record["settings_hash"] == ok.settings_hash and record["attempts"][0]["status"] == "ok"
    bad = get_labeler("emt", faults=FaultInjection({FailureKind.TIMEOUT: 1.0})).label(cu4())
    record = json.loads(json.dumps(bad.to_dict()))
    assert record["status"] == record["kind"] == "timeout" and record["attempts"][0]["index"] == 0


def test_unwritable_workdir_is_a_crashed_value(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    outcome = get_labeler("pyscf", basis="sto-3g").label(molecule("H2"), workdir=blocker / "calc")
    assert outcome.kind is FailureKind.CRASHED and "scratch directory" in outcome.message


def test_a_pre_flight_check_that_raises_still_returns_a_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dft_adapters.mock import EMTLabeler

    def boom(self, atoms, settings):
        raise KeyError("Cu")

    monkeypatch.setattr(EMTLabeler, "check_inputs", boom)
    outcome = get_labeler("emt").label(cu4())
    assert outcome.kind is FailureKind.INVALID_INPUT and "KeyError" in outcome.message
