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
def _probe() -> tuple[int, float, int, str | None]:
    from prefect.client.orchestration import get_client

    client = get_client(sync_client=True)
    return (
        os.getpid(),
        PREFECT_TASK_DEFAULT_RETRY_DELAY_SECONDS.value(),
        id(client),
        PREFECT_API_URL.value(),
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


def test_runner_survives_pickling_with_the_flow() -> None:
    runner = PesflowDaskTaskRunner(cluster_kwargs={"n_workers": 1})
    runner._shared = (SettingsContext.get(), None)  # type: ignore[assignment]
    clone = cloudpickle.loads(cloudpickle.dumps(runner))
    assert clone._shared is None and clone.cluster_kwargs == {"n_workers": 1}
    assert type(clone.duplicate()) is PesflowDaskTaskRunner
