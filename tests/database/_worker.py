"""Subprocess entry points for the concurrency and kill tests (``python -m tests.database._worker``).

Modes:
  claim URL WORKER    print READY, wait for a line on stdin (so that workers start together),
                      then claim pending labels one at a time until none is left, store a
                      result for each, print the claimed ids as one JSON list.
  hang-result URL LABEL_ID      store a result for LABEL_ID but stop just before COMMIT.
  hang-bulk URL CAMPAIGN N      add N labelled structures but stop just before COMMIT.
In the hang modes the process prints READY and sleeps: the test SIGKILLs it mid-transaction.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from sqlalchemy import event
from sqlalchemy.orm import Session

from database import Store


def _hang_before_commit() -> None:
    def hang(session):
        print("READY", flush=True)
        time.sleep(120)

    event.listen(Session, "before_commit", hang)


def main(argv: list[str]) -> None:
    mode, url = argv[0], argv[1]
    store = Store.from_url(url, migrate=False)
    if mode == "claim":
        worker = argv[2]
        store.count_labels()  # connect before the start signal
        print("READY", flush=True)
        sys.stdin.readline()
        claimed = []
        while True:
            tasks = store.claim_labels(limit=1, worker=worker)
            if not tasks:
                break
            t = tasks[0]
            claimed.append(t.label_id)
            store.store_result(
                t.label_id,
                energy=-float(t.label_id),
                forces=np.full((len(t.atoms), 3), float(t.label_id)),
                host=worker,
            )
            # A real worker computes for seconds between claims. Without any pause, a SQLite
            # writer that releases and at once re-takes the lock starves the other process,
            # whose busy handler sleeps in growing steps (measured 39 vs 961 claims).
            time.sleep(0.002)
        print(json.dumps(claimed), flush=True)
    elif mode == "hang-result":
        label_id = int(argv[2])
        _hang_before_commit()
        store.store_result(label_id, energy=-1.0, forces=np.ones((int(argv[3]), 3)))
    elif mode == "hang-bulk":
        from .conftest import make_atoms, make_result

        n = int(argv[3])
        frames = [make_atoms(1000 + i) for i in range(n)]
        results = [make_result(a, i) for i, a in enumerate(frames)]
        _hang_before_commit()
        store.add_labelled(
            argv[2],
            frames,
            energies=[r[0] for r in results],
            forces=[r[1] for r in results],
            stresses=[r[2] for r in results],
            labeler="mock",
            settings_hash="h",
        )
    else:  # pragma: no cover
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
