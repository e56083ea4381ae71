"""``pesflow validate`` checks physics, not only types (issue 14): values outside physical
sense are errors (exit 2, one line naming the key and a likely fix) or warnings (exit 0, a
``warning:`` line); the labeler's own pre-flight runs at validate time; ``npt`` on a structure
with vacuum or partial pbc is refused whatever the source.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ase.build import fcc111
from ase.io import write
from typer.testing import CliRunner

from pesflow.cli import app

from ._campaigns import write_config

WALKER = {"temperature": 300, "steps": 100, "record_every": 5}

ERRORS = [
    ({"trust": {"lo": 50, "hi": 150}}, r"trust: lo=50: .* given in meV/Å\? \(0\.05 eV/Å\)"),
    (
        {"exploration": {"walkers": [{**WALKER, "temperature": 12000}]}},
        r"temperature: must be <= 10000",
    ),
    (
        {"exploration": {"walkers": [{**WALKER, "timestep": 20.0}]}},
        r"timestep=20 fs is more than twice a stable step for Cu \(8\.0 fs\)",
    ),
    (
        {"exploration": {"walkers": [{**WALKER, "record_every": 200}]}},
        r"record_every=200 > steps=100",
    ),
    (
        {"exploration": {"walkers": [{**WALKER, "pressure": 1.0}]}},
        r"pressure=1.0 GPa on an nvt walker",
    ),
    ({"model": {"cutoff": 1.0}}, r"model\.cutoff: must be >= 1\.5"),
    ({"model": {"cutoff": 20.0}}, r"model\.cutoff: must be <= 15"),
    ({"convergence": {"patience": 9, "max_iterations": 3}}, r"patience=9 > max_iterations=3"),
    (
        {"convergence": {"label_budget": 10}},
        r"label_budget=10 < bootstrap \+ validation structures \(20\)",
    ),
    (
        {"structures": [{"generate": {"element": "Fe", "crystal": "bcc"}}]},
        r"structures\[0\]\.generate: EMT has no parameters for element\(s\) Fe",
    ),
    (
        {
            "structures": [{"file": "slab.extxyz"}],
            "exploration": {"walkers": [{**WALKER, "ensemble": "npt"}]},
        },
        r"npt on structures\[0\]\.file, which is not periodic along c",
    ),
    (
        {
            "structures": [{"file": "slab_pbc.extxyz"}],
            "exploration": {"walkers": [{**WALKER, "ensemble": "npt"}]},
        },
        r"npt on structures\[0\]\.file, which has 1\d\.\d Å of vacuum along c",
    ),
]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    write(tmp_path / "slab.extxyz", slab)
    slab.pbc = True
    write(tmp_path / "slab_pbc.extxyz", slab)
    return tmp_path


@pytest.mark.parametrize(("override", "message"), ERRORS, ids=[m[:30] for _, m in ERRORS])
def test_unphysical_values_are_one_line_errors(files: Path, override: dict, message: str):
    cfg = write_config(files / "c.yaml", **override)
    res = CliRunner().invoke(app, ["validate", str(cfg)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {cfg.name}: "), res.output
    assert __import__("re").search(message, lines[0]), lines[0]


def test_a_doubtful_value_is_a_warning(files: Path):
    cfg = write_config(files / "c.yaml", exploration={"walkers": [{**WALKER, "timestep": 10.0}]})
    res = CliRunner().invoke(app, ["validate", str(cfg)])
    assert res.exit_code == 0, res.output
    first, ok = res.output.strip().splitlines()
    assert first.startswith("warning: exploration.walkers[0].timestep=10 fs exceeds a stable")
    assert ok.endswith("labeler 'emt')")


def _validate_one_line(path: Path, data: dict, message: str) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path.name}: "), res.output
    assert __import__("re").search(message, lines[0]), lines[0]


def test_a_config_naming_a_profile_gets_the_labeler_pre_flight_and_a_known_profile(
    tmp_path: Path,
):
    """Validate builds the labeler as the run does, the operator's profile included: a config
    naming a profile is checked too (before, its pre-flight was skipped and the run failed
    only after every label had failed), and an unknown profile is refused at once."""
    import copy

    from ._campaigns import REDUCED

    data = copy.deepcopy(REDUCED)
    data["execution"] = {"profile": "local"}
    data["structures"] = [{"generate": {"element": "Fe", "crystal": "bcc"}}]
    _validate_one_line(tmp_path / "p.yaml", data, r"EMT has no parameters for element\(s\) Fe")
    data = copy.deepcopy(REDUCED)
    data["execution"] = {"profile": "nosuch"}
    _validate_one_line(
        tmp_path / "q.yaml", data, r"execution\.profile: unknown execution profile 'nosuch'"
    )


def test_a_backend_with_its_own_uncertainty_refuses_a_relative_window(tmp_path: Path):
    from tests._codes import require_quippy

    require_quippy()
    import copy

    from ._campaigns import REDUCED

    data = copy.deepcopy(REDUCED)
    data["model"] = {"backend": "gap", "n_members": 2, "cutoff": 4.0}
    data["trust"] = {"lo": 0.1, "hi": 0.5, "relative": True}
    _validate_one_line(
        tmp_path / "g.yaml", data, r"trust\.relative: model backend 'gap' reports its own"
    )
