"""Token auth: 401 without / with an unknown token, 403 with a revoked one; private reads
(any scope reads); CORS only when origins are configured. Scopes: test_scopes.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ._data import tiny_config

WRITES = [
    ("post", "/api/v1/campaigns", {"config": tiny_config()}),
    ("post", "/api/v1/campaigns/1/pause", None),
    ("post", "/api/v1/campaigns/1/resume", None),
    ("post", "/api/v1/campaigns/1/cancel", None),
    ("post", "/api/v1/campaigns/1/retrain", None),
    ("post", "/api/v1/campaigns/1/next-iteration", None),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_write_without_token_is_401(client, store, method, path, body):
    r = client.request(method, path, json=body)
    assert r.status_code == 401, r.text
    assert "bearer token" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert store.list_campaigns() == []


def test_unknown_token_is_401_and_revoked_is_403(client, store, auth):
    bad = {"Authorization": "Bearer not-a-token"}
    r = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=bad)
    assert r.status_code == 401 and r.json()["detail"] == "invalid bearer token"
    r = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    store.revoke_api_token("tester")
    r = client.post(f"/api/v1/campaigns/{cid}/pause", headers=auth)
    assert r.status_code == 403
    assert "revoked" in r.json()["detail"]
    assert client.get("/api/v1/token", headers=auth).status_code == 403
    assert store.get_campaign(cid).status == "created"


def test_token_check_names_the_token(client, auth):
    r = client.get("/api/v1/token", headers=auth)
    assert r.status_code == 200 and r.json()["name"] == "tester"
    assert (r.json()["scope"], r.json()["expires_at"]) == ("admin", None)
    assert client.get("/api/v1/token").status_code == 401


def test_tokens_are_stored_hashed(store, auth):
    from database import hash_token

    from .conftest import TOKEN

    (rec,) = store.list_api_tokens()
    assert rec.token_sha256 == hash_token(TOKEN) and TOKEN not in rec.token_sha256


def test_reads_public_by_default(client):
    assert client.get("/api/v1/campaigns").status_code == 200


def test_private_reads_need_a_token(settings, store, auth):
    from api.app import create_app

    settings.api_public_read = False
    with TestClient(create_app(settings, store=store)) as c:
        assert c.get("/api/v1/campaigns").status_code == 401
        assert c.get("/api/v1/campaigns/1/iterations").status_code == 401
        assert c.get("/api/v1/campaigns", headers=auth).status_code == 200
        assert c.get("/api/v1/health").status_code == 200
        store.add_api_token("reader", "pf_reader", scope="read")
        reader = {"Authorization": "Bearer pf_reader"}
        assert c.get("/api/v1/campaigns", headers=reader).status_code == 200
        assert c.post("/api/v1/campaigns/1/pause", headers=reader).status_code == 403


def test_cors_off_by_default_and_on_when_configured(settings, store):
    from api.app import create_app

    pre = {"Origin": "http://example.org", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(settings, store=store)) as c:
        r = c.get("/api/v1/campaigns", headers={"Origin": "http://example.org"})
        assert "access-control-allow-origin" not in r.headers
        r = c.options("/api/v1/campaigns", headers=pre)  # methods listed, no CORS grant
        assert r.status_code == 204 and "access-control-allow-origin" not in r.headers
    settings.api_cors_origins = ["http://example.org"]
    with TestClient(create_app(settings, store=store)) as c:
        r = c.get("/api/v1/campaigns", headers={"Origin": "http://example.org"})
        assert r.headers["access-control-allow-origin"] == "http://example.org"
        r = c.get("/api/v1/campaigns", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
