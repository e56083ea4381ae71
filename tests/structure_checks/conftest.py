"""A small float64 committee that knows Cu."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def model64_cu():
    from mlip_core.model import CommitteePotential, ModelConfig

    torch.manual_seed(0)
    return CommitteePotential(ModelConfig(species=[29], n_members=2, channels=8, n_layers=1)).to(
        torch.float64
    )
