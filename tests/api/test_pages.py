"""Dashboard pages served by the app: campaign list, campaign page, static files (no CDN)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def test_pages_escape_and_serve_own_assets(client, store):
    c = store.create_campaign("<script>alert(1)</script>", {})
    index = client.get("/")
    assert index.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index.text
    assert "<script>alert(1)" not in index.text
    page = client.get(f"/campaigns/{c.id}")
    assert page.status_code == 200 and f"startCampaign({c.id}" in page.text
    assert client.get("/campaigns/4242").status_code == 404
    assert client.get("/campaigns/99999999999999").status_code == 422
    for html in (index.text, page.text):
        srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert srcs and all(s.startswith("/") for s in srcs), srcs  # nothing off-site
    for asset in ("/static/plots.js", "/static/dashboard.js", "/static/dashboard.css"):
        assert client.get(asset).status_code == 200
    assert "https://" not in client.get("/static/dashboard.js").text


def test_private_reads_hide_names_from_pages(settings, store):
    from api.app import create_app

    c = store.create_campaign("secret-campaign", {})
    settings.api_public_read = False
    with TestClient(create_app(settings, store=store)) as client:
        assert "secret-campaign" not in client.get("/").text
        assert "secret-campaign" not in client.get(f"/campaigns/{c.id}").text
        assert client.get(f"/api/v1/campaigns/{c.id}/dashboard").status_code == 401
