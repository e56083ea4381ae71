"""Exactly-once labelling: ``<workdir>/outcome.json``, the lock, and what happens when the file
is another calculation's, corrupt, unwritable or moved. Runs of the code are counted by
instrumenting ``_compute`` (in child processes too) or the fake process runner."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from dft_adapters import (
    AttemptRecord,
    Executor,
    FailureKind,
    LabelFailure,
    LabelResult,
    OutcomeCorruptError,
    OutcomeMismatchError,
    discard_outcome,
    get_labeler,
    input_fingerprint,
    outcome_from_dict,
    read_outcome,
)
from dft_adapters.mock import FaultInjection
from dft_adapters.outcome import write_outcome
from dft_adapters.testing import FakeRunner, ScriptedRunner, count_runs, fake_executable

from .conftest import FIXTURES, cp2k_stub_data, cu4, si2, too_close

OUTCOME_LOGGER = "dft_adapters.outcome"


# ----------------------------------------------------------------------------- processes
def _label_in_child(workdir: str, counter: str, barrier, queue) -> None:
    """Child process: a slow EMT label of ``workdir``; every attempt appends a line to
    ``counter``."""
    labeler = get_labeler("emt", faults=FaultInjection(delay=0.5))
    compute = labeler._compute

    def counting(*args):
        with open(counter, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return compute(*args)

    labeler._compute = counting
    barrier.wait(timeout=60)
    queue.put(labeler.label(cu4(), workdir=workdir).to_dict())


def test_two_processes_labelling_one_workdir_compute_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    counter, workdir = tmp_path / "computed.txt", tmp_path / "calc"
    procs = [
        ctx.Process(target=_label_in_child, args=(str(workdir), str(counter), barrier, queue))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(counter.read_text().splitlines()) == 1  # one DFT run in total
    assert sorted(r["reused"] for r in results) == [False, True]
    for r in results:
        r.pop("reused")
    assert results[0] == results[1] and results[0]["status"] == "ok"


# ----------------------------------------------------------------------------- refusals
def test_another_calculations_workdir_is_refused(tmp_path: Path) -> None:
    workdir = tmp_path / "calc"
    assert get_labeler("emt").label(cu4(), workdir=workdir).ok
    moved = cu4()
    moved.positions[0, 0] += 1e-9  # exact: any change is another structure
    cases = [
        (get_labeler("emt"), moved, "structure Cu4 fingerprint"),
        (get_labeler("emt", asap_cutoff=True), cu4(), "settings_hash"),
        (get_labeler("morse"), cu4(), "labeler 'emt' (requested 'morse')"),
    ]
    for labeler, atoms, what in cases:
        runs = count_runs(labeler)
        with pytest.raises(OutcomeMismatchError, match=re.escape(what)) as err:
            labeler.label(atoms, workdir=workdir)
        assert str(workdir.resolve()) in str(err.value) and runs == []
    assert isinstance(err.value, ValueError)


def _truncated(text: str) -> str:
    return text[: len(text) // 2]


def _tampered(text: str) -> str:
    record = json.loads(text)
    record["energy"] += 1e-12  # still valid JSON of the right format: only the checksum sees it
    return json.dumps(record)


def _wrong_format(text: str) -> str:
    return json.dumps({**json.loads(text), "format": "something-else"})


@pytest.mark.parametrize(
    "damage",
    [_truncated, lambda t: "", lambda t: "{not json", _wrong_format, _tampered],
    ids=["truncated", "empty", "bad-json", "wrong-format", "tampered"],
)
def test_corrupt_outcome_is_moved_aside_and_recomputed(
    damage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labeler = get_labeler("emt")
    runs = count_runs(labeler)
    workdir = tmp_path / "calc"
    first = labeler.label(cu4(), workdir=workdir)
    path = workdir / "outcome.json"
    bad = damage(path.read_text())
    path.write_text(bad)
    with pytest.raises(OutcomeCorruptError):
        read_outcome(workdir)
    with caplog.at_level(logging.WARNING, logger=OUTCOME_LOGGER):
        again = labeler.label(cu4(), workdir=workdir)
    assert runs == [0, 0] and not again.reused and again.persisted
    assert again.energy == first.energy
    assert (workdir / "outcome.json.corrupt-1").read_text() == bad  # kept for inspection
    assert "outcome.json.corrupt-1" in caplog.text and str(path) in caplog.text
    assert read_outcome(workdir).energy == first.energy  # the new file is good
    assert labeler.label(cu4(), workdir=workdir).reused and runs == [0, 0]


def test_unwritable_outcome_is_returned_unpersisted_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Disk full at the rename (chmod would not stop root): the label is still returned."""

    def full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)

    monkeypatch.setattr("dft_adapters.outcome.os.replace", full)
    labeler = get_labeler("emt")
    workdir = tmp_path / "calc"
    with caplog.at_level(logging.WARNING, logger=OUTCOME_LOGGER):
        result = labeler.label(cu4(), workdir=workdir)
    assert isinstance(result, LabelResult) and not result.persisted and not result.reused
    assert np.isfinite(result.energy) and result.forces.shape == (4, 3)
    assert str(workdir.resolve() / "outcome.json") in caplog.text
    assert "No space left on device" in caplog.text
    assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # no temporary file left


def test_a_lock_that_cannot_be_taken_is_a_crashed_value(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    outcome = get_labeler("emt").label(cu4(), workdir=blocker / "calc")
    assert outcome.kind is FailureKind.CRASHED and "scratch directory" in outcome.message


# ----------------------------------------------------------------------------- paths
def test_paths_are_stored_relative_and_follow_a_moved_workdir(tmp_path: Path) -> None:
    runner = ScriptedRunner(
        FakeRunner(files={"cp2k.out": FIXTURES / "cp2k/Si2_unconverged.out"}),
        FakeRunner(files={"cp2k.out": FIXTURES / "cp2k/Si2_converged.out"}),
    )
    labeler = get_labeler(
        "cp2k",
        basis_set="SZV-MOLOPT-SR-GTH",
        data_dir=cp2k_stub_data(tmp_path / "data"),
        executor=Executor(command=fake_executable(tmp_path / "bin", "cp2k"), runner=runner),
    )
    workdir = tmp_path / "campaign" / "calc"
    first = labeler.label(si2(), workdir=workdir)
    assert isinstance(first, LabelResult) and runner.calls == 2
    assert first.workdir == str(workdir.resolve() / "attempt-1")
    text = (workdir / "outcome.json").read_text()
    assert str(workdir) not in text and str(workdir.resolve()) not in text  # relative paths
    record = json.loads(text)
    assert record["workdir"] == "attempt-1"
    assert [a["workdir"] for a in record["attempts"]] == [
        "attempt-0.failed-scf_unconverged",
        "attempt-1",
    ]

    shutil.move(tmp_path / "campaign", tmp_path / "elsewhere")  # the data directory moved
    moved = tmp_path / "elsewhere" / "calc"
    assert not workdir.exists()
    again = labeler.label(si2(), workdir=moved)
    assert again.reused and runner.calls == 2
    assert again.workdir == str(moved.resolve() / "attempt-1")
    assert all(Path(a.workdir).is_dir() and Path(a.workdir).parent == moved for a in again.attempts)
    assert (Path(again.workdir) / "cp2k.out").is_file()
    assert again.forces.tobytes() == first.forces.tobytes()


# ----------------------------------------------------------------------------- round trips
def test_floats_round_trip_bit_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(5, 3)) * 10.0 ** rng.integers(-300, 300, size=(5, 3))
    forces[0] = [5e-324, -2.2250738585072014e-308, 1.7976931348623157e308]  # extremes
    forces[1] = [0.1 + 0.2, 1 / 3, -np.nextafter(1.0, 2.0)]
    result = LabelResult(
        labeler="emt",
        energy=float(np.nextafter(-3.0, 0.0)),
        forces=forces,
        stress=rng.normal(size=6) * 1e-3,
        code_version="x",
        settings_hash="h",
        settings={"kpts": (3, 3, 3), "cutoff": 30.000000000000004},
        wall_time=0.1,
        host="node",
        workdir=None,
        attempts=(AttemptRecord(0, "ok", {}, "", 0.05, None),),
    )
    atoms = Atoms("H5", positions=rng.normal(size=(5, 3)) * 3)
    written = write_outcome(tmp_path, result, atoms)
    back = read_outcome(tmp_path)
    assert isinstance(back, LabelResult) and written.persisted and back.reused
    assert back.energy == result.energy and back.forces.tobytes() == forces.tobytes()
    assert back.stress.tobytes() == result.stress.tobytes()
    assert back.settings == {"kpts": [3, 3, 3], "cutoff": 30.000000000000004} == written.settings


def test_from_dict_inverts_to_dict_and_rejects_malformed_records() -> None:
    result = get_labeler("emt").label(cu4())
    back = LabelResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.to_dict() == result.to_dict() and back.forces.tobytes() == result.forces.tobytes()
    failure = get_labeler(
        "emt", faults=FaultInjection({FailureKind.CRASHED: 1.0}), retry_policy=None
    ).label(cu4())
    assert isinstance(failure, LabelFailure) and len(failure.attempts) == 2
    assert LabelFailure.from_dict(failure.to_dict()) == failure
    assert outcome_from_dict(failure.to_dict()) == failure
    assert AttemptRecord.from_dict(failure.attempts[1].to_dict()) == failure.attempts[1]
    good = result.to_dict()
    for bad in (
        {k: v for k, v in good.items() if k != "energy"},
        {**good, "forces": [[1.0, 2.0]]},
        {**good, "stress": [0.0] * 5},
        {**good, "energy": "1.0"},
        {**good, "status": "crashed"},
        {**good, "attempts": [{"index": "0", "status": "ok"}]},
    ):
        with pytest.raises(ValueError):
            LabelResult.from_dict(bad)
    with pytest.raises(ValueError, match="FailureKind"):
        LabelFailure.from_dict({**failure.to_dict(), "kind": "exploded"})


def test_input_fingerprint_is_exact_and_covers_physical_state() -> None:
    atoms = cu4()
    base = input_fingerprint(atoms)
    assert input_fingerprint(atoms.copy()) == base
    changes = [
        lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 1e-12),
        lambda a: a.set_cell(a.cell.array * (1 + 1e-15), scale_atoms=False),
        lambda a: a.set_pbc([True, True, False]),
        lambda a: a.set_atomic_numbers([29, 29, 29, 28]),
        lambda a: a.set_initial_magnetic_moments([1.0, 0, 0, 0]),
        lambda a: a.set_initial_charges([0.5, 0, 0, 0]),
    ]
    for change in changes:
        other = atoms.copy()
        change(other)
        assert input_fingerprint(other) != base
    same = atoms.copy()
    same.set_tags([1, 2, 3, 4])
    same.info["note"] = "not physics"
    same.set_initial_magnetic_moments([0.0] * 4)  # explicit zeros are the default
    assert input_fingerprint(same) == base
    zero = Atoms("H", positions=[[0.0, 0.0, 0.0]])
    negative_zero = Atoms("H", positions=[[-0.0, 0.0, 0.0]])
    assert input_fingerprint(zero) == input_fingerprint(negative_zero)


# ----------------------------------------------------------------------------- edges
def test_preflight_failure_creates_nothing_and_is_not_stored(tmp_path: Path) -> None:
    outcome = get_labeler("emt").label(too_close(cu4()), workdir=tmp_path / "w")
    assert outcome.kind is FailureKind.INVALID_INPUT and not outcome.persisted
    assert not (tmp_path / "w").exists()
    (tmp_path / "w").mkdir()  # an existing directory: checked under the lock, still not stored
    assert get_labeler("emt").label(too_close(cu4()), workdir=tmp_path / "w").kind is (
        FailureKind.INVALID_INPUT
    )
    assert read_outcome(tmp_path / "w") is None


def test_without_workdir_nothing_is_persisted(tmp_path: Path) -> None:
    result = get_labeler("emt").label(cu4())
    assert result.ok and not result.persisted and not result.reused
    assert read_outcome(tmp_path) is None


def test_discard_outcome_lets_a_stored_failure_be_retried(tmp_path: Path) -> None:
    workdir = tmp_path / "calc"
    failing = get_labeler("emt", faults=FaultInjection({FailureKind.TIMEOUT: 1.0}))
    assert failing.label(cu4(), workdir=workdir).kind is FailureKind.TIMEOUT
    assert discard_outcome(workdir) == (workdir / "outcome.json.discarded-1").resolve()
    assert discard_outcome(workdir) is None and discard_outcome(tmp_path / "nowhere") is None
    assert not (tmp_path / "nowhere").exists()
    labeler = get_labeler("emt")
    runs = count_runs(labeler)
    assert labeler.label(cu4(), workdir=workdir).ok and runs == [0]


def test_stale_temporary_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    workdir = tmp_path / "calc"
    workdir.mkdir()
    (workdir / ".outcome.json.abc123.tmp").write_text('{"format": "pesflow.label')
    assert get_labeler("emt").label(cu4(), workdir=workdir).persisted
    assert sorted(p.name for p in workdir.iterdir()) == [".lock", "outcome.json"]


def test_missing_executable_is_not_stored(tmp_path: Path) -> None:
    """A code missing on this machine is no result of the calculation: another node retries."""
    labeler = get_labeler("emt", faults=FaultInjection({FailureKind.MISSING_EXECUTABLE: 1.0}))
    runs = count_runs(labeler)
    for expected in ([0], [0, 0]):
        outcome = labeler.label(cu4(), workdir=tmp_path / "calc")
        assert outcome.kind is FailureKind.MISSING_EXECUTABLE and not outcome.persisted
        assert runs == expected
    assert read_outcome(tmp_path / "calc") is None
