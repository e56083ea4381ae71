"""Schemathesis against the app's own OpenAPI spec: positive and negative cases for every
operation (with a valid token, over a seeded campaign); prints the counts and requires zero
server errors and zero schema violations.

Background jobs are recorded but not executed here (``_NoopRunner``): this test checks the
HTTP contract; the jobs themselves are tested in test_actions.py and test_browser.py."""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable

from api.runner import Run, Runner

from ._data import seed_campaign, tiny_config

EXAMPLES = 25  # per operation and generation mode


class _NoopRunner(Runner):
    """Records submitted runs as completed without running them."""

    def _execute(self, run: Run, job) -> None:
        run.status, run.message = "completed", "not executed (schemathesis)"


@pytest.fixture(scope="module")
def app_and_auth(tmp_path_factory, prefect_api_url):
    """One app with one seeded campaign for the module (the seeding trains a committee)."""
    from api.app import create_app
    from api.settings import get_api_settings
    from database import Store

    settings = get_api_settings(data_dir=tmp_path_factory.mktemp("fuzz") / "data")
    settings.data_dir.mkdir()
    store = Store.from_url(settings.resolved_database_url())
    store.add_api_token("fuzz", "pf_fuzz")
    auth = {"Authorization": "Bearer pf_fuzz"}
    app = create_app(settings, store=store, runner=_NoopRunner(1))
    with TestClient(create_app(settings, store=store)) as c:
        cid = c.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth).json()["id"]
    seed_campaign(store, cid)
    yield app, auth
    store.close()
    from workflows.steps import close_stores

    close_stores()


def test_openapi_spec_is_complete(app_and_auth):
    app, _ = app_and_auth
    spec = TestClient(app).get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/v1/campaigns",
        "/api/v1/campaigns/{campaign_id}/retrain",
        "/api/v1/runs/{run_id}",
        "/api/v1/models/{model_id}/checkpoint",
        "/api/v1/campaigns/{campaign_id}/labels",
    ):
        assert path in paths
    for path, ops in paths.items():
        for method, op in ops.items():
            assert op.get("description") or op.get("summary"), (method, path)
            assert any(code.startswith("2") for code in op["responses"]), (method, path)
            if method == "post":
                assert {"401", "403"} <= set(op["responses"]), (method, path)
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    # links: the id a create returns reaches every operation that takes a campaign id
    links = paths["/api/v1/campaigns"]["post"]["responses"]["201"]["links"]
    takers = {
        op["operationId"] for p, ops in paths.items() if "{campaign_id}" in p for op in ops.values()
    }
    assert {link["operationId"] for link in links.values()} == takers and len(takers) >= 15
    assert all(lk["parameters"] == {"campaign_id": "$response.body#/id"} for lk in links.values())
    run_links = paths["/api/v1/campaigns/{campaign_id}/resume"]["post"]["responses"]["202"]["links"]
    assert [lk["parameters"] for lk in run_links.values()] == [{"run_id": "$response.body#/id"}]


def test_schemathesis_no_server_errors_no_schema_violations(app_and_auth, capsys):
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    app, auth = app_and_auth
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    stats: Counter[str] = Counter()
    problems: list[str] = []
    checks = [response_schema_conformance, status_code_conformance, content_type_conformance]

    def exercise(op, mode) -> None:
        @given(case=op.as_strategy(generation_mode=mode))
        @hsettings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            response = case.call(headers=auth)
            stats["requests"] += 1
            stats[f"{response.status_code // 100}xx"] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except (AssertionError, BaseExceptionGroup):
                stats["server_errors"] += 1
                problems.append(f"{op.label}: {response.status_code} {response.text[:200]}")
            try:
                case.validate_response(response, checks=checks)
            except (AssertionError, BaseExceptionGroup) as exc:
                stats["schema_violations"] += 1
                detail = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
                problems.append(
                    f"{op.label}: {response.status_code} "
                    + " | ".join(" ".join(str(e).split())[:300] for e in detail)
                )

        try:
            run()
        except Unsatisfiable:  # no negative cases exist (an operation without inputs)
            stats["no_negative_cases"] += 1

    for result in schema.get_all_operations():
        op = result.ok()
        stats["operations"] += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise(op, mode)
    with capsys.disabled():
        print(
            f"\nschemathesis: {stats['operations']} operations, {stats['requests']} requests "
            f"({', '.join(f'{k} {v}' for k, v in sorted(stats.items()) if k.endswith('xx'))}; "
            f"{stats['no_negative_cases']} without negative cases); "
            f"server errors: {stats['server_errors']}, "
            f"schema violations: {stats['schema_violations']}"
        )
    assert stats["operations"] >= 20
    assert stats["server_errors"] == 0, problems[:10]
    assert stats["schema_violations"] == 0, problems[:10]
