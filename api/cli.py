"""``pesflow serve`` and ``pesflow token ...``: the API's command-line commands.

:func:`register` adds them to a typer app; the ``pesflow`` app itself is assembled in
:mod:`pesflow.cli` (``python -m pesflow``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from workflows.cli_support import CliError, guard

__all__ = ["parse_duration", "register", "serve", "token_app"]

token_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="API tokens (stored hashed in the database)."
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env PESFLOW_DATA_DIR, default ./data)."),
]


def _store(data_dir: Path | None):
    from database import Store

    from .settings import get_api_settings

    settings = get_api_settings(data_dir=data_dir)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Store.from_url(settings.resolved_database_url())


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``45m``, ``12h``, ``30d``, ``2w`` as a timedelta; ``CliError`` (exit 2)
    otherwise."""
    m = re.fullmatch(r"\s*(\d{1,6})\s*([smhdw])\s*", text.lower())
    if m is None or int(m[1]) == 0:
        raise CliError(
            f"--expires-in: {text!r} is not a positive duration like 90s, 45m, 12h, 30d or 2w", 2
        )
    return timedelta(seconds=int(m[1]) * _UNITS[m[2]])


def _when(dt: datetime | None, never: str = "never") -> str:
    return f"{dt:%Y-%m-%d %H:%M}" if dt else never


@token_app.command("create")
@guard(always_log=True)
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token (unique).")],
    scope: Annotated[
        str,
        typer.Option(
            "--scope",
            help="read (reads when they are private), operate (pause, resume, iterate, "
            "retrain, schedule) or admin (also create and cancel campaigns, manage tokens).",
        ),
    ] = "operate",
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="Lifetime, e.g. 12h, 30d, 2w (default: never expires)."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a token and print it once on stdout (only its SHA-256 is stored); its scope and
    expiry go to stderr."""
    from database import TOKEN_SCOPES
    from database.models import utcnow

    from .routes.tokens import new_token_secret

    if scope not in TOKEN_SCOPES:
        raise CliError(f"--scope must be one of {', '.join(TOKEN_SCOPES)} (got {scope!r})", 2)
    expires = utcnow() + parse_duration(expires_in) if expires_in else None
    token = new_token_secret()
    with _store(data_dir) as store:
        # a duplicate name: DatabaseInputError, exit 2
        rec = store.add_api_token(name, token, scope=scope, expires_at=expires)
    typer.echo(token)
    until = f"expires {_when(rec.expires_at)} UTC" if rec.expires_at else "never expires"
    typer.echo(f"token {rec.name!r}: scope {rec.scope}, {until}", err=True)


@token_app.command("revoke")
@guard(always_log=True)
def token_revoke(
    name: Annotated[str, typer.Argument(help="Token name.")], data_dir: DataDir = None
) -> None:
    """Revoke a token (requests with it then get 403)."""
    with _store(data_dir) as store:
        rec = store.revoke_api_token(name)  # an unknown name: NotFoundError, exit 2
    typer.echo(f"revoked {rec.name} at {rec.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@token_app.command("list")
@guard(always_log=False)
def token_list(data_dir: DataDir = None) -> None:
    """List tokens: name, scope, state, created, expires, last used (times UTC; the tokens
    themselves are not stored)."""
    from database.models import utcnow

    now = utcnow()
    with _store(data_dir) as store:
        tokens = store.list_api_tokens()
    typer.echo("name\tscope\tstate\tcreated\texpires\tlast used")
    for t in tokens:
        state = "revoked" if t.revoked_at else "expired" if t.expired(now) else "active"
        typer.echo(
            f"{t.name}\t{t.scope}\t{state}\t{_when(t.created_at)}\t{_when(t.expires_at)}"
            f"\t{_when(t.last_used_at)}"
        )


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
    # SIGTERM / SIGINT: uvicorn stops, the app's shutdown stops the temporary Prefect API of
    # its flow runs (after a running flow ends); a request still open after 10 s is cut off
    uvicorn.run(app_, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)


def register(target: typer.Typer) -> typer.Typer:
    """Add ``serve`` and the ``token`` group to a typer app (the ``pesflow`` CLI)."""
    target.command("serve")(guard(serve, always_log=True, service=True))
    target.add_typer(token_app, name="token")
    return target
