"""`pesflow token create / revoke / list` and `pesflow serve --help` (pesflow.cli)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner


def test_the_composition_root_has_every_command():
    """``pesflow`` = the workflows commands + the API commands, assembled in pesflow.cli."""
    import typer

    from pesflow.cli import app, build_app

    group = typer.main.get_command(app)
    assert set(group.commands) == {
        *("init", "validate", "run", "resume", "status", "export"),
        *("deploy", "worker", "db", "serve", "token"),
    }
    assert set(group.commands["db"].commands) == {"upgrade"}
    assert set(group.commands["token"].commands) == {"create", "revoke", "list"}
    assert build_app() is not app  # a fresh app each call (nothing registered twice)


def test_token_create_use_revoke(tmp_path, monkeypatch):
    from api.app import create_app
    from api.settings import get_api_settings
    from pesflow.cli import app

    monkeypatch.delenv("PESFLOW_DATABASE_URL", raising=False)
    data = ["--data-dir", str(tmp_path / "data")]
    cli = CliRunner()
    r = cli.invoke(app, ["token", "create", "ci", *data])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()  # the token alone on stdout; its scope and expiry on stderr
    assert token.startswith("pf_") and len(token) > 40
    assert r.stderr.strip() == "token 'ci': scope operate, never expires"
    again = cli.invoke(app, ["token", "create", "ci", *data])
    assert again.exit_code == 2 and "already exists" in again.output
    settings = get_api_settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings)) as c:
        h = {"Authorization": f"Bearer {token}"}
        assert c.get("/api/v1/token", headers=h).json()["name"] == "ci"
        assert cli.invoke(app, ["token", "revoke", "ci", *data]).exit_code == 0
        assert c.get("/api/v1/token", headers=h).status_code == 403
    listed = cli.invoke(app, ["token", "list", *data]).output
    assert "ci" in listed and "revoked" in listed and token not in listed
    bad = cli.invoke(app, ["token", "revoke", "nobody", *data])
    assert bad.exit_code == 2 and "nobody" in bad.output


def test_token_scopes_and_expiry(tmp_path, monkeypatch):
    from pesflow.cli import app

    monkeypatch.delenv("PESFLOW_DATABASE_URL", raising=False)
    data = ["--data-dir", str(tmp_path / "data")]
    cli = CliRunner()
    r = cli.invoke(app, ["token", "create", "x", "--scope", "read", *data])
    assert r.exit_code == 0 and r.stdout.startswith("pf_"), r.output
    r = cli.invoke(app, ["token", "create", "y", "--scope", "admin", "--expires-in", "12h", *data])
    assert r.exit_code == 0 and "scope admin, expires 20" in r.stderr, r.output
    header, x, y = cli.invoke(app, ["token", "list", *data]).stdout.splitlines()
    assert header.split("\t") == ["name", "scope", "state", "created", "expires", "last used"]
    assert x.split("\t")[:3] == ["x", "read", "active"] and x.split("\t")[4:] == ["never"] * 2
    assert y.split("\t")[:3] == ["y", "admin", "active"] and y.split("\t")[4] != "never"
    for args, word in (
        (["--scope", "root"], "--scope must be one of read, operate, admin (got 'root')"),
        (["--expires-in", "soon"], "--expires-in: 'soon' is not a positive duration"),
        (["--expires-in", "0d"], "--expires-in: '0d' is not a positive duration"),
    ):
        bad = cli.invoke(app, ["token", "create", "z", *args, *data])
        assert bad.exit_code == 2, bad.output
        assert bad.output.count("\n") == 1 and word in bad.output, bad.output


def test_parse_duration():
    from datetime import timedelta

    from api.cli import parse_duration

    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("45m") == timedelta(minutes=45)
    assert parse_duration("12H") == timedelta(hours=12)
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("2w") == timedelta(weeks=2)


def test_serve_and_existing_commands_are_registered():
    from pesflow.cli import app

    cli = CliRunner()
    r = cli.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--port" in r.output
    assert cli.invoke(app, ["validate", "--help"]).exit_code == 0  # the workflows commands


def test_serve_starts_api_and_dashboard(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from .test_browser import _free_port

    port = _free_port()
    env = {**os.environ, "PESFLOW_DATA_DIR": str(tmp_path / "data")}
    env.pop("PESFLOW_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pesflow", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                r = httpx.get(url + "/api/v1/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("pesflow serve did not answer within 30 s")
        assert r.json()["database"] == "sqlite"
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "Campaigns" in page.text
        assert httpx.get(url + "/static/plots.js").status_code == 200
        assert (tmp_path / "data" / "pesflow.sqlite").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
