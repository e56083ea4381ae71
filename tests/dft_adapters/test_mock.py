"""The EMT/LJ/Morse mocks: element support and deterministic fault injection for loop tests."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from dft_adapters import FailureKind, LabelFailure, LabelResult, RetryPolicy, get_labeler
from dft_adapters.mock import SPREAD_KINDS, FaultInjection, structure_fingerprint
from dft_adapters.testing import count_runs

from .conftest import cu4


def _structures(n: int) -> list[Atoms]:
    out = []
    for seed in range(n):
        atoms = cu4()
        atoms.rattle(0.02, seed=100 + seed)
        out.append(atoms)
    return out


def test_emt_rejects_elements_it_has_no_parameters_for() -> None:
    outcome = get_labeler("emt").label(bulk("Si"))
    assert outcome.kind is FailureKind.INVALID_INPUT and "Si" in outcome.message


@pytest.mark.parametrize("name", ["lj", "morse"])
def test_pair_potentials_work_for_any_element(name: str) -> None:
    atoms = Atoms("XeUOg", positions=[[0, 0, 0], [2.6, 0, 0], [0, 2.7, 0.3]])
    result = get_labeler(name).label(atoms)
    assert isinstance(result, LabelResult) and result.stress is None
    assert np.abs(result.forces.sum(axis=0)).max() < 1e-10  # Newton's third law


def test_faults_are_deterministic_and_seeded() -> None:
    structures = _structures(60)
    faults = FaultInjection.spread(0.5, seed=7)
    first = [
        get_labeler("emt", faults=faults, retry_policy=RetryPolicy.no_retries()).label(a).status
        for a in structures
    ]
    again = [
        get_labeler("emt", faults=faults, retry_policy=RetryPolicy.no_retries())
        .label(a.copy())
        .status
        for a in structures
    ]
    other = [
        get_labeler(
            "emt", faults=FaultInjection.spread(0.5, seed=8), retry_policy=RetryPolicy.no_retries()
        )
        .label(a)
        .status
        for a in structures
    ]
    assert first == again
    assert first != other


def test_fraction_and_kinds_of_injected_faults() -> None:
    labeler = get_labeler(
        "emt", faults=FaultInjection.spread(0.3, seed=1), retry_policy=RetryPolicy.no_retries()
    )
    counts = Counter(labeler.label(a).status for a in _structures(500))
    failed = 500 - counts["ok"]
    assert 0.24 < failed / 500 < 0.36  # binomial sd 0.02
    assert {k.value for k in SPREAD_KINDS} | {"ok"} == set(counts)  # every kind spread occurs
    named = FaultInjection.spread(0.3, [FailureKind.UNPARSABLE_OUTPUT], seed=1)
    failures = [get_labeler("emt", faults=named).label(a) for a in _structures(40)]
    unparsable = [f for f in failures if not f.ok]
    assert unparsable and all(len(f.attempts) == 1 for f in unparsable)  # never retried


def test_retries_recover_retryable_faults() -> None:
    """Attempt index enters the decision, so the retry of an injected SCF failure can succeed."""
    faults = FaultInjection({FailureKind.SCF_UNCONVERGED: 0.5, FailureKind.CRASHED: 0.2}, seed=3)
    no_retry = get_labeler("emt", faults=faults, retry_policy=RetryPolicy.no_retries())
    with_retry = get_labeler(
        "emt", faults=faults, retry_policy=RetryPolicy(scf_retries=4, crashed_retries=1)
    )
    structures = _structures(200)
    plain = sum(no_retry.label(a).ok for a in structures)
    retried = [with_retry.label(a) for a in structures]
    assert sum(r.ok for r in retried) > plain + 50
    multi = [r for r in retried if r.ok and len(r.attempts) > 1]
    assert multi and all(r.attempts[-1].ok and not r.attempts[0].ok for r in multi)
    clean = get_labeler("emt")
    for atoms, result in list(zip(structures, retried, strict=True))[:20]:
        if result.ok:  # faults never perturb a successful label
            reference = clean.label(atoms)
            assert result.energy == reference.energy and np.array_equal(
                result.forces, reference.forces
            )


def test_non_retryable_faults_are_tried_once() -> None:
    labeler = get_labeler("emt", faults=FaultInjection({FailureKind.INVALID_INPUT: 1.0}))
    outcome = labeler.label(cu4())
    assert isinstance(outcome, LabelFailure) and len(outcome.attempts) == 1


def test_delay_is_slept_per_attempt() -> None:
    labeler = get_labeler("emt", faults=FaultInjection(delay=0.05))
    t0 = time.perf_counter()
    result = labeler.label(cu4())
    assert time.perf_counter() - t0 >= 0.05 and result.wall_time >= 0.05


def test_fingerprint_ignores_copies_but_not_moves() -> None:
    a = cu4()
    b = a.copy()
    assert structure_fingerprint(a) == structure_fingerprint(b)
    b.positions[0, 0] += 1e-3
    assert structure_fingerprint(a) != structure_fingerprint(b)


def test_invalid_fault_rates_are_rejected() -> None:
    with pytest.raises(ValueError, match="sum to <= 1"):
        FaultInjection({FailureKind.CRASHED: 0.8, FailureKind.TIMEOUT: 0.3})
    with pytest.raises(ValueError):
        FaultInjection({"no_such_kind": 0.1})


def test_concurrent_labels_equal_sequential_ones(tmp_path) -> None:
    """Workflows label from a thread pool: one labeler, many threads, same outcomes."""
    from concurrent.futures import ThreadPoolExecutor

    labeler = get_labeler("emt", faults=FaultInjection.spread(0.3, seed=5))
    structures = _structures(40)
    sequential = [labeler.label(a) for a in structures]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(labeler.label, structures))
    for s, p in zip(sequential, parallel, strict=True):
        assert s.status == p.status
        if s.ok:
            assert s.energy == p.energy and np.array_equal(s.forces, p.forces)


def test_concurrent_file_labels_of_one_workdir_compute_once(tmp_path) -> None:
    """Threads labelling the same work directory: the lock serialises them, the first computes
    (in ``attempt-0``), the others re-read its outcome."""
    from concurrent.futures import ThreadPoolExecutor

    labeler = get_labeler("pyscf", basis="sto-3g")
    computed = count_runs(labeler)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(
                lambda _: labeler.label(
                    Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), workdir=tmp_path / "same"
                ),
                range(4),
            )
        )
    assert all(r.ok for r in results) and len(computed) == 1
    assert sorted(r.reused for r in results) == [False, True, True, True]
    assert {r.workdir for r in results} == {str((tmp_path / "same" / "attempt-0").resolve())}
    assert len({r.energy for r in results}) == 1
