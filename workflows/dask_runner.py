"""``DaskTaskRunner`` without the per-task set-up costs of ``prefect_dask`` on small clusters.

Why: ``prefect_dask`` pays three fixed costs for every task it submits.
1. The flow side serialises the caller's whole Prefect context. Its settings part
   (``SettingsContext.serialize``) dumps ~50 nested settings models with secret handling.
2. The worker rebuilds that context: ``SettingsContext(**dumped)`` re-runs pydantic-settings
   for each nested model, and each one reads the environment and the profile TOML again.
3. The worker creates two new Prefect API clients. Each loads the CA bundle into a fresh SSL
   context (~18 ms of CPU, even for an ``http://`` API), and one asks the server for its version.

Profiled on a 2-process ``LocalCluster`` (2 cores, Prefect 3.8.8), this was 60–90 ms per task
on each side, and more with a worker's four threads contending for one GIL. Submissions are
serial, so eight 2-s labels started spread over ~0.7 s, and label throughput was 0.78 of ideal
(``python -m benchmarks.cluster``).

:class:`PesflowDaskTaskRunner` removes these costs without changing what reaches the task:
- Each submission runs under a :class:`SharedSettingsContext`, holding the very same profile
  and settings, serialised once per flow run into a :class:`SettingsPayload`. On a worker, the
  payload rebuilds the settings exactly as Prefect does (``SettingsContext(**dumped)``, so the
  worker's environment fills unset fields as before), but once per process and payload.
- Each Prefect task's worker-side callable runs inside a :class:`ThreadClient`: a Prefect
  ``SyncClientContext`` kept per worker thread (and API), so the engine's ``get_client`` finds
  one client instead of building two. It is built under the settings the task carries, so it
  is a client of the flow's API whatever the worker's environment says.
- A Prefect task's Dask key is its task-run id (``pure=False``): Dask no longer tokenises the
  task, its context and its parameters (by cloudpickle) to derive a key that is unique anyway.
Submission otherwise stays as ``prefect_dask`` does it: the same ``PrefectDaskClient.submit``,
and the same flow-run, task-run and tag contexts.

A worker that cannot reach the Prefect API at all (a compute node without a route to the
service node; the ``127.0.0.1`` URL of ``pesflow run``'s temporary server seen from another
node) logs one warning and runs its tasks anyway: their results return through Dask, and only
their state reports and logs are lost (``tests/cluster/test_slurm.py``). ``prefect_dask``
alone fails every such task on the client's API version check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import distributed
from prefect.context import SettingsContext, SyncClientContext
from prefect_dask import DaskTaskRunner
from prefect_dask.client import PrefectDaskClient
from pydantic import PrivateAttr

__all__ = [
    "PesflowDaskClient",
    "PesflowDaskTaskRunner",
    "SettingsPayload",
    "SharedSettingsContext",
    "ThreadClient",
    "check_api",
    "hydrate_settings",
]

log = logging.getLogger(__name__)
_lock = threading.Lock()
_thread = threading.local()
_hydrated: dict[str, dict[str, Any]] = {}
_MAX_CACHED = 16


def hydrate_settings(digest: str, dumped: dict[str, Any]) -> dict[str, Any]:
    """``{"profile": Profile, "settings": Settings}`` rebuilt from ``dumped`` (the output of
    ``SettingsContext.serialize``) as Prefect would, cached per process under ``digest``."""
    with _lock:
        hit = _hydrated.get(digest)
    if hit is None:
        ctx = SettingsContext(**dumped)
        hit = {"profile": ctx.profile, "settings": ctx.settings}
        with _lock:
            if len(_hydrated) >= _MAX_CACHED:
                _hydrated.pop(next(iter(_hydrated)))
            _hydrated[digest] = hit
    return dict(hit)


class SettingsPayload(Mapping[str, Any]):
    """The serialised settings context: pickles as ``(digest, dumped settings)`` and unpickles
    to the plain ``{"profile", "settings"}`` mapping that ``SettingsContext(**...)`` takes,
    rebuilt once per process (:func:`hydrate_settings`). Also usable in-process (a Dask
    cluster of threads): it then reads as that mapping directly."""

    def __init__(self, dumped: dict[str, Any]) -> None:
        self.dumped = dumped
        text = json.dumps(dumped, sort_keys=True, default=str)
        self.digest = hashlib.sha256(text.encode()).hexdigest()

    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, Any]]]:
        return (hydrate_settings, (self.digest, self.dumped))

    def __dask_tokenize__(self) -> str:
        return self.digest

    def __getitem__(self, key: str) -> Any:
        return hydrate_settings(self.digest, self.dumped)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(("profile", "settings"))

    def __len__(self) -> int:
        return 2


class SharedSettingsContext(SettingsContext):
    """A ``SettingsContext`` whose (secret-including) serialisation is computed once and
    returned as a :class:`SettingsPayload`."""

    _payload: SettingsPayload | None = PrivateAttr(default=None)

    def serialize(self, include_secrets: bool = True) -> Any:
        """The payload (``include_secrets=True``, what task runners ship) or Prefect's dict."""
        if not include_secrets:
            return super().serialize(include_secrets=False)
        if self._payload is None:
            self._payload = SettingsPayload(super().serialize(include_secrets=True))
        return self._payload


def _client_key(shipped: Mapping[str, Any] | None) -> str:
    """What a Prefect client depends on in shipped settings (API and client sections, secrets
    included), as a string: tasks with equal keys can share one client."""
    settings = shipped.get("settings") if shipped else None
    if settings is None:
        return ""
    if isinstance(settings, Mapping):
        parts = {"api": settings.get("api"), "client": settings.get("client")}
    else:
        reveal = {"include_secrets": True}
        parts = {
            "api": settings.api.model_dump(mode="json", context=reveal),
            "client": settings.client.model_dump(mode="json", context=reveal),
        }
    return json.dumps(parts, sort_keys=True, default=str)


class ThreadClient:
    """Wraps the worker-side callable of a Prefect task: runs it with this worker thread's
    Prefect ``SyncClientContext`` current. The context is created, and its API version is
    checked, on the thread's first task with those client settings: under the settings the
    task carries (its flow run's ``settings_context``), so the client talks to the flow's API
    even where the worker's own environment names another one or none (a batch job whose
    environment lacks ``PREFECT_API_URL``, a flow whose API comes from ``temporary_settings``
    or a Prefect profile). Without that, the engine's client would start a temporary Prefect
    server inside the worker and report the task there. An API this process cannot reach is
    reported once (:func:`check_api`) and the task runs unreported."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function with the thread's client context set."""
        shipped = (kwargs.get("context") or {}).get("settings_context") or None
        clients = getattr(_thread, "clients", None)
        if clients is None:
            clients = _thread.clients = {}
        key = _client_key(shipped)
        ctx = clients.get(key)
        if ctx is None:
            with SettingsContext(**shipped) if shipped else contextlib.nullcontext():
                ctx = SyncClientContext()
                ctx.client.__enter__()
                check_api(ctx.client, key)
            if len(clients) >= _MAX_CACHED:
                clients.pop(next(iter(clients))).client.__exit__(None, None, None)
            clients[key] = ctx
        token = SyncClientContext.__var__.set(ctx)
        try:
            return self.fn(*args, **kwargs)
        finally:
            SyncClientContext.__var__.reset(token)


_unreachable: set[str] = set()


def check_api(client: Any, key: str = "") -> bool:
    """Prefect's API version check of ``client`` (a version mismatch or a refused credential
    raises as in Prefect). An API that cannot be reached at all (connection refused, timeout,
    unknown host) is not an error here: the worker's tasks return their results through Dask,
    and only their state reports and logs to the API are lost. It is logged once per process
    and API (``key``), and later threads skip the check. Returns whether the API answered."""
    import httpx

    if key and key in _unreachable:
        return False
    try:
        client.raise_for_api_version_mismatch_once()
    except RuntimeError as exc:
        if not isinstance(exc.__cause__, httpx.TransportError | OSError):
            raise
        with _lock:
            first = key not in _unreachable
            _unreachable.add(key)
        if first:
            log.warning(
                "pesflow: the Prefect API %s is not reachable from this Dask worker (%s: %s); "
                "its tasks run on, reported to Dask only (their Prefect states and logs are lost)",
                client.api_url,
                socket.gethostname(),
                exc.__cause__,
            )
        return False
    return True


class _WrapPrefectTasks(distributed.Client):
    def submit(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if "task_run_id" in kwargs:  # the engine call built by PrefectDaskClient.submit
            func = ThreadClient(func)
            # Every task run is unique: name its key after it instead of letting Dask
            # tokenise the task, its context and parameters (pure=True: ~16 ms a submit).
            kwargs["pure"] = False
            if kwargs.get("key") is None:
                kwargs["key"] = f"{kwargs['task'].name}-{kwargs['task_run_id']}"
        return super().submit(func, *args, **kwargs)


class PesflowDaskClient(PrefectDaskClient, _WrapPrefectTasks):
    """``PrefectDaskClient`` whose Prefect tasks run in a :class:`ThreadClient` (the wrapper
    sits between ``PrefectDaskClient.submit`` and ``distributed.Client.submit``)."""


class PesflowDaskTaskRunner(DaskTaskRunner):
    """``prefect_dask.DaskTaskRunner`` whose submissions carry a :class:`SettingsPayload`
    instead of the full settings dump (see the module docstring for the measured reason)."""

    _shared: tuple[SettingsContext, SharedSettingsContext] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The runner travels with the flow to the workers; the cached context stays here.
        return {k: v for k, v in self.__dict__.items() if k != "_shared"}

    @property
    def client(self) -> PesflowDaskClient:
        """The Dask client, created as ``DaskTaskRunner`` creates it (local cluster, address,
        jobqueue cluster, adaptivity), then given the :class:`PesflowDaskClient` behaviour."""
        client = super().client
        if type(client) is PrefectDaskClient:
            client.__class__ = PesflowDaskClient  # same state; adds only the task wrapper
        return client

    def _shared_settings(self) -> SharedSettingsContext:
        current = SettingsContext.get()
        if isinstance(current, SharedSettingsContext):
            return current.model_copy()
        with _lock:
            if self._shared is None or self._shared[0] is not current:
                shared = SharedSettingsContext(profile=current.profile, settings=current.settings)
                shared.serialize()  # once, before the copies below share the payload
                self._shared = (current, shared)
            # a copy per submission: contexts may be entered from several threads at once
            return self._shared[1].model_copy()

    def submit(self, task: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Submit ``task`` like ``DaskTaskRunner.submit``, with the shared settings context."""
        with self._shared_settings():
            return super().submit(task, parameters, *args, **kwargs)
