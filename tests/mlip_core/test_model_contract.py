"""Contract every committee-model implementation must satisfy (native stacked, loop, MACE).

The physics checks that do not depend on the architecture: invariances, F = -dE/dr, stress as
the strain derivative, batching, extensivity, and the calculator's results contract.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from mlip_core.contract import check_committee_model
from mlip_core.model import CommitteeModel, CommitteePotential, LoopCommittee, ModelConfig


def _native() -> CommitteeModel:
    return CommitteePotential(
        ModelConfig(species=[29, 79], n_members=3, channels=8, energy_scale=0.5, seeds=[1, 2, 3])
    ).double()


def _native_two_layers() -> CommitteeModel:
    return CommitteePotential(
        ModelConfig(species=[29, 79], n_members=3, channels=8, n_layers=2, energy_scale=0.5)
    ).double()


def _loop() -> CommitteeModel:
    native = CommitteePotential(
        ModelConfig(species=[29, 79], n_members=2, channels=8, energy_scale=0.5, seeds=[4, 5])
    ).double()
    return LoopCommittee([native.select_members([0]), native.select_members([1])])


def _mace() -> CommitteeModel:
    mace_backend = pytest.importorskip("mlip_core.mace_backend", reason="mace-torch not installed")
    return mace_backend.mace_committee(2, [29, 79], dtype=torch.float64)


IMPLEMENTATIONS: dict[str, Callable[[], CommitteeModel]] = {
    "native-stacked": _native,
    "native-2-layers": _native_two_layers,
    "native-loop": _loop,
    "mace": _mace,
}


@pytest.fixture(scope="module", params=list(IMPLEMENTATIONS))
def model(request) -> CommitteeModel:
    m = IMPLEMENTATIONS[request.param]()
    assert isinstance(m, CommitteeModel)
    return m


def test_committee_contract(model) -> None:
    """mlip_core.contract.check_committee_model: shapes, invariances, F = -dE/dr, stress as the
    strain derivative, extensivity, batching, the calculator's results."""
    check_committee_model(model)


def test_the_contract_catches_a_non_conservative_model() -> None:
    """A committee whose forces are not -dE/dr fails the check."""
    native = _native()

    class Broken(torch.nn.Module):
        species, cutoff, n_members = native.species, native.cutoff, native.n_members

        def predict(self, graph, **kw):
            out = native.predict(graph, **kw)
            out.forces = out.forces * 1.01 if out.forces is not None else None
            return out

    with pytest.raises(AssertionError, match="F = -dE/dr"):
        check_committee_model(Broken())
