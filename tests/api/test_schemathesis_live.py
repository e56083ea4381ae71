"""Schemathesis in stateful mode against a running server (uvicorn on 127.0.0.1, real HTTP).

Campaigns are created from configs generated from the OpenAPI document (the campaign-author
JSON Schema), and the follow-up calls (read, pause, resume, retrain, next iteration, schedule,
cancel, ...) use the ids the server returned, through the links the document declares. Checks
on every response: no server error, status code documented, content type and body match the
documented schema. The counts are printed.

JSON Schema cannot state a few rules (:data:`RULES`): trust ``lo < hi`` (and ``energy_lo <
energy_hi``), a setting a retry may change listed in ``training.ignore_settings_keys`` (which names the
labeler's settings), the physics checks on the structures (MD step, npt, the labeler's
pre-flight, repeat), a
walker's ``start``
indexes a given source, NPT walkers on periodic structures only, a crystal ASE can build within the atom limit with no two atoms closer
than 0.5 Å, labeler settings that hold together, an index that selects a frame, a ``file`` from
the operator's import directories (the test server has none: one generic 422), a cron expression
Prefect accepts. A generated body that breaks one must get a 422 naming it; the test counts
those per rule, and any other 422 on a generated (valid) request is a mismatch. Schedules
register on the session's Prefect server.

Two changes are made to a generated body before the call, so that campaigns get created:
``content`` sources get a real structure text of their format (uploads are created too), and a
walker's ``start`` is taken modulo the number of sources.

Background jobs are recorded, not executed (``_SyncNoopRunner``): this checks the HTTP contract and
the state machine of campaigns; the jobs are tested in test_actions.py and test_serve_process.py.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hsettings

from api.runner import Run, Runner

STEPS = 15  # calls per scenario at most
SCENARIOS = 100
TOKEN = "pf_live_fuzz"

# The rules JSON Schema cannot state, as a 422 names them: cross-field rules of a config, and
# the cron / time zone grammar of a schedule (Prefect's CronSchedule decides).
RULES = {
    "trust lo < hi": r"lo must be < (energy_)?hi",
    "a retry may change what training ignores": r"retry_may_change lists .* but training",
    "ignored settings are the labeler's": r"is not a setting of labeler",
    "one spin state per geometry": r"has the geometry of .* with other initial",
    "walker start indexes a source": r"\.start=\d+ but only \d+ structure",
    "a band's ends index the sources": r"(initial|final)=\d+ but only \d+ structure"
    r"|initial and final are the same structure",
    "ASE builds the crystal": r"ASE cannot build it|Miller indices \(0, 0, 0\)"
    r"|lattice_constant: needed for|miller: \(0, 0, 0\) names no plane",
    "copies need a random modifier": r"copies=\d+ without vacancies, interstitials or substitute",
    "slab cuts a file or content": r"cuts a file or content; a generated slab",
    "a registered explorer takes its own parameters": r"unknown option .* for explorer",
    "structure modifiers fit the frame": r"vacancies: \d+ of a frame|not a whole number"
    r"|sites asked for|substituted atom's value is unknown|slab: the frame|slab: ASE cannot"
    r"|vacancies: the frame has|vacancies: \d+ asked for|interstitials: the"
    r"|strain: the frame has no cell|strain: a Voigt strain|interstitial_element without"
    r"|fractions add up to",
    "a walker's ramp and start hold together": r"pressure_end=.* GPa on an"
    r"|temperature_end on an nve walker|names an initial structure but start_from"
    r"|chooses among stored frames: it needs start_from",
    "the calibrated window is on the absolute deviation": r"calibrated: the bound calibrates",
    "validation covers every regime": r"cannot give each of the \d+ regimes",
    "repulsion radii hold together": r"inner radius .* must be below|inner_scale .* must be"
    r"|exceeds the cutoff|is given twice|takes no other keys|pair '.*': ",
    "an accuracy target in eV/Å": r"is no accuracy target",
    "atom limit": r"atoms, more than",
    "repeat along periodic directions": r"repeat: frame \d+ is not periodic along",
    "MD step vs the lightest element": r"more than twice a stable step",
    "the labeler's pre-flight": r"EMT has no parameters|does not pass the structure's"
    r"|below min_volume_per_atom|no pseudopotential for element|not found in .*: |has no entry"
    r"|for element|supports molecules or fully periodic|rejected the input|cannot build VASP"
    r"|executable not found on PATH",
    "a walker consistent with itself": r"record_every=\d+ > steps|GPa on an (nvt|nve) walker",
    "convergence reachable": r"patience=\d+ > max_iterations|label_budget=\d+ < bootstrap",
    "NPT walkers need periodic structures": r"npt needs bulk structures|npt on structures",
    "a physical geometry": r"atoms too close|degenerate cell|non-finite",
    "labeler settings hold together": r"labeler\.settings|Settings needs|must be a plain file"
    r"|must be one line without control characters",
    "index selects a frame": r"index '[^']*' selects no frame",
    "file from an import dir": r"not an importable structure file",
    "cron grammar": r"invalid schedule cron",
    "on-the-fly mode runs md walkers": r"on-the-fly mode runs md walkers only",
    "a model's own uncertainty is judged absolutely": r"reports its own uncertainty",
}


def _rule(text: str) -> str | None:
    return next((name for name, rx in RULES.items() if re.search(rx, text)), None)


_CONTENT = {
    "extxyz": '2\nLattice="3.6 0 0 0 3.6 0 0 0 3.6" Properties=species:S:1:pos:R:3 '
    'pbc="T T T"\nCu 0 0 0\nCu 1.8 1.8 0\n',
    "cif": "data_Cu\n_cell_length_a 3.61\n_cell_length_b 3.61\n_cell_length_c 3.61\n"
    "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
    "_symmetry_space_group_name_H-M 'P 1'\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
    "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nCu1 Cu 0 0 0\nCu2 Cu 0.5 0.5 0\n",
    "vasp": "Cu\n1.0\n3.61 0 0\n0 3.61 0\n0 0 3.61\nCu\n2\nDirect\n0 0 0\n0.5 0.5 0\n",
}
_CONTENT["xyz"] = _CONTENT["extxyz"]
_CONTENT["poscar"] = _CONTENT["vasp"]


class _SyncNoopRunner(Runner):
    """Records each submitted run as completed at once, without running it: the server's
    answers then depend only on the calls made, as a replayed scenario needs."""

    def submit(self, kind: str, campaign_id: int, job) -> Run:
        run = super().submit(kind, campaign_id, job)
        return self.wait(run.id, timeout=10)

    def _execute(self, run: Run, job) -> None:
        run.status, run.message = "completed", "not executed (schemathesis)"

    def forget(self) -> None:
        with self._lock:
            self._runs.clear()


def _empty_but_tokens(store, data) -> None:
    """Delete every row but the API tokens, every campaign directory and every deployment
    on the Prefect server."""
    from prefect.client.orchestration import get_client

    from database.models import ApiToken, Base

    with get_client(sync_client=True) as client:
        for dep in client.read_deployments():
            client.delete_deployment(dep.id)

    with store.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != ApiToken.__tablename__:
                conn.execute(table.delete())
    for child in data.iterdir():
        if child.is_dir():
            shutil.rmtree(child)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, prefect_api_url):
    """``(base_url, headers, reset)`` of the app served by uvicorn in a thread (admin token)."""
    import uvicorn

    from api.app import create_app
    from api.settings import get_api_settings
    from database import Store

    data = tmp_path_factory.mktemp("live") / "data"
    data.mkdir()
    settings = get_api_settings(data_dir=data)
    store = Store.from_url(settings.resolved_database_url())
    store.add_api_token("fuzz", TOKEN, scope="admin")
    runner = _SyncNoopRunner(1)
    app = create_app(settings, store=store, runner=runner)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield (
        f"http://127.0.0.1:{port}",
        {"Authorization": f"Bearer {TOKEN}"},
        lambda: (_empty_but_tokens(store, data), runner.forget()),
    )
    server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive()
    store.close()
    from workflows.steps import close_stores

    close_stores()


def test_stateful_schemathesis_against_running_server(live_server, capsys):
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    base_url, headers, reset = live_server
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    # Revoking the test's own token would end the scenario's access; tokens are fuzzed
    # statelessly in test_schemathesis.py.
    schema = schema.exclude(path_regex="^/api/v1/tokens")
    # Valid requests only, with the test's token: invalid bodies and missing or wrong tokens
    # are fuzzed in test_schemathesis.py and test_scopes.py.
    schema.config.generation.update(modes=[GenerationMode.POSITIVE], with_security_parameters=False)
    # Only the links the document declares (no inferred ones): a scenario reaches a campaign
    # through the id its creation returned.
    schema.config.phases.stateful.inference.algorithms = []
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    stats: Counter[str] = Counter()
    problems: list[str] = []

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            """Each scenario starts from an empty server (the test's token only): the state
            machine must see the same answers when Hypothesis replays a scenario."""
            reset()

        def before_call(self, case) -> None:
            body = case.body
            if case.operation.label == "POST /api/v1/campaigns" and isinstance(body, dict):
                config = body.get("config") or {}
                sources = config.get("structures") or [{}]
                for src in sources:
                    if isinstance(src, dict) and src.get("format") in _CONTENT and "content" in src:
                        src["content"] = _CONTENT[src["format"]]
                for walker in (config.get("exploration") or {}).get("walkers") or []:
                    start = walker.get("start") if isinstance(walker, dict) else None
                    if isinstance(start, (int, float)) and not isinstance(start, bool):
                        walker["start"] = int(start) % len(sources)  # JSON may say 3.0

        def get_call_kwargs(self, case) -> dict:
            return {"headers": headers, "timeout": 60}

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            label = case.operation.label
            code = response.status_code
            stats["requests"] += 1
            stats[f"{code // 100}xx"] += 1
            stats[f"{label} {code}"] += 1
            try:
                case.validate_response(response, checks=checks)
            except (AssertionError, BaseExceptionGroup) as exc:
                stats["server_errors" if code >= 500 else "mismatches"] += 1
                detail = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
                problems.append(
                    f"{label}: {code} " + " | ".join(" ".join(str(e).split())[:300] for e in detail)
                )
            if code == 422:
                rule = _rule(response.text)
                if rule is None:
                    stats["mismatches"] += 1
                    problems.append(f"valid request refused: {label} {response.text[:300]}")
                else:
                    stats[f"422 by a rule JSON Schema cannot state: {rule}"] += 1

    Machine.run(
        settings=hsettings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
    with capsys.disabled():
        print(f"\nschemathesis stateful against {base_url}:")
        for key, n in sorted(stats.items()):
            print(f"  {key}: {n}")
        print(f"  server errors: {stats['server_errors']}, mismatches: {stats['mismatches']}")
    assert stats["server_errors"] == 0, problems[:10]
    assert stats["mismatches"] == 0, problems[:30]
    created = stats["POST /api/v1/campaigns 201"]
    assert created >= 3, f"only {created} generated configs created a campaign"
    followed = sum(
        n for k, n in stats.items() if "{campaign_id}" in k and k.endswith((" 200", " 202"))
    )
    assert followed >= 10, "the scenarios did not reach the created campaigns"
