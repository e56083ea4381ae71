"""A label is shared by every campaign that selected its structure (unique per structure and
labeler settings). A campaign's label step must neither go on without the labels another
campaign's live run is computing (its training set would depend on timing) nor wait forever for
labels a dead run left ``running``: it waits for the first, takes over the second, and never
runs a DFT calculation twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from workflows import label, steps
from workflows.config import load_config

from . import _counting
from ._campaigns import write_config

SMALL = {
    "bootstrap": {"n_structures": 4},
    "validation": {"n_structures": 4},
    "training": {"max_epochs": 3, "warm_start_epochs": 2},
}


def _two_campaigns(tmp_path: Path):
    """Campaigns 'a' and 'b' with the same structures, seed and labeler: the same labels."""
    data = tmp_path / "data"
    data.mkdir()
    store = steps.open_store(f"sqlite:///{data / 'pesflow.sqlite'}")
    out = []
    for name in ("a", "b"):
        cfg = load_config(write_config(tmp_path / f"{name}.yaml", name=name, **SMALL))
        ctx = steps.open_context(steps.setup_campaign(store, cfg, data))
        it = store.start_iteration(ctx.campaign_id, 0)
        steps.seed_step(ctx.handle, it.id)
        out.append((ctx, it))
    (a, ita), (b, itb) = out
    assert store.count_labels(b.campaign_id)["pending"] == 0  # b's requests found a's labels
    return store, a, ita, b, itb


def test_labels_a_live_run_of_another_campaign_computes_are_waited_for(tmp_path, monkeypatch):
    store, a, _, b, itb = _two_campaigns(tmp_path)
    log = tmp_path / "dft.log"
    monkeypatch.setenv(_counting.ENV, str(log))
    monkeypatch.setattr(label, "WAIT_POLL_S", 0.1)
    store.acquire_lease(a.campaign_id, token="a", host="h", pid=1, purpose="run", ttl_s=600)
    claimed = store.claim_labels(limit=3, campaign=a.campaign_id, worker="a-worker")
    store.acquire_lease(b.campaign_id, token="b", host="h", pid=2, purpose="run", ttl_s=600)

    def a_finishes_later() -> None:
        time.sleep(0.8)
        for t in claimed:
            steps.label_one(a.handle, t.label_id, "a-worker")

    threading.Thread(target=a_finishes_later).start()
    t0 = time.monotonic()
    counts = steps.label_step(b.handle, itb.id)
    assert time.monotonic() - t0 > 0.7  # it waited for a's three
    assert (counts.done, counts.failed) == (5, 0)  # b computed the other five
    labels = store.list_labels(b.campaign_id, limit=None) + store.list_labels(
        a.campaign_id, limit=None
    )
    assert {lb.status for lb in labels} == {"done"}
    runs = _counting.dft_runs(log)
    assert sum(runs.values()) == 8 and max(runs.values()) == 1  # every label once
    assert "label" in store.get_iteration(b.campaign_id, 0).completed_steps


def test_labels_a_dead_run_left_running_are_taken_over(tmp_path, monkeypatch):
    store, a, _, b, itb = _two_campaigns(tmp_path)
    log = tmp_path / "dft.log"
    monkeypatch.setenv(_counting.ENV, str(log))
    store.acquire_lease(a.campaign_id, token="a", host="h", pid=1, purpose="run", ttl_s=0.2)
    claimed = store.claim_labels(limit=3, campaign=a.campaign_id, worker="a-worker")
    time.sleep(0.4)  # a's run died: its lease expired with its three labels running
    assert store.get_campaign(a.campaign_id).status == "interrupted"
    store.acquire_lease(b.campaign_id, token="b", host="h", pid=2, purpose="run", ttl_s=600)
    counts = steps.label_step(b.handle, itb.id)
    assert (counts.done, counts.failed) == (8, 0)
    assert all(store.get_label(t.label_id).status == "done" for t in claimed)
    runs = _counting.dft_runs(log)
    assert sum(runs.values()) == 8 and max(runs.values()) == 1
