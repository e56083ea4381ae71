"""Reduced campaign configs shared by the workflow tests (small Cu cells, short MD)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REDUCED: dict[str, Any] = {
    "name": "reduced",
    "seed": 1,
    "structures": [{"generate": {"element": "Cu", "lattice_constant": 3.61, "repeat": [2, 2, 2]}}],
    "labeler": {"name": "emt"},
    "bootstrap": {"n_structures": 8, "rattle": 0.05, "strain": 0.02},
    "validation": {"n_structures": 12, "rattle": [0.03, 0.06, 0.1], "strain": 0.03},
    "model": {"n_members": 4, "channels": 16, "n_layers": 1},
    "training": {"max_epochs": 80, "max_time_s": 60, "warm_start_epochs": 30, "patience": 40},
    "exploration": {
        "walkers": [
            {"temperature": t, "steps": 200, "timestep": 2.0, "record_every": 5}
            for t in (300, 800, 1200)
        ]
    },
    "trust": {"lo": 0.08, "hi": 0.5},
    "selection": {"max_per_iteration": 10, "strategy": "fps"},
    "convergence": {"accurate_ratio": 0.6, "patience": 1, "max_iterations": 8},
    "execution": {"task_runner": "threads", "max_workers": 2},
}


def write_config(path: Path, **overrides: Any) -> Path:
    """Write REDUCED with section-level overrides (dicts are merged one level deep)."""
    data = copy.deepcopy(REDUCED)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
