"""Token scopes (read < operate < admin), expiry, last use, token management over the API,
and authentication before the request body is read.

The table-driven tests walk the app's own OpenAPI: every operation is public or names the
scope it needs (``x-required-scope``), and each such operation answers 401 without a token or
with an expired one, 403 with a smaller scope and neither with a sufficient one. Background
jobs are recorded, not executed (``_NoopRunner``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from database.models import ApiToken, utcnow

from ._data import tiny_config
from .test_schemathesis import _NoopRunner

SCOPES = ("read", "operate", "admin")
WRITE = {"post", "put", "patch", "delete"}
EXPECTED = {  # the policy: who may change what
    ("post", "/api/v1/campaigns"): "admin",
    ("post", "/api/v1/campaigns/{campaign_id}/cancel"): "admin",
    ("post", "/api/v1/campaigns/{campaign_id}/pause"): "operate",
    ("post", "/api/v1/campaigns/{campaign_id}/resume"): "operate",
    ("post", "/api/v1/campaigns/{campaign_id}/retrain"): "operate",
    ("post", "/api/v1/campaigns/{campaign_id}/next-iteration"): "operate",
    ("post", "/api/v1/campaigns/{campaign_id}/schedule"): "operate",
    ("delete", "/api/v1/campaigns/{campaign_id}/schedule"): "operate",
    ("post", "/api/v1/tokens"): "admin",
    ("get", "/api/v1/tokens"): "admin",
    ("post", "/api/v1/tokens/{name}/revoke"): "admin",
    ("get", "/api/v1/token"): "read",
}
ALWAYS_PUBLIC = {("get", "/api/v1/health")}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _expire(store, name: str) -> None:
    with store.session() as s:
        s.execute(
            update(ApiToken)
            .where(ApiToken.name == name)
            .values(expires_at=utcnow() - timedelta(hours=1))
        )


@pytest.fixture
def creds(store) -> dict[str, dict[str, str]]:
    """Headers per kind: one token of each scope, an expired admin token, and none."""
    out = {"none": {}}
    for scope in SCOPES:
        store.add_api_token(scope, f"pf_{scope}-token", scope=scope)
        out[scope] = _bearer(f"pf_{scope}-token")
    store.add_api_token("expired", "pf_expired-token", scope="admin")
    _expire(store, "expired")
    out["expired"] = _bearer("pf_expired-token")
    store.add_api_token("victim", "pf_victim-token", scope="read")  # what revoke revokes
    return out


def _app(settings, store, *, public_read: bool = True):
    from api.app import create_app

    settings.api_public_read = public_read
    return create_app(settings, store=store, runner=_NoopRunner(1))


def _operations(spec):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def _url(path: str, campaign_id: int) -> str:
    return (
        path.replace("{campaign_id}", str(campaign_id))
        .replace("{name}", "victim")
        .replace("{model_id}", "1")
        .replace("{run_id}", "none")
    )


@pytest.mark.parametrize("public_read", [True, False], ids=["public-read", "private-read"])
def test_every_operation_is_public_read_or_scoped(settings, store, public_read):
    spec = TestClient(_app(settings, store, public_read=public_read)).get("/openapi.json").json()
    scoped = {}
    for method, path, op in _operations(spec):
        scope = op.get("x-required-scope")
        if scope is None:
            assert method == "get", f"{method} {path} changes state without a scope"
            assert public_read or (method, path) in ALWAYS_PUBLIC, f"{method} {path} is public"
            assert "security" not in op, f"public {method} {path} has a security requirement"
        else:
            assert scope in SCOPES, (method, path, scope)
            assert op["security"] == [{"HTTPBearer": []}], (method, path)
            assert {"401", "403"} <= set(op["responses"]), (method, path)
            scoped[method, path] = scope
    above_read = {k: v for k, v in scoped.items() if k[0] in WRITE or v != "read"}
    assert above_read == {k: v for k, v in EXPECTED.items() if v != "read"}
    assert scoped[("get", "/api/v1/token")] == "read"
    reads = {k for k, v in scoped.items() if v == "read"} - {("get", "/api/v1/token")}
    assert bool(reads) is not public_read  # private reads need (only) a read token


@pytest.mark.parametrize("public_read", [True, False], ids=["public-read", "private-read"])
def test_each_scoped_operation_checks_the_token_and_its_scope(settings, store, creds, public_read):
    app = _app(settings, store, public_read=public_read)
    with TestClient(app) as c:
        cid = c.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=creds["admin"])
        cid = cid.json()["id"]
        spec = c.get("/openapi.json").json()
        wrong = []
        for method, path, op in _operations(spec):
            needed = op.get("x-required-scope")
            if needed is None:
                continue
            for kind in ("none", "expired", *SCOPES):
                body = {} if method in WRITE else None
                r = c.request(method, _url(path, cid), json=body, headers=creds[kind])
                if kind in ("none", "expired"):
                    ok = r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
                elif SCOPES.index(kind) < SCOPES.index(needed):
                    ok = r.status_code == 403 and f"this needs {needed}" in r.json()["detail"]
                else:
                    ok = r.status_code not in (401, 403, 500)
                if not ok:
                    wrong.append(f"{method} {path} as {kind}: {r.status_code} {r.text[:120]}")
        assert wrong == []


def test_anonymous_malformed_body_is_401_not_422(client, store, creds):
    bad = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    r = client.post("/api/v1/campaigns", **bad)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.post("/api/v1/campaigns", **bad | {"headers": bad["headers"] | creds["read"]})
    assert r.status_code == 403 and "has scope read; this needs admin" in r.json()["detail"]
    r = client.post("/api/v1/campaigns", **bad | {"headers": bad["headers"] | creds["admin"]})
    # authorised: now the body is looked at; not JSON is 400 on every route, one line
    assert (r.status_code, r.json()) == (400, {"detail": "request body: not valid JSON"})
    assert store.list_campaigns() == []
    cid = client.post(
        "/api/v1/campaigns", json={"config": tiny_config("m")}, headers=creds["admin"]
    ).json()["id"]
    for path in ("retrain", "pause", "schedule"):
        r = client.post(
            f"/api/v1/campaigns/{cid}/{path}", **bad | {"headers": bad["headers"] | creds["admin"]}
        )
        assert (r.status_code, r.json()) == (400, {"detail": "request body: not valid JSON"}), path


def test_gate_answers_before_reading_the_body(settings, store, creds):
    app = _app(settings, store)
    received, sent = [], []

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": b"{", "more_body": False}

    async def send(message):
        sent.append(message)

    def scope(headers):
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/v1/campaigns",
            "raw_path": b"/api/v1/campaigns",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
        }

    asyncio.run(app(scope([]), receive, send))
    assert sent[0]["status"] == 401 and received == []
    sent.clear()
    asyncio.run(app(scope([(b"authorization", b"Bearer pf_operate-token")]), receive, send))
    assert sent[0]["status"] == 403 and received == []


def test_expired_and_revoked_tokens(client, store, creds):
    r = client.get("/api/v1/token", headers=creds["expired"])
    assert r.status_code == 401 and r.json()["detail"] == "token 'expired' has expired"
    r = client.post("/api/v1/campaigns/1/pause", headers=creds["expired"])  # the gate
    assert r.status_code == 401 and r.json()["detail"] == "token 'expired' has expired"
    assert store.verify_api_token("pf_expired-token") is None
    store.revoke_api_token("operate")
    r = client.post("/api/v1/campaigns/1/pause", headers=creds["operate"])
    assert r.status_code == 403 and "revoked" in r.json()["detail"]
    r = client.post("/api/v1/campaigns/1/pause", headers=_bearer("pf_unknown"))
    assert r.status_code == 401 and r.json()["detail"] == "invalid bearer token"


def test_whoami_names_scope_and_expiry(client, creds):
    r = client.get("/api/v1/token", headers=creds["read"]).json()
    assert (r["name"], r["scope"], r["expires_at"]) == ("read", "read", None)
    assert r["created_at"]


def test_last_used_is_recorded_at_most_once_a_minute(client, store, creds, monkeypatch):
    def used(name):
        return next(t.last_used_at for t in store.list_api_tokens() if t.name == name)

    assert used("read") is None
    assert client.get("/api/v1/token", headers=creds["read"]).status_code == 200
    first = used("read")
    assert first is not None and utcnow() - first < timedelta(minutes=1)
    writes = []
    monkeypatch.setattr(store, "touch_api_token", lambda *a, **k: writes.append(a))
    assert client.get("/api/v1/token", headers=creds["read"]).status_code == 200
    assert writes == [] and used("read") == first  # used a moment ago: no write

    def broken(*args, **kwargs):
        raise RuntimeError("database is read-only")

    monkeypatch.setattr(store, "touch_api_token", broken)
    assert client.get("/api/v1/token", headers=creds["operate"]).status_code == 200
    assert used("operate") is None  # the failed bookkeeping did not fail the request


def test_touch_writes_once_per_interval(store, creds):
    rec = store.verify_api_token("pf_read-token")
    assert store.touch_api_token(rec.id) is True
    assert store.touch_api_token(rec.id) is False
    assert store.touch_api_token(rec.id, min_interval_s=0) is True


def test_token_management_over_the_api(client, store, creds):
    r = client.post(
        "/api/v1/tokens",
        json={"name": "ci", "scope": "read", "expires_in_s": 3600},
        headers=creds["admin"],
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["scope"] == "read" and made["token"].startswith("pf_")
    left = made["expires_at"]
    assert left is not None
    me = client.get("/api/v1/token", headers=_bearer(made["token"])).json()
    assert (me["name"], me["scope"], me["expires_at"]) == ("ci", "read", left)
    listed = client.get("/api/v1/tokens", headers=creds["admin"])
    assert listed.status_code == 200
    assert "ci" in {t["name"] for t in listed.json()}
    assert made["token"] not in listed.text and "sha256" not in listed.text
    dup = client.post(
        "/api/v1/tokens", json={"name": "ci", "scope": "admin"}, headers=creds["admin"]
    )
    assert dup.status_code == 409
    bad = client.post("/api/v1/tokens", json={"name": "x", "scope": "root"}, headers=creds["admin"])
    assert bad.status_code == 422
    r = client.post("/api/v1/tokens", json={"name": "y", "scope": "read"}, headers=creds["operate"])
    assert r.status_code == 403 and "this needs admin" in r.json()["detail"]
    r = client.post("/api/v1/tokens/ci/revoke", headers=creds["admin"])
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert client.get("/api/v1/token", headers=_bearer(made["token"])).status_code == 403
    assert client.post("/api/v1/tokens/nobody/revoke", headers=creds["admin"]).status_code == 404


def test_operate_token_runs_but_cannot_create_or_cancel(settings, store, creds):
    with TestClient(_app(settings, store)) as c:
        cfg = {"config": tiny_config()}
        assert c.post("/api/v1/campaigns", json=cfg, headers=creds["operate"]).status_code == 403
        cid = c.post("/api/v1/campaigns", json=cfg, headers=creds["admin"]).json()["id"]
        assert c.post(f"/api/v1/campaigns/{cid}/pause", headers=creds["read"]).status_code == 403
        r = c.post(f"/api/v1/campaigns/{cid}/pause", headers=creds["operate"])
        assert r.status_code == 200 and r.json()["status"] == "paused"
        r = c.post(f"/api/v1/campaigns/{cid}/cancel", headers=creds["operate"])
        assert r.status_code == 403 and "has scope operate; this needs admin" in r.json()["detail"]
        assert store.get_campaign(cid).status == "paused"


def test_a_token_from_before_scopes_works_as_admin(tmp_path):
    from sqlalchemy import text

    from api.app import create_app
    from api.settings import get_api_settings
    from database import hash_token, make_engine, sqlite_url, upgrade

    data = tmp_path / "data"
    data.mkdir()
    engine = make_engine(sqlite_url(data))
    try:
        upgrade(engine, "0002")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO api_tokens (name, token_sha256, created_at) VALUES ('old', :h, :t)"
                ),
                {"h": hash_token("pf_old-token"), "t": "2026-11-29 12:00:00"},
            )
    finally:
        engine.dispose()
    settings = get_api_settings(data_dir=data)
    with TestClient(create_app(settings)) as c:  # opening the store migrates to head
        old = _bearer("pf_old-token")
        assert c.get("/api/v1/token", headers=old).json()["scope"] == "admin"
        r = c.post("/api/v1/tokens", json={"name": "new", "scope": "read"}, headers=old)
        assert r.status_code == 201, r.text


def test_a_write_request_looks_its_token_up_once(client, store, auth, monkeypatch):
    """The auth gate checks the token before the body; the route's dependency takes the
    gate's record instead of asking the database again."""
    r = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth)
    assert r.status_code == 201, r.text
    calls = []
    real = store.find_api_token
    monkeypatch.setattr(store, "find_api_token", lambda t: calls.append(t) or real(t))
    r = client.post(f"/api/v1/campaigns/{r.json()['id']}/pause", headers=auth)
    assert r.status_code == 200, r.text
    assert len(calls) == 1
    r = client.get("/api/v1/token", headers=auth)  # no gate on reads: the dependency asks
    assert r.status_code == 200 and len(calls) == 2
