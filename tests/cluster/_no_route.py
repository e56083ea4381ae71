"""A compute node without a route to the Prefect server, for the SLURM tests.

Imported into a Dask worker of a batch job (``--preload tests.cluster._no_route``), this module
makes every connection of that process to the address in ``$PESFLOW_TEST_NO_ROUTE``
(``host:port``, the Prefect API's) fail as a closed port or a rejecting firewall does
(``ConnectionRefusedError``), as the ``127.0.0.1`` URL of a temporary server does seen from
another node. Connections elsewhere (the Dask scheduler, the database) are
untouched. Each refused attempt is appended to ``$PESFLOW_TEST_NO_ROUTE_LOG`` when set, so a
test can tell that the worker did try.
"""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["ENV", "blocked"]

ENV = "PESFLOW_TEST_NO_ROUTE"

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def blocked() -> tuple[str, int] | None:
    """The ``(host, port)`` this process may not reach, from the environment."""
    value = os.environ.get(ENV, "")
    host, _, port = value.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _refuse(sock: socket.socket, address: Any) -> None:
    target = blocked()
    if target is None or not isinstance(address, tuple) or len(address) < 2:
        return
    host, port = address[0], address[1]
    if port != target[1] or host not in {target[0], socket.gethostbyname(target[0])}:
        return
    log = os.environ.get(f"{ENV}_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {host}:{port}\n")
    raise ConnectionRefusedError(111, f"Connection refused (no route to {host}:{port}, test)")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _refuse(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    try:
        _refuse(self, address)
    except ConnectionRefusedError:
        return 111
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
