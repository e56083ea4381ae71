"""``pesflow resume --retry-failed`` on a campaign paused at ``max_iterations`` (issue 12,
points 4 and 7): the failed labels that a rerun can fix get one more round of DFT runs — each
exactly one more run, counted in the labeler, not from the database — and the history of
every label is kept (one attempt row per DFT run, with its kind and message);
``invalid_input`` failures are not requeued and the command says so. Before the fix the
requeued labels stayed ``pending`` forever and lost their kinds and messages.

The mock labeler's faults are a hash of (seed, attempt index, structure) and, with
``retries: false``, every round is attempt 0: a requeued label fails again the same way. The
test checks that it ran again and was recorded, whatever its new outcome."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from typer.testing import CliRunner

from . import _counting
from ._campaigns import write_config

runner = CliRunner()
KINDS = ["scf_unconverged", "crashed", "timeout", "invalid_input"]
CONFIG = {
    "labeler": {
        "name": "emt",
        "retries": False,
        "max_failure_rate": 0.9,
        "faults": {"fraction": 0.4, "seed": 3, "kinds": KINDS},
    },
    "bootstrap": {"n_structures": 10},
    "validation": {"n_structures": 4},
    "model": {"n_members": 2, "channels": 8, "n_layers": 1},
    "training": {"max_epochs": 6, "max_time_s": 600, "warm_start_epochs": 3},
    "exploration": {
        "walkers": [
            {"temperature": t, "steps": 40, "timestep": 2.0, "record_every": 5} for t in (600, 1200)
        ]
    },
    "trust": {"lo": 0.01, "hi": 5.0},
    "selection": {"max_per_iteration": 8, "strategy": "fps"},
    "convergence": {"accurate_ratio": 0.999, "patience": 1, "max_iterations": 2},
    "execution": {"task_runner": "threads", "max_workers": 2},
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path, monkeypatch):
    """The campaign's database, ``PESFLOW_*`` pointing at it."""
    data = tmp_path / "data"
    monkeypatch.setenv("PESFLOW_DATA_DIR", str(data))
    monkeypatch.delenv("PESFLOW_DATABASE_URL", raising=False)
    if request.param == "sqlite":
        from database import sqlite_url

        yield sqlite_url(data)
        return
    from database.testing import POSTGRES_ENV, require_test_database, temporary_postgres_schema

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.fail(f"{POSTGRES_ENV} is not set: the PostgreSQL test cannot run")
    with temporary_postgres_schema(require_test_database(base)) as url:
        monkeypatch.setenv("PESFLOW_DATABASE_URL", url)
        yield url


def _fingerprint(store, label) -> str:
    from dft_adapters.mock import structure_fingerprint

    return structure_fingerprint(store.get_atoms([label.structure_id])[0])


def test_retry_failed_after_max_iterations_reruns_each_requeued_label_once(
    database_url, prefect_harness, tmp_path, monkeypatch
):
    from pesflow.cli import app
    from workflows.steps import open_store

    cfg = write_config(tmp_path / "retry.yaml", name="retry", **CONFIG)
    data = tmp_path / "data"
    res = runner.invoke(app, ["run", str(cfg), "--quiet"])
    assert res.exit_code == 0, res.output
    store = open_store(database_url)
    rec = store.get_campaign("retry")
    assert rec.status == "paused" and "max_iterations=2" in rec.status_message, rec
    n_iterations = len(store.list_iterations(rec.id))
    n_models = len(store.list_models(rec.id))
    before = {lb.id: lb for lb in store.list_labels(rec.id, limit=None)}
    history = {i: store.list_label_attempts(i) for i in before}
    failed = [lb for lb in before.values() if lb.status == "failed"]
    kinds = Counter(lb.failure_kind for lb in failed)
    assert {lb.status for lb in before.values()} <= {"done", "failed"}
    assert kinds["invalid_input"] >= 1 and sum(kinds.values()) > kinds["invalid_input"], kinds
    for lb in before.values():
        assert lb.retry_round == 0 and lb.claims == 1
        assert lb.attempts == len(history[lb.id]) == 1  # one DFT run each (no retries)
    for lb in failed:
        (a,) = history[lb.id]
        assert a.status == lb.failure_kind and a.retry_round == 0
        assert a.message == lb.failure_message and "injected fault" in a.message
    requeue = {lb.id for lb in failed if lb.failure_kind != "invalid_input"}
    kept = {lb.id for lb in failed if lb.failure_kind == "invalid_input"}

    # resume --retry-failed, counting every DFT run the labeler makes from here on
    log = tmp_path / "dft.log"
    monkeypatch.setenv(_counting.ENV, str(log))
    res = runner.invoke(app, ["resume", "retry", "--retry-failed"])
    assert res.exit_code == 0, res.output
    output = " ".join(res.output.split())
    assert f"{len(kept)} failed label(s) not retried: invalid input" in output, res.output

    rec = store.get_campaign("retry")
    assert rec.status == "paused" and "max_iterations=2" in rec.status_message, rec
    assert len(store.list_iterations(rec.id)) == n_iterations  # nothing else ran:
    assert len(store.list_models(rec.id)) == n_models  # no iteration, no training
    after = {lb.id: lb for lb in store.list_labels(rec.id, limit=None)}
    assert set(after) == set(before)
    counts = store.count_labels(rec.id)
    assert counts["pending"] == 0 and counts["running"] == 0, counts

    # every requeued label ran exactly once more, nothing else ran
    runs = _counting.dft_runs(log)
    assert runs == Counter({_fingerprint(store, after[i]): 1 for i in requeue}), (runs, requeue)

    new_outcomes: Counter[str] = Counter()
    for i, lb in after.items():
        attempts = store.list_label_attempts(i)
        assert lb.attempts == len(attempts), (i, lb.attempts, attempts)
        if i in requeue:
            old = before[i]
            assert lb.retry_round == 1 and lb.claims == 2, lb
            assert len(attempts) == 2, attempts
            first, new = attempts
            # the earlier failure is kept with its kind and message
            assert (first.retry_round, first.attempt) == (0, 0)
            assert first.status == old.failure_kind and first.message == old.failure_message
            assert first == history[i][0]
            assert (new.retry_round, new.attempt) == (1, 0)
            # the new round ran in its own directory; the earlier outcome is kept in its own
            for r in (0, 1):
                assert (data / "labels" / str(i) / f"round-{r}" / "outcome.json").is_file()
            assert lb.status in ("done", "failed"), lb
            if lb.status == "done":
                assert new.status == "ok" and lb.energy is not None
                assert lb.failure_kind is None
            else:
                assert new.status == lb.failure_kind and new.message == lb.failure_message
                assert "injected fault" in lb.failure_message
            new_outcomes[new.status] += 1
        else:  # done, or invalid_input: untouched
            old = before[i]
            fields = ("status", "failure_kind", "failure_message", "energy", "finished_at")
            assert [getattr(lb, f) for f in fields] == [getattr(old, f) for f in fields]
            assert attempts == history[i]
            assert lb.retry_round == 0 and lb.claims == 1 and lb.attempts == 1
            if i in kept:
                assert lb.status == "failed" and lb.failure_kind == "invalid_input"
                assert "injected fault" in lb.failure_message
    assert sum(new_outcomes.values()) == len(requeue)
    print(
        f"\n{len(before)} labels, {len(failed)} failed {dict(kinds)}; requeued {len(requeue)} "
        f"(new outcomes {dict(new_outcomes)}), kept {len(kept)} invalid_input; "
        f"DFT runs in the resume: {sum(runs.values())}"
    )

    # a second --retry-failed requeues them again (round 2), still one run each
    log2 = tmp_path / "dft2.log"
    monkeypatch.setenv(_counting.ENV, str(log2))
    still = {i for i in requeue if after[i].status == "failed"}
    res = runner.invoke(app, ["resume", "retry", "--retry-failed", "--quiet"])
    assert res.exit_code == 0, res.output
    assert _counting.dft_runs(log2) == Counter({_fingerprint(store, after[i]): 1 for i in still})
    for i in still:
        lb = store.get_label(i)
        assert lb.retry_round == 2 and lb.claims == 3 and lb.attempts == 3
        assert [(a.retry_round, a.attempt) for a in store.list_label_attempts(i)] == [
            (0, 0),
            (1, 0),
            (2, 0),
        ]
    assert store.get_campaign("retry").status == "paused"
