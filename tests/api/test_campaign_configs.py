"""Campaign configs sent to the API are data: the operator's part (task runner, Dask cluster,
scheduler address, executables, launchers, scratch, server paths) is refused with a one-line 422
naming the field, before anything is imported, executed, connected to or stored; structures come
as content or from the operator's import directories, with one answer for every other path; the
config's JSON Schema in the OpenAPI document is complete."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from ._data import tiny_config

URL = "/api/v1/campaigns"


@pytest.fixture
def sockets(monkeypatch) -> list:
    """Every outgoing connection attempted from Python (recorded, then refused)."""
    calls: list = []

    def connect(self, address, *args, **kwargs):
        calls.append(address)
        raise OSError("connections are recorded by the test")

    def create_connection(address, *args, **kwargs):
        calls.append(address)
        raise OSError("connections are recorded by the test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return calls


def _operator_payloads(marker: Path) -> list[tuple[dict, str]]:
    code = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('pwned')"
    dask = {"task_runner": "dask", "dask": {"cluster_kwargs": {"preload": [code]}}}
    return [
        ({"execution": dask}, "config: execution: unknown field 'task_runner'"),
        ({"execution": {"profile": "local", **dask}}, "config: execution: unknown field"),
        (
            {"execution": {"dask": {"cluster_class": "os.system"}}},
            "config: execution: unknown field 'dask'",
        ),
        (
            {"execution": {"dask": {"address": "tcp://203.0.113.9:8786"}}},
            "config: execution: unknown field 'dask'",
        ),
        ({"execution": {"max_workers": 64}}, "config: execution: unknown field 'max_workers'"),
        (
            {"labeler": {"name": "espresso", "command": f"sh -c '{code}'"}},
            "config: labeler: unknown field 'command'",
        ),
        (
            {"labeler": {"name": "espresso", "launcher": "sh -c"}},
            "config: labeler: unknown field 'launcher'",
        ),
        (
            {"labeler": {"name": "cp2k", "scratch_root": "/"}},
            "config: labeler: unknown field 'scratch_root'",
        ),
        (
            {"labeler": {"name": "espresso", "settings": {"pseudo_dir": "/etc"}}},
            "config: labeler.settings: pseudo_dir: is an operator setting",
        ),
        (
            {"labeler": {"name": "cp2k", "settings": {"data_dir": "/"}}},
            "config: labeler.settings: data_dir: is an operator setting",
        ),
        (
            {
                "labeler": {
                    "name": "espresso",
                    "settings": {"input_data": {"control": {"outdir": "/srv"}}},
                }
            },
            "config: labeler.settings: input_data.control.outdir: names a file or directory",
        ),
        (
            {
                "labeler": {
                    "name": "espresso",
                    "settings": {"pseudopotentials": {"Cu": "../../pesflow.sqlite"}},
                }
            },
            "config: labeler.settings: pseudopotentials.Cu: must be a plain file name",
        ),
        (
            {"labeler": {"name": "cp2k", "settings": {"inp": "@INCLUDE /etc/passwd"}}},
            "config: labeler.settings: inp: line 1: preprocessor directive '@INCLUDE'",
        ),
        (
            {"labeler": {"name": "pyscf", "settings": {"basis": "pesflow.sqlite"}}},
            "config: labeler.settings: basis: must be a PySCF library name",
        ),
        ({"execution": {"profile": "gpu"}}, "config: execution.profile: unknown execution"),
    ]


def test_the_operators_part_is_refused_naming_the_field(client, auth, store, sockets, tmp_path):
    marker = tmp_path / "pwned"
    for override, expected in _operator_payloads(marker):
        r = client.post(URL, json={"config": tiny_config(**override)}, headers=auth)
        assert r.status_code == 422, (override, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail
        assert detail.startswith(expected), (detail, expected)
    assert not marker.exists() and sockets == []
    assert store.list_campaigns() == []


def test_a_created_campaign_stores_the_profile_name(client, auth, store):
    r = client.post(URL, json={"config": tiny_config()}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["config"]["execution"] == {"profile": "local"}
    assert store.get_campaign(r.json()["id"]).config["execution"] == {"profile": "local"}


@pytest.mark.parametrize("fmt", ["extxyz", "cif", "poscar"])
def test_structures_uploaded_as_content(client, auth, store, fmt):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions[1] += (0.05, -0.02, 0.01)
    with tempfile.TemporaryDirectory() as tmp:
        ase.io.write(Path(tmp) / "s", atoms, format={"poscar": "vasp"}.get(fmt, fmt))
        text = (Path(tmp) / "s").read_text()
    cfg = tiny_config(structures=[{"content": text, "format": fmt}])
    r = client.post(URL, json={"config": cfg}, headers=auth)
    assert r.status_code == 201, r.text
    rec = store.get_campaign(r.json()["id"])
    (got,) = store.get_atoms(rec.config["_runtime"]["initial_structure_ids"])
    assert np.array_equal(got.numbers, atoms.numbers)
    assert np.allclose(got.cell.array, atoms.cell.array)
    assert np.allclose(got.get_scaled_positions() % 1, atoms.get_scaled_positions() % 1)
    (stored,) = rec.config["structures"]
    assert {k: v for k, v in stored.items() if v is not None} == {
        "index": ":",
        "format": fmt,
        "content": text,
    }


def test_oversize_or_unparsable_content_is_422(client, auth, store, monkeypatch):
    monkeypatch.setenv("PESFLOW_MAX_STRUCTURE_BYTES", "1000")
    big = tiny_config(structures=[{"content": "1\n\nCu 0 0 0\n" * 100, "format": "xyz"}])
    r = client.post(URL, json={"config": big}, headers=auth)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("config: structures[0].content: 1200 bytes, more than")
    bad = tiny_config(structures=[{"content": "no crystal here", "format": "cif"}])
    r = client.post(URL, json={"config": bad}, headers=auth)
    assert r.status_code == 422 and "structures[0].content: cannot parse" in r.json()["detail"]
    assert store.list_campaigns() == []


def test_structure_files_one_answer_and_the_database_stays_healthy(
    client, auth, store, settings, tmp_path, monkeypatch
):
    imports = tmp_path / "imports"
    imports.mkdir()
    ase.io.write(imports / "cu.xyz", bulk("Cu", "fcc", a=3.6, cubic=True), format="extxyz")
    monkeypatch.setenv("PESFLOW_IMPORT_DIRS", str(imports))
    db = settings.data_dir / "pesflow.sqlite"
    opened: list[str] = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        opened.append(os.path.realpath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    if db.exists():  # SQLite: a link to the live database inside an import directory
        os.symlink(db, imports / "db.xyz")
    answers = set()
    for path in (str(db), "db.xyz", str(tmp_path / "elsewhere.xyz"), "missing.xyz", "../x"):
        cfg = tiny_config(structures=[{"file": path, "format": "extxyz"}])
        r = client.post(URL, json={"config": cfg}, headers=auth)
        assert r.status_code == 422, r.text
        answers.add(r.text)
    assert answers == {
        '{"detail":"config: structures[0].file: not an importable structure file (the API '
        "reads files only from the operator's import directories)\"}"
    }
    assert str(db) not in opened and str(db.resolve()) not in opened
    assert store.list_campaigns() == []
    # an import file is read; readers see its name, never the server path
    r = client.post(
        URL, json={"config": tiny_config(structures=[{"file": "cu.xyz"}])}, headers=auth
    )
    assert r.status_code == 201, r.text
    assert r.json()["config"]["structures"][0]["file"] == "cu.xyz"
    shown = client.get(f"{URL}/{r.json()['id']}").json()["config"]
    assert str(tmp_path) not in str(shown)
    # the database is intact for another process with a fresh Store
    code = (
        "import sys; from database import Store; s = Store.from_url(sys.argv[1]); "
        "print(','.join(c.name for c in s.list_campaigns())); s.close()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, settings.resolved_database_url()],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tiny"


def test_the_config_json_schema_is_complete(client):
    import jsonschema

    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    body = schemas["CampaignCreate"]["properties"]["config"]
    assert body == {"$ref": "#/components/schemas/CampaignSpec"} or "CampaignSpec" in str(body)

    def loose(node, where="") -> list[str]:
        found = []
        if isinstance(node, dict):
            if node.get("additionalProperties") is True or (
                node.get("type") == "object"
                and not {"properties", "additionalProperties"} & set(node)
            ):
                found.append(where)
            for key, value in node.items():
                found += loose(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                found += loose(value, f"{where}[{i}]")
        return found

    settings_models = [name for name in schemas if name.endswith("SettingsSpec")]
    assert len(settings_models) >= 7  # every backend
    for name in [*settings_models, "CampaignSpec", "StructureSource", "ProfileRef"]:
        assert loose(schemas[name], name) == []
    assert "pseudo_dir" not in schemas["EspressoSettingsSpec"]["properties"]
    assert "data_dir" not in schemas["CP2KSettingsSpec"]["properties"]

    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/CampaignCreate", "components": doc["components"]}
    )
    good = [
        tiny_config(),
        tiny_config(execution={"profile": "local"}),
        tiny_config(labeler={"name": "espresso", "settings": {"ecutwfc": 30, "kpts": [2, 2, 2]}}),
        tiny_config(structures=[{"content": "1\n\nCu 0 0 0\n", "format": "xyz"}]),
    ]
    for cfg in good:
        assert list(validator.iter_errors({"config": cfg})) == [], cfg
    bad = [
        tiny_config(execution={"task_runner": "dask"}),
        tiny_config(labeler={"name": "espresso", "settings": {"pseudo_dir": "/x"}}),
        tiny_config(labeler={"name": "emt", "command": "x"}),
        tiny_config(structures=[{"content": "x"}]),  # content needs a format
        tiny_config(structures=[{"file": "a.xyz", "generate": {"element": "Cu"}}]),
        tiny_config(execution={"profile": "cluster"}),  # not a profile of this server
        tiny_config(structures=[{"generate": {"element": "Fe"}}]),  # Fe is bcc: needs a
        tiny_config(structures=[{"generate": {"element": "Cu"}, "format": "cif"}]),
        tiny_config(structures=[{"content": "1\n\nCu 0 0 0\n", "format": "xyz", "index": "::0"}]),
    ]
    for cfg in bad:
        assert list(validator.iter_errors({"config": cfg})) != [], cfg


def test_the_openapi_lists_this_servers_execution_profiles(client, tmp_path, monkeypatch):
    """The enum of ``execution.profile`` is the operator's profile names, read again when the
    profiles file changes; a config naming another profile is refused by the schema."""
    enum = lambda: client.get("/openapi.json").json()["components"]["schemas"]["ProfileRef"][  # noqa: E731
        "properties"
    ]["profile"]["enum"]
    assert enum() == ["local"]
    path = tmp_path / "profiles.yaml"
    path.write_text("cluster:\n  max_workers: 2\n")
    monkeypatch.setenv("PESFLOW_EXECUTION_PROFILES", str(path))
    assert enum() == ["cluster", "local"]


def test_a_stored_inline_dask_section_is_not_run_by_the_api(client, auth, store, sockets, tmp_path):
    """A campaign stored before profiles with an inline Dask section (e.g. a preload) is never
    run or scheduled by the API: 409 naming the section, nothing queued, nothing imported or
    connected."""
    from workflows.config import parse_config
    from workflows.steps import setup_campaign

    marker = tmp_path / "preloaded"
    payload = f"open({str(marker)!r}, 'w').write('x')"
    data = tiny_config("legacy")
    data["execution"] = {
        "task_runner": "dask",
        "dask": {"cluster_class": "local", "cluster_kwargs": {"preload": [payload]}},
    }
    cfg = parse_config(data, source="legacy.yaml", base_dir=tmp_path)
    cid = setup_campaign(store, cfg, tmp_path / "data").campaign_id
    for path, body in (
        (f"/api/v1/campaigns/{cid}/resume", None),
        (f"/api/v1/campaigns/{cid}/next-iteration", None),
        (f"/api/v1/campaigns/{cid}/schedule", {"interval_seconds": 3600}),
    ):
        r = client.post(path, json=body, headers=auth)
        assert r.status_code == 409, r.text
        assert "inline execution section (dask)" in r.json()["detail"]
    assert store.get_campaign(cid).status == "created"
    assert not marker.exists() and sockets == []
