"""Database faults (read-only, disk full) are retried with backoff and reported with where and
why; a fault that clears during the retries is survived; nothing stored is lost.

The faults are the databases' own: SQLite's ``PRAGMA query_only`` (SQLITE_READONLY) and
``PRAGMA max_page_count`` (SQLITE_FULL, what a full disk gives), PostgreSQL's read-only
transactions (SQLSTATE 25006, what a standby or ``default_transaction_read_only`` gives),
switched on for every new connection of the store's engine.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event

from database import DatabaseUnavailableError, DbRetry, Store

from .conftest import make_atoms, make_result


class Fault:
    """Make every new connection of ``store``'s engine read-only or full until cleared."""

    def __init__(self, store: Store, kind: str) -> None:
        self.store, self.kind, self.on = store, kind, False
        event.listen(store.engine, "connect", self._connect)

    def _connect(self, dbapi_conn, _record) -> None:
        if not self.on:
            return
        cur = dbapi_conn.cursor()
        if self.store.backend == "postgresql":
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        elif self.kind == "read-only":
            cur.execute("PRAGMA query_only = ON")
        else:
            pages = cur.execute("PRAGMA page_count").fetchone()[0]
            cur.execute(f"PRAGMA max_page_count = {pages}")
        cur.close()
        if self.store.backend == "postgresql":
            dbapi_conn.commit()

    def set(self, on: bool) -> None:
        self.on = on
        self.store.engine.dispose()  # pooled connections are replaced by faulty / healthy ones

    def close(self) -> None:
        event.remove(self.store.engine, "connect", self._connect)


CASES = [
    ("sqlite", "read-only"),
    ("sqlite", "disk full"),
    pytest.param(("postgres", "read-only"), marks=pytest.mark.postgres),
]


@pytest.fixture(params=CASES, ids=lambda c: f"{c[0]}-{c[1]}".replace(" ", "_"))
def faulty(request, tmp_path):
    backend, kind = request.param
    if backend == "sqlite":
        from database import sqlite_url

        url = sqlite_url(tmp_path / "data")
    else:
        from database.testing import temporary_postgres_schema

        from .conftest import postgres_url_or_skip

        cm = temporary_postgres_schema(postgres_url_or_skip())
        url = cm.__enter__()
        request.addfinalizer(lambda: cm.__exit__(None, None, None))
    store = Store.from_url(url)
    store.db_retry = DbRetry(attempts=4, base_delay_s=0.05)
    fault = Fault(store, kind)
    yield store, fault, kind
    fault.close()
    store.close()


def _labelled(store: Store) -> tuple[int, int]:
    c = store.create_campaign("f")
    atoms = make_atoms(0)
    (sid,) = store.add_structures([atoms], campaign=c.id)
    (lid,) = store.request_labels(c.id, [sid], labeler="mock", settings_hash="h")
    store.claim_labels(limit=1)
    return c.id, lid


def test_fault_is_reported_with_where_and_why_and_nothing_is_lost(faulty):
    store, fault, kind = faulty
    cid, lid = _labelled(store)
    e, f, s = make_result(make_atoms(0))
    big = [make_atoms(i, n_cells=4) for i in range(1, 40)]  # a write that needs new pages
    fault.set(True)
    t0 = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as err:
        store.add_structures(big, campaign=cid)
        store.store_result(lid, energy=e, forces=f, stress=s)
    msg = str(err.value)
    assert err.value.cause == kind, msg
    assert kind in msg and "tried 4 times" in msg
    where = "SQLite file" if store.backend == "sqlite" else "PostgreSQL 127.0.0.1:5432/test"
    assert where in msg and "\n" not in msg
    assert time.monotonic() - t0 >= 0.05 + 0.1 + 0.2  # backed off between the tries
    fault.set(False)
    # nothing already stored was lost, and the same write goes through once healthy
    assert store.get_label(lid).status == "running"
    assert store.store_result(lid, energy=e, forces=f, stress=s).status == "done"


def test_a_fault_that_clears_during_the_retries_is_survived(faulty):
    store, fault, _ = faulty
    store.db_retry = DbRetry(attempts=8, base_delay_s=0.1, max_delay_s=0.4)
    _, lid = _labelled(store)
    e, f, s = make_result(make_atoms(0))
    fault.set(True)
    threading.Timer(0.4, fault.set, args=(False,)).start()
    assert store.store_result(lid, energy=e, forces=f, stress=s).status == "done"
    assert store.get_label(lid).energy == e


def test_input_errors_are_not_retried(store):
    store.db_retry = DbRetry(attempts=5, base_delay_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="unknown campaign"):
        store.start_iteration("nope")
    assert time.monotonic() - t0 < 0.5
