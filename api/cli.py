"""``pesflow serve`` and ``pesflow token ...``: the API's command-line commands.

``workflows`` must not import ``api``, so the commands are registered from this side:
:func:`register` adds them to a typer app, and :data:`app` is the workflows CLI with them
added (``pesflow = "api.cli:app"`` in ``pyproject.toml``; ``python -m api.cli`` works too).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["main", "register", "serve", "token_app"]  # and `app`, built on first access

token_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="API tokens (stored hashed in the database)."
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env PESFLOW_DATA_DIR, default ./data)."),
]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _store(data_dir: Path | None):
    from database import Store

    from .settings import get_api_settings

    settings = get_api_settings(data_dir=data_dir)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Store.from_url(settings.resolved_database_url())


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token (unique).")],
    data_dir: DataDir = None,
) -> None:
    """Create a token and print it once (only its SHA-256 is stored)."""
    from database import DatabaseInputError

    token = "pf_" + secrets.token_urlsafe(32)
    with _store(data_dir) as store:
        try:
            store.add_api_token(name, token)
        except DatabaseInputError as exc:
            _fail(str(exc))
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="Token name.")], data_dir: DataDir = None
) -> None:
    """Revoke a token (requests with it then get 403)."""
    from database import DatabaseInputError

    with _store(data_dir) as store:
        try:
            rec = store.revoke_api_token(name)
        except DatabaseInputError as exc:
            _fail(str(exc))
    typer.echo(f"revoked {rec.name} at {rec.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@token_app.command("list")
def token_list(data_dir: DataDir = None) -> None:
    """List tokens (names and dates; the tokens themselves are not stored)."""
    with _store(data_dir) as store:
        for t in store.list_api_tokens():
            state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
            typer.echo(f"{t.name}\tcreated {t.created_at:%Y-%m-%d %H:%M}\t{state}")


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data_dir: DataDir = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Start the REST API and the dashboard (uvicorn) against the configured database."""
    import uvicorn

    from .app import create_app
    from .settings import get_api_settings

    settings = get_api_settings(data_dir=data_dir)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app_ = create_app(settings)
    typer.echo(
        f"pesflow dashboard on http://{host}:{port}/ (API docs /docs), "
        f"database {settings.resolved_database_url()}"
    )
    uvicorn.run(app_, host=host, port=port, log_level=log_level)


def register(target: typer.Typer) -> typer.Typer:
    """Add ``serve`` and the ``token`` group to a typer app (the ``pesflow`` CLI)."""
    target.command("serve")(serve)
    target.add_typer(token_app, name="token")
    return target


_app: typer.Typer | None = None


def _build() -> typer.Typer:
    """The workflows CLI with ``serve`` and ``token`` added (once)."""
    global _app
    if _app is None:
        from workflows.cli import app as workflows_app

        names = {c.name for c in workflows_app.registered_commands}
        _app = workflows_app if "serve" in names else register(workflows_app)
    return _app


def __getattr__(name: str):
    # ``app`` is built on first access (``from api.cli import app``), so importing this module
    # from a plugin hook inside workflows.cli does not import workflows.cli circularly.
    if name == "app":
        return _build()
    raise AttributeError(name)


def main() -> None:
    """Entry point for ``python -m api.cli``."""
    _build()(prog_name="pesflow")


if __name__ == "__main__":
    sys.exit(main())
