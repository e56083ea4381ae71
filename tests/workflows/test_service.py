"""The workflows facade (:mod:`workflows.service`): no Prefect at import, flow and deployment
names that agree, a retrain as a Prefect flow run (flow-run id reported) and none for a
cancelled campaign."""

from __future__ import annotations

import subprocess
import sys

from workflows import service


def test_importing_the_facade_imports_no_prefect_or_torch():
    code = (
        "import sys, workflows.service, api.app, pesflow.cli; "
        "print(sorted(m for m in ('prefect', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_flow_and_deployment_names_agree(prefect_harness):
    from workflows import deploy, deployed

    assert deployed.campaign_iterations.name == deploy.FLOW_NAME == service.FLOW_NAME
    assert deployed.retrain_campaign.name == deploy.RETRAIN_FLOW_NAME
    assert f"{deploy.RETRAIN_FLOW_NAME}/api" == service.API_RETRAIN_DEPLOYMENT
    assert deployed.retrain_flow.name == deployed.RETRAIN_FLOW_NAME


def test_a_cancelled_campaign_is_not_retrained_and_starts_no_flow(tmp_path):
    from database import Store
    from workflows.settings import get_settings

    settings = get_settings(data_dir=tmp_path)
    with Store.sqlite(tmp_path) as store:
        c = store.create_campaign("gone", {})
        store.transition_campaign(c.id, "cancelled", "test")
    seen: list[str] = []
    out = service.retrain(settings, c.id, on_flow_run=seen.append)
    assert out == {"status": "cancelled", "message": "not started: the campaign is cancelled"}
    assert seen == []
