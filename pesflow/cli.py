"""The ``pesflow`` command line, assembled from the packages' commands.

``pesflow = "pesflow.cli:app"`` in ``pyproject.toml``; ``python -m pesflow`` runs the same app.

- campaigns: ``init``, ``validate``, ``run``, ``resume``, ``status``, ``export``
  (:mod:`workflows.cli`);
- deployments and the database: ``deploy``, ``worker``, ``db upgrade``
  (:mod:`workflows.deploy_cli`);
- the REST API and dashboard: ``serve``, ``token create | revoke | list`` (:mod:`api.cli`).

Exit codes and error lines as in :mod:`workflows.cli_support`.
"""

from __future__ import annotations

import api.cli
import workflows.cli
import workflows.deploy_cli
from workflows.cli_support import PesflowTyper, new_app

__all__ = ["app", "build_app", "main"]


def build_app() -> PesflowTyper:
    """A new ``pesflow`` app with every command registered."""
    target = new_app()
    workflows.cli.register(target)
    workflows.deploy_cli.register(target)
    api.cli.register(target)
    return target


app = build_app()
"""The ``pesflow`` app (the console-script entry point)."""


def main() -> None:
    """Run the ``pesflow`` app as a program (exits with the command's code)."""
    app(prog_name="pesflow")
