"""pesflow's Dask runner: Prefect settings shipped once per flow run, one Prefect client per
worker thread, and otherwise what ``prefect_dask.DaskTaskRunner`` does."""

from __future__ import annotations

import os
import pickle

import cloudpickle
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import SettingsContext
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_TASK_DEFAULT_RETRY_DELAY_SECONDS,
    temporary_settings,
)

from workflows.cluster import make_task_runner
from workflows.config import ExecutionConfig
from workflows.dask_runner import PesflowDaskTaskRunner, SettingsPayload, SharedSettingsContext


def test_settings_payload_rebuilds_what_prefect_rebuilds_once_per_process() -> None:
    current = SettingsContext.get()
    shared = SharedSettingsContext(profile=current.profile, settings=current.settings)
    payload = shared.serialize()
    assert isinstance(payload, SettingsPayload)
    assert shared.serialize() is payload  # serialised once
    # what a worker gets: the plain mapping SettingsContext(**...) takes
    plain = pickle.loads(cloudpickle.dumps(payload))
    assert type(plain) is dict and set(plain) == {"profile", "settings"}
    reference = SettingsContext(**current.serialize())  # what prefect_dask's worker builds
    assert plain["settings"].model_dump() == reference.settings.model_dump()
    assert plain["profile"].name == reference.profile.name
    again = pickle.loads(cloudpickle.dumps(payload))
    assert again["settings"] is plain["settings"]  # rebuilt once per process
    # in-process (a cluster of threads) the payload reads as that mapping directly
    assert SettingsContext(**payload).settings is plain["settings"]
    # anything that asks for the secret-free dict still gets Prefect's own
    assert shared.serialize(include_secrets=False) == current.serialize(include_secrets=False)


@task(cache_policy=NO_CACHE)
def _probe() -> tuple[int, float, int, str | None, str]:
    from prefect.client.orchestration import get_client

    client = get_client(sync_client=True)
    return (
        os.getpid(),
        PREFECT_TASK_DEFAULT_RETRY_DELAY_SECONDS.value(),
        id(client),
        PREFECT_API_URL.value(),
        str(client.api_url).rstrip("/"),
    )


def test_runner_carries_the_flow_settings_and_reuses_one_client(prefect_harness) -> None:
    runner = make_task_runner(
        ExecutionConfig.model_validate(
            {
                "task_runner": "dask",
                "dask": {
                    "cluster_class": "local",
                    "cluster_kwargs": {"n_workers": 1, "threads_per_worker": 1},
                },
            }
        )
    )
    assert isinstance(runner, PesflowDaskTaskRunner)

    @flow(name="probe-dask-runner")
    def probe() -> list:
        return [_probe.submit().result() for _ in range(3)]

    with temporary_settings({PREFECT_TASK_DEFAULT_RETRY_DELAY_SECONDS: 7}):
        out = probe.with_options(task_runner=runner)()
        api = PREFECT_API_URL.value()
    pids = {o[0] for o in out}
    assert len(pids) == 1 and os.getpid() not in pids  # ran in a Dask worker process
    assert [o[1] for o in out] == [7, 7, 7]  # a setting of the flow reached the worker
    assert {o[3] for o in out} == {api}  # and reported to the flow's API
    assert len({o[2] for o in out}) == 1  # one Prefect client for the worker thread
    # ... a client of the flow's API, although the worker's environment names none (the
    # harness sets it in the flow's settings only): it must not start a server of its own
    assert "PREFECT_API_URL" not in os.environ
    assert {o[4] for o in out} == {api.rstrip("/")}


def test_runner_survives_pickling_with_the_flow() -> None:
    runner = PesflowDaskTaskRunner(cluster_kwargs={"n_workers": 1})
    runner._shared = (SettingsContext.get(), None)  # type: ignore[assignment]
    clone = cloudpickle.loads(cloudpickle.dumps(runner))
    assert clone._shared is None and clone.cluster_kwargs == {"n_workers": 1}
    assert type(clone.duplicate()) is PesflowDaskTaskRunner


def test_thread_client_uses_the_shipped_api_and_runs_on_when_it_is_unreachable(caplog) -> None:
    """A task carries its flow's settings; the worker thread's client is built under them.
    An API nobody answers on (a compute node without a route) is logged once, not fatal."""
    import logging
    import socket
    import threading

    from prefect.client.orchestration import get_client

    from workflows.dask_runner import ThreadClient

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/api"
    current = SettingsContext.get()
    with temporary_settings({PREFECT_API_URL: url}):
        shipped = SettingsContext.get().serialize()
    assert current.settings.api.url != url

    def task_body(n: int, context: dict) -> tuple[int, str, int]:
        client = get_client(sync_client=True)
        return n, str(client.api_url).rstrip("/"), id(client)

    out: list = []

    def worker_thread() -> None:  # a fresh thread: no client cached yet
        call = ThreadClient(task_body)
        out.extend(call(n, context={"settings_context": shipped}) for n in range(2))

    caplog.set_level(logging.WARNING, logger="workflows.dask_runner")
    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join(60)
    assert [o[0] for o in out] == [0, 1]  # both tasks ran
    assert {o[1] for o in out} == {url}  # on a client of the shipped API
    assert len({o[2] for o in out}) == 1  # one client for the thread
    warnings = [r.getMessage() for r in caplog.records if "not reachable" in r.getMessage()]
    assert len(warnings) == 1 and url in warnings[0]
