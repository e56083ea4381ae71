"""Alembic: upgrade on an empty database creates the schema the models describe; downgrade
removes it; upgrade works again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from database import Store, current_revision, downgrade, make_engine, upgrade
from database.models import Base

TABLES = {
    "campaigns",
    "campaign_leases",
    "iterations",
    "iteration_steps",
    "iteration_drops",
    "walker_runs",
    "candidates",
    "structures",
    "selections",
    "labels",
    "label_attempts",
    "models",
    "api_tokens",
}


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(empty_db_url):
    db_url = empty_db_url
    engine = make_engine(db_url)
    try:
        assert _tables(engine) == set()
        assert current_revision(engine) is None
        upgrade(engine)
        assert _tables(engine) == TABLES
        head = current_revision(engine)
        assert head is not None
        with engine.connect() as conn:  # the migrated schema is exactly the models' schema
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        downgrade(engine, "base")
        assert _tables(engine) == set()
        assert current_revision(engine) is None
        upgrade(engine)
        assert _tables(engine) == TABLES
        assert current_revision(engine) == head
    finally:
        engine.dispose()


def test_store_works_after_a_downgrade_upgrade_cycle(empty_db_url):
    db_url = empty_db_url
    upgrade(db_url)
    downgrade(db_url)
    with Store.from_url(db_url) as store:
        assert store.create_campaign("again").name == "again"
        assert [c.name for c in store.list_campaigns()] == ["again"]


def test_sqlite_pragmas(tmp_path):
    with Store.sqlite(tmp_path) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (tmp_path / "pesflow.sqlite").exists()


def test_sqlite_write_transactions_take_the_write_lock_up_front(tmp_path):
    import sqlite3

    import pytest
    from sqlalchemy import text

    with Store.sqlite(tmp_path) as store, store.session(write=True) as sess:
        sess.execute(text("SELECT count(*) FROM labels"))  # a read: BEGIN IMMEDIATE already ran
        other = sqlite3.connect(tmp_path / "pesflow.sqlite", timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
    with Store.sqlite(tmp_path) as store, store.session(write=False) as sess:
        sess.execute(text("SELECT count(*) FROM labels"))
        other = sqlite3.connect(tmp_path / "pesflow.sqlite", timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a read transaction does not block writers
        other.execute("ROLLBACK")
        other.close()


def test_concurrent_upgrades_of_an_empty_database(empty_db_url):
    db_url = empty_db_url
    # Three processes (e.g. workers starting at once) migrate the same empty database.
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys; from database import upgrade; upgrade(sys.argv[1])"
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url], cwd=root, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    engine = make_engine(db_url)
    try:
        assert _tables(engine) == TABLES
    finally:
        engine.dispose()


def test_in_memory_sqlite_store():
    with Store.from_url("sqlite://") as store:
        store.create_campaign("mem")
        assert [c.name for c in store.list_campaigns()] == ["mem"]


def _old_rows(conn) -> None:
    """Rows as revision 0001 stored them: walker statistics, candidates, timings and the
    decision inside ``iterations.validation`` / ``step_timings``, attempts counting claims,
    absolute checkpoint paths and two model rows for one iteration (a concurrent run)."""
    from sqlalchemy import text

    from database import encode_array

    now = "2026-11-29 12:00:00+00:00"
    conn.execute(
        text(
            "INSERT INTO campaigns (id, name, config, status, created_at, updated_at) "
            "VALUES (1, 'old', '{}', 'running', :t, :t)"
        ),
        {"t": now},
    )
    for sid in (1, 2, 3):
        conn.execute(
            text(
                "INSERT INTO structures (id, hash, natoms, formula, numbers, positions, cell, pbc,"
                " source, info, created_at) VALUES (:i, :h, 1, 'Cu', :n, :p, :c, :b, 'md', '{}', :t)"
            ),
            {
                "i": sid,
                "h": f"{sid:064d}",
                "n": encode_array([29]),
                "p": encode_array([[0.0, 0.0, float(sid)]]),
                "c": encode_array([[3.6, 0, 0], [0, 3.6, 0], [0, 0, 3.6]]),
                "b": encode_array([True, True, True]),
                "t": now,
            },
        )
    import json

    validation = {
        "val_force_rmse": 0.05,
        "decision": "iteration 0: accurate fraction 0.500 < 0.9",
        "walker:0": {
            "temperature": 300.0,
            "pressure": 0.0,
            "ensemble": "nvt",
            "n_frames": 3,
            "n_accurate": 1,
            "n_candidate": 2,
            "n_failed": 0,
            "devs": [0.01, 0.2, None],
            "candidates": [[1, 0.2, 0.2], [2, 0.3, 0.3]],
            "stopped_early": False,
            "stop_reason": None,
            "error": None,
            "md_wall_s": 1.5,
        },
        "walker:1": {"n_frames": 0, "n_failed": 1, "devs": [], "candidates": [], "error": "boom"},
    }
    conn.execute(
        text(
            'INSERT INTO iterations (id, campaign_id, "index", status, step_timings, n_explored,'
            " n_accurate, n_candidate, n_failed, validation, finished_at) VALUES (1, 1, 0,"
            " 'done', :st, 3, 1, 2, 0, :v, :t)"
        ),
        {
            "st": json.dumps(
                {"seed": 0.1, "train": 9.0, "explore": 3.0, "select": 0.2, "label": 2.0}
            ),
            "v": json.dumps(validation),
            "t": now,
        },
    )
    for lid, sid, status, attempts in (
        (1, 1, "done", 2),
        (2, 2, "failed", 3),
        (3, 3, "pending", 1),
    ):
        conn.execute(
            text(
                "INSERT INTO labels (id, structure_id, campaign_id, iteration_id, labeler,"
                " labeler_version, settings_hash, settings, status, energy, forces, failure_kind,"
                " failure_message, attempts, created_at) VALUES (:id, :sid, 1, 1, 'emt', '',"
                " 'h', '{}', :st, :e, :f, :k, :m, :a, :t)"
            ),
            {
                "id": lid,
                "sid": sid,
                "st": status,
                "e": -1.0 if status == "done" else None,
                "f": encode_array([[0.0, 0.0, 0.0]]) if status == "done" else None,
                "k": "timeout" if status == "failed" else None,
                "m": "walltime" if status == "failed" else None,
                "a": attempts,
                "t": now,
            },
        )
    for mid in (1, 2):
        conn.execute(
            text(
                "INSERT INTO models (id, campaign_id, iteration_id, member_count, checkpoint_uri,"
                " checkpoint_sha256, training_label_ids, validation, created_at) VALUES (:i, 1, 1,"
                " 4, '/srv/data/campaigns/old/models/iter-000.pt', :h, :l, '{}', :t)"
            ),
            {"i": mid, "h": "0" * 64, "l": encode_array([1]), "t": now},
        )


def test_upgrade_carries_old_progress_into_rows_and_back(empty_db_url):
    import numpy as np

    upgrade(empty_db_url, "0001")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            _old_rows(conn)
    finally:
        engine.dispose()
    upgrade(empty_db_url)
    with Store.from_url(empty_db_url, migrate=False) as store:
        c = store.get_campaign("old")
        assert c.status == "interrupted"  # was running, nobody holds it
        (it,) = store.list_iterations(c.id)
        assert it.decision == "iteration 0: accurate fraction 0.500 < 0.9"
        assert it.step_timings == {
            "seed": 0.1,
            "train": 9.0,
            "explore": 3.0,
            "select": 0.2,
            "label": 2.0,
            "decide": 0.0,
        }
        assert it.completed_steps == {"seed", "train", "explore", "select", "label", "decide"}
        w0, w1 = store.list_walker_runs(it.id)
        assert (w0.status, w0.n_frames, w0.temperature, w0.md_wall_s) == ("done", 3, 300.0, 1.5)
        assert w0.max_force_devs[:2].tolist() == [0.01, 0.2] and np.isnan(w0.max_force_devs[2])
        assert (w1.status, w1.error, w1.n_failed) == ("failed", "boom", 0)
        cands = store.list_candidates(it.id)
        assert [(x.structure_id, x.uncertainty) for x in cands] == [(1, 0.2), (2, 0.3)]
        done, failed, pending = (store.get_label(i) for i in (1, 2, 3))
        assert (done.claims, done.attempts) == (2, 1)
        assert (failed.claims, failed.attempts) == (3, 1)
        assert (pending.claims, pending.attempts) == (1, 0)
        (a,) = store.list_label_attempts(2)
        assert (a.status, a.message) == ("timeout", "walltime")
        m1, m2 = store.list_models(c.id)
        assert m1.iteration_id is None and m2.iteration_id == it.id  # the later one kept
        assert m2.checkpoint_uri == "campaigns/old/models/iter-000.pt"
        assert store.iteration_metrics(c.id)[0].walkers_failed == 1
    downgrade(empty_db_url, "0001")
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            from sqlalchemy import text

            v = conn.execute(text("SELECT validation, step_timings FROM iterations")).one()
            import json

            validation = v[0] if isinstance(v[0], dict) else json.loads(v[0])
            assert validation["decision"].startswith("iteration 0")
            assert validation["walker:0"]["candidates"] == [[1, 0.2, 0.2], [2, 0.3, 0.3]]
            assert validation["walker:1"]["error"] == "boom"
    finally:
        engine.dispose()


def test_opening_a_database_at_head_does_not_write(tmp_path, monkeypatch):
    """Read-only commands (status, export) on a read-only database: nothing to migrate, so
    nothing is written while opening."""
    import pytest

    from database import Store, engine

    Store.sqlite(tmp_path).close()

    def no_writes(*args, **kwargs):
        raise AssertionError("opened a database at head with a write")

    monkeypatch.setattr(engine, "upgrade", no_writes)
    with Store.sqlite(tmp_path) as store:
        assert store.list_campaigns() == []
    from database import DatabaseUnavailableError

    (tmp_path / "a-file").write_text("not a directory")
    bad = tmp_path / "a-file" / "pesflow.sqlite"
    with pytest.raises(DatabaseUnavailableError, match=r"cannot open database .*a-file"):
        Store.from_url(f"sqlite:///{bad}", migrate=False)


def test_upgrade_gives_existing_tokens_admin_scope(empty_db_url):
    """Tokens from before scopes (revision 0002) could do everything: they become ``admin``,
    never expire, have no recorded use; the scope is checked by the database."""
    import pytest
    from sqlalchemy import exc, text

    from database import hash_token

    upgrade(empty_db_url, "0002")
    engine = make_engine(empty_db_url)
    insert = "INSERT INTO api_tokens (name, token_sha256, created_at) VALUES (:n, :h, :t)"
    try:
        with engine.begin() as conn:
            for name in ("old", "gone"):
                row = {"n": name, "h": hash_token(f"pf_{name}"), "t": "2026-11-29 12:00:00+00:00"}
                conn.execute(text(insert), row)
        upgrade(engine)
        with pytest.raises(exc.IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO api_tokens (name, token_sha256, scope, created_at) "
                    "VALUES ('bad', 'x', 'root', '2026-11-29 12:00:00+00:00')"
                )
            )
    finally:
        engine.dispose()
    with Store.from_url(empty_db_url, migrate=False) as store:
        store.revoke_api_token("gone")
        rec = store.verify_api_token("pf_old")
        assert (rec.name, rec.scope, rec.expires_at, rec.last_used_at) == (
            "old",
            "admin",
            None,
            None,
        )
        assert store.verify_api_token("pf_gone") is None
        assert store.add_api_token("new", "pf_new", scope="read").scope == "read"
    downgrade(empty_db_url, "0002")
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            names = conn.execute(text("SELECT name FROM api_tokens ORDER BY id")).scalars().all()
        assert names == ["old", "gone", "new"]
    finally:
        engine.dispose()
