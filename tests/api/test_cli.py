"""`pesflow token create / revoke / list` and `pesflow serve --help` (api.cli)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner


def test_token_create_use_revoke(tmp_path, monkeypatch):
    from api.app import create_app
    from api.cli import app
    from api.settings import get_api_settings

    monkeypatch.delenv("PESFLOW_DATABASE_URL", raising=False)
    data = ["--data-dir", str(tmp_path / "data")]
    cli = CliRunner()
    r = cli.invoke(app, ["token", "create", "ci", *data])
    assert r.exit_code == 0, r.output
    token = r.output.strip()
    assert token.startswith("pf_") and len(token) > 40
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


def test_serve_and_existing_commands_are_registered():
    from api.cli import app

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
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--log-level", "warning"],
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
