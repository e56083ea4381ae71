"""Execution profiles: the operator's named execution sections, resolved where the task runner
and the labeler are built; configs that name one are stored as ``{profile: NAME}``; inline
sections of local configs keep working and keep their snapshot."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from workflows.cluster import concurrency, describe, label_slots, task_runner_kwargs
from workflows.config import ConfigError, ExecutionConfig, parse_config
from workflows.labeler import make_labeler
from workflows.profiles import ProfilesError, load_profiles, resolve_execution
from workflows.setup import config_snapshot

from .conftest import EXAMPLE

BASE = yaml.safe_load(EXAMPLE.read_text())

PROFILES = {
    "slurm-qe": {
        "task_runner": "dask",
        "dask": {
            "cluster_class": "local",
            "cluster_kwargs": {"n_workers": 3, "threads_per_worker": 2},
        },
        "label_slots": 12,
        "labelers": {
            "espresso": {
                "command": "pw.x -nk 2",
                "launcher": "srun",
                "env": {"OMP_NUM_THREADS": "1"},
                "scratch_root": "/scratch/pesflow",
                "timeout": 3600,
                "settings": {"pseudo_dir": "/opt/pseudo"},
            }
        },
    },
    "local": {"max_workers": 5},
}


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(PROFILES))
    monkeypatch.setenv("PESFLOW_EXECUTION_PROFILES", str(path))
    return path


def _cfg(execution=None, labeler=None):
    data = copy.deepcopy(BASE)
    if execution is None:
        data.pop("execution", None)
    else:
        data["execution"] = execution
    if labeler is not None:
        data["labeler"] = labeler
    return parse_config(data, source="c.yaml")


def test_a_dask_profile_resolves_where_the_runner_is_built(profiles):
    ex = ExecutionConfig(profile="slurm-qe")
    kw = task_runner_kwargs(ex)  # builds nothing
    assert kw["cluster_class"] == "distributed.LocalCluster"
    assert kw["cluster_kwargs"] == {
        "n_workers": 3,
        "threads_per_worker": 2,
        "dashboard_address": None,
    }
    assert concurrency(ex) == 6 and label_slots(ex) == 12
    assert describe(ex) == "dask: distributed.LocalCluster (3 workers)"
    # the file redefines the built-in 'local'
    assert concurrency(ExecutionConfig(profile="local")) == 5


def test_builtin_local_profile_without_a_file(monkeypatch):
    monkeypatch.delenv("PESFLOW_EXECUTION_PROFILES", raising=False)
    local = resolve_execution(ExecutionConfig(profile="local"))
    assert local.task_runner == "threads" and local.max_workers == 2


def test_unknown_profile_is_one_line_naming_it_and_the_available_ones(profiles):
    with pytest.raises(ConfigError) as exc:
        label_slots(ExecutionConfig(profile="gpu"))
    msg = str(exc.value)
    assert "\n" not in msg
    assert "unknown execution profile 'gpu'" in msg and "available: local, slurm-qe" in msg


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"a": {"task_runner": "dusk"}}, "profile 'a': task_runner: must be one of"),
        ({"a": {"dask": {"adress": "x"}}}, "profile 'a': dask: unknown field 'adress'"),
        ({"a": {"profile": "b"}}, "a profile cannot name another profile"),
        ({"bad name": {}}, "profile name 'bad name'"),
        ({"a": {"labelers": {"espresso": {"settings": {"ecutwfc": 30}}}}}, "'ecutwfc' is not"),
        ({"a": {"labelers": {"nope": {}}}}, "unknown labeler 'nope'"),
        ([1, 2], "must map profile names"),
    ],
)
def test_profile_file_errors_are_one_line(tmp_path, content, expected):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ProfilesError) as exc:
        load_profiles(path)
    assert expected in str(exc.value) and "\n" not in str(exc.value)
    assert str(exc.value).startswith(str(path))


def test_profile_and_inline_keys_do_not_mix():
    with pytest.raises(ConfigError) as exc:
        _cfg(execution={"profile": "local", "max_workers": 3})
    assert "give either 'profile' or an inline execution section" in str(exc.value)


def test_snapshots_hold_the_profile_name_and_inline_sections_are_unchanged(profiles):
    named = _cfg(execution={"profile": "slurm-qe"})
    assert config_snapshot(named)["execution"] == {"profile": "slurm-qe"}
    inline = _cfg(execution={"task_runner": "threads", "max_workers": 3})
    # the keys of snapshots written before profiles existed (a rerun compares them)
    assert config_snapshot(inline)["execution"] == {
        "task_runner": "threads",
        "max_workers": 3,
        "dask": None,
        "label_slots": None,
    }
    assert "content" not in config_snapshot(inline)["structures"][0]
    again = parse_config(config_snapshot(named), source="snapshot", check_files=False)
    assert again == named


def test_the_labeler_gets_executor_and_server_paths_from_the_profile(profiles):
    cfg = _cfg(
        execution={"profile": "slurm-qe"},
        labeler={"name": "espresso", "settings": {"ecutwfc": 30}},
    )
    labeler = make_labeler(cfg)
    assert labeler.executor.command == "pw.x -nk 2" and labeler.executor.launcher == "srun"
    assert labeler.executor.scratch_root == "/scratch/pesflow"
    assert labeler.executor.timeout == 3600 and dict(labeler.executor.env) == {
        "OMP_NUM_THREADS": "1"
    }
    assert labeler.settings.pseudo_dir == "/opt/pseudo" and labeler.settings.ecutwfc == 30
    # the server path is not hashed: the same physics hashes alike on every machine
    plain = _cfg(labeler={"name": "espresso", "settings": {"ecutwfc": 30}})
    assert make_labeler(plain).settings_hash == labeler.settings_hash
    # given twice (config and profile): refused, not silently overridden
    both = _cfg(
        execution={"profile": "slurm-qe"},
        labeler={"name": "espresso", "settings": {"pseudo_dir": "/x"}},
    )
    with pytest.raises(ConfigError, match=r"labeler\.settings\.pseudo_dir: also set by"):
        make_labeler(both)


def test_an_inline_section_of_a_local_config_may_set_the_executor():
    cfg = _cfg(
        execution={"max_workers": 1, "labelers": {"emt": {"timeout": 5}}},
        labeler={"name": "emt"},
    )
    assert make_labeler(cfg).executor.timeout == 5
    assert config_snapshot(cfg)["execution"]["labelers"]["emt"]["timeout"] == 5
