"""A label keeps the settings that produced it (issue 14, case 5).

A QE label unconverged twice, then converged: with the default retry policy the third attempt
has more SCF steps and less mixing but the requested smearing (0.10 eV) — the physics is kept.
Raising the smearing on a retry is opted into per key (``labeler.retry_may_change``); such a
label is stored with its effective settings (0.15 eV) and a training set refuses to mix it with
the others unless ``training.ignore_settings_keys`` says the key does not matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from dft_adapters import Executor, LabelResult, RetryPolicy, get_labeler
from workflows.config import ConfigError, load_config
from workflows.context import CampaignFailedError
from workflows.labeler import make_labeler
from workflows.train import check_one_physics

from ..dft_adapters.conftest import FIXTURES, FakeRunner, fake_executable, si2
from ._campaigns import write_config


class _Runs:
    """Successive fake pw.x runs: unconverged twice, then converged."""

    def __init__(self) -> None:
        d = FIXTURES / "espresso"
        self.runs = [
            FakeRunner(stdout=d / "Si2_unconverged.pwo", returncode=2),
            FakeRunner(stdout=d / "Si2_unconverged.pwo", returncode=2),
            FakeRunner(stdout=d / "Si2_converged.pwo"),
        ]

    def __call__(self, argv, **kw):
        return self.runs.pop(0)(argv, **kw)


def _qe(tmp: Path, policy: RetryPolicy):
    pseudo = tmp / "pseudo"
    pseudo.mkdir(exist_ok=True)
    (pseudo / "Si.pbe-rrkj.UPF").write_text("dummy\n")
    return get_labeler(
        "espresso",
        pseudo_dir=str(pseudo),
        ecutwfc=20,
        smearing=0.1,
        retry_policy=policy,
        executor=Executor(command=fake_executable(tmp / "bin", "pw.x"), runner=_Runs()),
    )


@pytest.mark.parametrize("opted_in", [False, True])
def test_a_retry_changes_the_physics_only_when_opted_in(tmp_path: Path, opted_in: bool):
    labeler = _qe(tmp_path, RetryPolicy(physics_keys=("smearing",) if opted_in else ()))
    result = labeler.label(si2(), workdir=tmp_path / "calc")
    assert isinstance(result, LabelResult), result
    assert [a.status for a in result.attempts] == ["scf_unconverged", "scf_unconverged", "ok"]
    assert result.settings["smearing"] == (0.15 if opted_in else 0.1)
    assert result.settings_hash == labeler.settings_hash  # the requested settings' key
    assert result.effective_settings_hash != labeler.settings_hash  # what produced it


def test_stored_labels_keep_effective_settings_and_training_refuses_the_mix(tmp_path: Path):
    """Through the database: two labels of the requested physics and one whose retry raised the
    smearing; the training set is refused, naming the label and the change, unless the key is
    declared not to matter. SCF steps and mixing changed by a retry never count."""
    from workflows import steps

    store = steps.open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    cid = store.create_campaign("c", config={}).id
    frames = [bulk("Cu", cubic=True).repeat(2) for _ in range(3)]
    for k, f in enumerate(frames):
        f.rattle(0.02, seed=k)
    sids = store.add_structures(frames, campaign=cid, source="bootstrap")
    ids = store.request_labels(cid, sids, labeler="espresso", settings_hash="h" * 64)
    requested = {"ecutwfc": 20.0, "smearing": 0.1, "max_scf_steps": 50, "mixing": 0.4, "kpts": None}
    used = [
        {**requested, "max_scf_steps": 100, "mixing": 0.2, "kpts": [3, 3, 3]},  # numerics only
        dict(requested, kpts=[4, 4, 4]),
        {**requested, "max_scf_steps": 200, "mixing": 0.1, "smearing": 0.15, "kpts": [3, 3, 3]},
    ]
    for lid, eff in zip(ids, used, strict=True):
        store.claim_labels(campaign=cid)
        store.store_result(
            lid,
            energy=-1.0,
            forces=np.zeros((32, 3)),
            effective_settings=eff,
            effective_settings_hash=str(lid) * 64,
        )
    items = store.training_set(cid, labeler="espresso", settings_hash="h" * 64)
    assert [it.label.effective_settings["smearing"] for it in items] == [0.1, 0.1, 0.15]
    with pytest.raises(
        CampaignFailedError, match=rf"1 of 3 .*label {ids[2]}: smearing 0.1 -> 0.15"
    ):
        check_one_physics(items, requested)
    check_one_physics(items, requested, ["smearing"])
    check_one_physics(items[:2], requested)
    steps.close_stores()


def test_opting_in_needs_the_training_to_agree(tmp_path: Path):
    labeler = {"name": "cp2k", "settings": {"smearing": 0.1}, "retry_may_change": ["smearing"]}
    with pytest.raises(ConfigError, match=r"retry_may_change lists \['smearing'\] but training"):
        load_config(write_config(tmp_path / "a.yaml", labeler=labeler))
    cfg = load_config(
        write_config(
            tmp_path / "b.yaml", labeler=labeler, training={"ignore_settings_keys": ["smearing"]}
        )
    )
    assert make_labeler(cfg).retry_policy.physics_keys == ("smearing",)
    with pytest.raises(ConfigError, match=r"'smearing' is not a setting of labeler 'emt'"):
        load_config(
            write_config(tmp_path / "e.yaml", training={"ignore_settings_keys": ["smearing"]})
        )
    assert (
        make_labeler(load_config(write_config(tmp_path / "c.yaml"))).retry_policy.physics_keys == ()
    )
