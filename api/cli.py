"""``pesflow serve`` and ``pesflow token ...``: the API's command-line commands.

``workflows`` must not import ``api``, so the commands are registered from this side:
:func:`register` adds them to a typer app, and :data:`app` is the workflows CLI with them
added (``pesflow = "api.cli:app"`` in ``pyproject.toml``; ``python -m api.cli`` works too).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "main",
    "parse_duration",
    "register",
    "serve",
    "token_app",
]  # and `app`, built on first access

token_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="API tokens (stored hashed in the database)."
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env PESFLOW_DATA_DIR, default ./data)."),
]


def _guarded(*, always_log: bool, service: bool = False) -> Callable[[Any], Any]:
    """``workflows.cli._guard`` for these commands: one ``error:`` line per failure (bad
    input exit 2, else 1 with the trace in the command's log file), the log file from the
    start when ``always_log``. ``workflows.cli`` is imported at call time, not here."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from workflows.cli import _guard

            return _guard(fn, always_log=always_log, service=service)(*args, **kwargs)

        return wrapper

    return decorate


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
    from workflows.cli import CliError

    m = re.fullmatch(r"\s*(\d{1,6})\s*([smhdw])\s*", text.lower())
    if m is None or int(m[1]) == 0:
        raise CliError(
            f"--expires-in: {text!r} is not a positive duration like 90s, 45m, 12h, 30d or 2w", 2
        )
    return timedelta(seconds=int(m[1]) * _UNITS[m[2]])


def _when(dt: datetime | None, never: str = "never") -> str:
    return f"{dt:%Y-%m-%d %H:%M}" if dt else never


@token_app.command("create")
@_guarded(always_log=True)
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
    from workflows.cli import CliError

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
@_guarded(always_log=True)
def token_revoke(
    name: Annotated[str, typer.Argument(help="Token name.")], data_dir: DataDir = None
) -> None:
    """Revoke a token (requests with it then get 403)."""
    with _store(data_dir) as store:
        rec = store.revoke_api_token(name)  # an unknown name: NotFoundError, exit 2
    typer.echo(f"revoked {rec.name} at {rec.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@token_app.command("list")
@_guarded(always_log=False)
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
    target.command("serve")(_guarded(always_log=True, service=True)(serve))
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
