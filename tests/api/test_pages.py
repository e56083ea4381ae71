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
    assert page.status_code == 200 and f'data-campaign-id="{c.id}"' in page.text
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


def test_pages_show_who_holds_a_campaign_and_why_it_was_interrupted(client, store, auth):
    """While a process holds a campaign, the list names it (``held_by``, escaped); once the
    holder stops renewing its lease the campaign reads ``interrupted`` with the reason."""
    import html
    import time

    from ._data import tiny_config

    r = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth)
    cid = r.json()["id"]
    store.acquire_lease(
        cid, token="shell", host="<b>node7</b>", pid=99, purpose="pesflow run", ttl_s=60
    )
    held = client.get(f"/api/v1/campaigns/{cid}").json()["held_by"]
    assert held.startswith("<b>node7</b> pid 99 (pesflow run) since ")
    for data in (
        client.get("/api/v1/campaigns").json()[0],
        client.get(f"/api/v1/campaigns/{cid}/dashboard").json()["campaign"],  # the page's data
    ):
        assert data["status"] == "running" and data["held_by"] == held
    index = client.get("/").text
    row = re.search(rf'<tr data-campaign-id="{cid}">.*?</tr>', index, re.S).group(0)
    assert '<span class="status s-running">running</span>' in row
    assert f'<td class="held">{html.escape(held, quote=False)}</td>' in row
    assert "<b>" not in row
    # the holder dies: its lease expires
    store.renew_lease(cid, "shell", 0.1)
    time.sleep(0.3)
    data = client.get(f"/api/v1/campaigns/{cid}/dashboard").json()["campaign"]
    assert data["status"] == "interrupted" and data["held_by"] is None
    reason = data["status_message"]
    assert reason.startswith("interrupted: <b>node7</b> pid 99 (pesflow run)")
    assert "stopped renewing its lease" in reason
    index = client.get("/").text
    row = re.search(rf'<tr data-campaign-id="{cid}">.*?</tr>', index, re.S).group(0)
    assert '<span class="status s-interrupted">interrupted</span>' in row
    assert '<td class="held"></td>' in row
    assert f">{html.escape(reason, quote=False)}</td>" in row  # the reason, escaped
    assert "<b>" not in row
    page = client.get(f"/campaigns/{cid}").text  # drawn by dashboard.js from the data above
    assert 'id="held-by"' in page and 'id="message"' in page and 'id="status"' in page
