"""Request limits, security headers, methods, public text and create/action semantics
(issue 13, items 4 and 5), in-process; the real-server checks are in test_serve_process.py."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterator

import anyio
import pytest
from fastapi.testclient import TestClient

from ._data import tiny_config

JSON = {"Content-Type": "application/json"}


def _chunks(total: int, size: int = 16 * 1024) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


def _create(client, auth, name="tiny"):
    r = client.post("/api/v1/campaigns", json={"config": tiny_config(name)}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def _finish(store, campaign_id: int, status: str, message: str) -> None:
    """End a run the way a holder does: lease taken, given back with the final status."""
    store.acquire_lease(campaign_id, token="t", host="h", pid=1, purpose="test", ttl_s=60)
    store.release_lease(campaign_id, "t", status=status, message=message)


async def _asgi_post(app, path: str, headers: dict[str, str], chunks: list[bytes]):
    """POST ``chunks`` as separate ASGI messages (as a server streams a chunked body);
    returns (status, body, number of chunks the app read)."""
    sent: list[dict] = []
    pending = list(chunks)

    async def receive() -> dict:
        if not pending:
            return {"type": "http.disconnect"}
        body = pending.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: dict) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [*raw, (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, len(chunks) - len(pending)


# ----------------------------------------------------------------------- body limits
def test_a_body_over_the_limit_is_413_before_authentication(client, auth, store):
    big = b"x" * (64 * 1024 + 1)
    r = client.post("/api/v1/campaigns/1/pause", content=big, headers=JSON)  # anonymous
    assert r.status_code == 413
    assert r.json() == {"detail": "request body larger than 65536 bytes"}
    r = client.post("/api/v1/campaigns/1/pause", content=big, headers={**auth, **JSON})
    assert r.status_code == 413
    # chunked (no Content-Length): counted while it streams
    r = client.post("/api/v1/campaigns/1/pause", content=_chunks(200 * 1024), headers=auth)
    assert r.status_code == 413 and "65536" in r.json()["detail"]
    # at the limit it reaches the route (which finds no campaign)
    at_limit = b'{"message": null}' + b" " * (64 * 1024 - 17)
    r = client.post("/api/v1/campaigns/1/pause", content=at_limit, headers={**auth, **JSON})
    assert r.status_code == 404
    r = client.post(
        "/api/v1/campaigns/1/pause", content=b"x", headers={**JSON, "Content-Length": "a"}
    )
    assert r.status_code == 400
    assert store.list_campaigns() == []


def test_the_campaign_create_takes_an_upload_up_to_its_own_limit(settings, store, auth):
    from api.app import create_app

    settings.api_max_upload_bytes = 300 * 1024
    with TestClient(create_app(settings, store=store)) as client:
        # 200 KB config: over the small limit, under the upload limit -> validated (422)
        config = {**tiny_config(), "padding": "x" * 200 * 1024}
        r = client.post("/api/v1/campaigns", json={"config": config}, headers=auth)
        assert r.status_code == 422 and "padding" in r.text
        config["padding"] = "x" * 400 * 1024
        r = client.post("/api/v1/campaigns", json={"config": config}, headers=auth)
        assert r.status_code == 413 and f"{300 * 1024} bytes" in r.json()["detail"]
        r = client.post("/api/v1/campaigns", content=_chunks(200 * 1024), headers=JSON)
        assert r.status_code == 401  # anonymous, under the upload limit: authentication
        # streamed in chunks: 64 KiB read ahead, then authentication, then the rest counted
        # as the route reads it (413 from inside the route's body parsing)
        app = client.app
        chunks = [b"x" * 16 * 1024] * 25  # 400 KiB
        status, body, read = anyio.run(
            _asgi_post, app, "/api/v1/campaigns", {**auth, **JSON}, chunks
        )
        assert status == 413 and f"{300 * 1024} bytes".encode() in body
        assert read == 19  # 300 KiB and one chunk more: no further byte read
        status, body, read = anyio.run(_asgi_post, app, "/api/v1/campaigns", JSON, chunks)
        assert status == 401 and read == 5  # anonymous: refused after the 64 KiB read ahead
    assert store.list_campaigns() == []


# -------------------------------------------------------------------- security headers
def _check_headers(r, csp_part="script-src 'self';"):
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "base-uri 'self'" in csp
    assert csp_part in csp
    script_src = re.search(r"script-src([^;]*)", csp).group(1)
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src
    return csp


def test_every_response_has_the_security_headers(client, store):
    c = store.create_campaign("headers", {})
    for path in ("/", f"/campaigns/{c.id}", "/static/dashboard.js", "/api/v1/campaigns"):
        r = client.get(path)
        assert r.status_code == 200, path
        _check_headers(r)
    for r in (client.get("/api/v1/campaigns/999"), client.post("/api/v1/campaigns/1/pause")):
        assert r.status_code in (401, 404)
        _check_headers(r)


def test_dashboard_pages_need_no_inline_script_or_style(client, store):
    c = store.create_campaign("pages", {})
    for path in ("/", f"/campaigns/{c.id}"):
        html = client.get(path).text
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], path
        assert not re.search(r"\sstyle=|\son[a-z]+=", html), path
        assert 'data-page="' in html  # started by dashboard.js from <main data-page>


def test_the_api_docs_allow_their_cdn_and_exactly_their_inline_script(client):
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        r = client.get(path)
        assert r.status_code == 200
        csp = _check_headers(r, "https://cdn.jsdelivr.net")
        for script in re.findall(rb"<script>(.*?)</script>", r.content, re.DOTALL):
            digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
            assert f"'sha256-{digest}'" in csp, path


# ------------------------------------------------------------------------------ methods
def test_options_lists_every_method_of_the_path(client):
    r = client.options("/api/v1/campaigns/1/schedule")
    assert r.status_code == 204 and r.headers["allow"] == "POST, DELETE, OPTIONS"
    assert r.content == b""
    _check_headers(r)
    assert client.options("/api/v1/campaigns").headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert client.options("/static/dashboard.css").headers["allow"] == "GET, HEAD, OPTIONS"
    assert client.options("/no/such/path").status_code == 404
    r = client.get("/api/v1/campaigns/1/schedule")  # a 405 names all methods too
    assert r.status_code == 405 and r.headers["allow"] == "POST, DELETE, OPTIONS"


def test_head_answers_like_get_without_a_body(client, store):
    store.create_campaign("head", {})
    for path in ("/api/v1/campaigns", "/", "/static/dashboard.js"):
        get, head = client.get(path), client.head(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-length"] == str(len(get.content)), path
    assert client.head("/api/v1/campaigns/1/pause").status_code == 405


def test_a_cors_preflight_goes_to_the_cors_middleware(settings, store):
    from api.app import create_app

    settings.api_cors_origins = ["https://ui.example"]
    with TestClient(create_app(settings, store=store)) as client:
        r = client.options(
            "/api/v1/campaigns",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://ui.example"
        assert client.options("/api/v1/campaigns").status_code == 204  # not a preflight


# ------------------------------------------------------------------------- public text
def test_public_text_drops_token_names_and_server_paths():
    from api.redact import public_text

    assert public_text("paused via API by alice") == "paused via API"
    assert public_text("queued via API by ops-bot") == "queued via API"
    assert public_text("maintenance window") == "maintenance window"
    assert public_text("No such file: '/srv/pesflow/data/x/iter-000.pt'") == (
        "No such file: '…/iter-000.pt'"
    )
    assert (
        public_text("SQLite file /srv/d/pesflow.sqlite locked")
        == "SQLite file …/pesflow.sqlite locked"
    )
    assert public_text("sqlite:////srv/d/pesflow.sqlite") == "sqlite:///…/pesflow.sqlite"
    kept = "accurate / candidate 3/4, 12 meV/Å; see http://host:4200/runs/x, models/iter-1.pt"
    assert public_text(kept) == kept
    assert public_text(None) is None


def test_status_messages_name_no_token_and_no_server_path(client, auth, store, settings):
    c = _create(client, auth)
    r = client.post(f"/api/v1/campaigns/{c['id']}/pause", headers=auth)
    assert r.json()["status_message"] == "paused via API"
    assert store.get_campaign(c["id"]).status_message == "paused via API"
    # rows written by older versions, and error text with paths, are shown without them
    store.transition_campaign(c["id"], "queued", "queued via API by tester")
    assert client.get(f"/api/v1/campaigns/{c['id']}").json()["status_message"] == "queued via API"
    path = settings.data_dir / "campaigns" / "tiny" / "models" / "iter-000.pt"
    _finish(store, c["id"], "failed", f"FileNotFoundError: {path}")
    for shown in (
        client.get(f"/api/v1/campaigns/{c['id']}").json(),
        client.get("/api/v1/campaigns").json()[0],
        client.get(f"/api/v1/campaigns/{c['id']}/dashboard").json()["campaign"],
    ):
        assert shown["status_message"] == "FileNotFoundError: …/iter-000.pt"
    assert str(settings.data_dir) not in client.get("/").text


def test_a_missing_checkpoint_404_names_no_path(client, auth, store, settings):
    from ._data import seed_campaign

    c = _create(client, auth)
    seed_campaign(store, c["id"], models=True)
    model = client.get(f"/api/v1/campaigns/{c['id']}/models").json()[0]
    r = client.get(model["download_url"])
    assert r.status_code == 404 and "missing on the server" in r.json()["detail"]
    assert "/" not in r.json()["detail"] and str(settings.data_dir) not in r.text


# -------------------------------------------------------------------------- semantics
def test_concurrent_creates_of_one_name_give_one_201(client, auth, store, settings):
    n = 10
    barrier = threading.Barrier(n)
    codes: list[int] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait(30)
        r = client.post("/api/v1/campaigns", json={"config": tiny_config("race")}, headers=auth)
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=create) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(codes) == [201] + [409] * (n - 1)
    [rec] = store.list_campaigns()
    assert rec.name == "race" and rec.config["_runtime"]["initial_structure_ids"]
    campaigns = settings.data_dir / "campaigns"
    assert not campaigns.exists() or {p.name for p in campaigns.iterdir()} <= {"race"}


@pytest.mark.parametrize("status", ["cancelled", "converged"])
def test_actions_on_a_finished_campaign_are_409(client, auth, store, status):
    c = _create(client, auth)
    _finish(store, c["id"], status, "test")
    for action in ("resume", "next-iteration", "pause"):
        r = client.post(f"/api/v1/campaigns/{c['id']}/{action}", headers=auth)
        assert r.status_code == 409, action
    r = client.post(
        f"/api/v1/campaigns/{c['id']}/schedule", json={"interval_seconds": 3600}, headers=auth
    )
    assert r.status_code == 409 and status in r.json()["detail"]
    r = client.post(f"/api/v1/campaigns/{c['id']}/retrain", headers=auth)
    if status == "cancelled":
        assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    else:  # a converged campaign may be retrained; this one has no labels yet
        assert r.status_code == 409 and "no done labels" in r.json()["detail"]


def test_a_retrain_queued_before_a_cancel_does_not_start(client, auth, store, settings):
    from api import jobs
    from api.runner import Run

    c = _create(client, auth, "late-cancel")
    store.transition_campaign(c["id"], "cancelled", "test")
    out = jobs.retrain_job(settings, c["id"])(Run(kind="retrain", campaign_id=c["id"]))
    assert out == {"status": "cancelled", "message": "not started: the campaign is cancelled"}
    assert client.get(f"/api/v1/campaigns/{c['id']}/models").json() == []
