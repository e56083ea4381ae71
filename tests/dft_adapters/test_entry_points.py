"""Out-of-tree labelers: a distribution declaring a ``pesflow.labelers`` entry point is found by
the registry, accepted by a campaign config (validated when parsed), built by
``workflows.labeler.make_labeler`` and labels; it runs the shipped contract. A broken entry
point is an error naming the distribution and the entry point.

The distribution is real metadata, not a mock: a ``*.dist-info`` folder with ``METADATA`` and
``entry_points.txt`` next to its module in a temporary directory put on ``sys.path``, where
``importlib.metadata`` finds it as it finds an installed one (nothing is pip-installed).
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dft_adapters import LabelResult, available_labelers, get_labeler, labeler_class
from dft_adapters.contract import ContractSpec, check_labeler
from dft_adapters.registry import LabelerLoadError

from .conftest import cu4

PLUGIN = '''
"""An out-of-tree labeler: Lennard-Jones through ASE, written against the public API only."""
from dataclasses import dataclass
from typing import ClassVar

from ase.calculators.lj import LennardJones

from dft_adapters import Labeler, RawLabel, Settings


@dataclass(frozen=True)
class PairSettings(Settings):
    """sigma (Å), epsilon (eV)."""

    sigma: float = 2.3
    epsilon: float = 0.1


class PairLabeler(Labeler):
    """Smooth Lennard-Jones, any element."""

    name: ClassVar[str] = "pair-plugin"
    settings_cls: ClassVar[type[Settings]] = PairSettings
    uses_scratch: ClassVar[bool] = False

    def _compute(self, atoms, settings, directory, attempt):
        atoms.calc = LennardJones(sigma=settings.sigma, epsilon=settings.epsilon, smooth=True)
        stress = atoms.get_stress() if atoms.pbc.all() else None
        return RawLabel(atoms.get_potential_energy(), atoms.get_forces(), stress, "pair-1.0")
'''


def _distribution(site: Path, name: str, entry_points: str, module: str | None = None) -> None:
    """Write the metadata of distribution ``name`` 0.1 (and its module) into ``site``."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points).lstrip())
    if module is not None:
        (site / f"{name.replace('-', '_')}.py").write_text(module)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A directory on ``sys.path`` for the test's distributions (removed afterwards)."""
    path = tmp_path / "site"
    path.mkdir()
    sys.path.insert(0, str(path))
    importlib.invalidate_caches()
    try:
        yield path
    finally:
        sys.path.remove(str(path))
        for mod in [m for m in sys.modules if m.startswith("pesflow_demo")]:
            del sys.modules[mod]
        importlib.invalidate_caches()


@pytest.fixture
def plugin(site: Path) -> str:
    _distribution(
        site,
        "pesflow-demo-pair",
        "[pesflow.labelers]\npair-plugin = pesflow_demo_pair:PairLabeler\n",
        PLUGIN,
    )
    return "pair-plugin"


def test_an_entry_point_labeler_is_found_loaded_lazily_and_labels(plugin: str) -> None:
    assert plugin in available_labelers()
    assert "pesflow_demo_pair" not in sys.modules  # listed without importing it
    labeler = get_labeler(plugin, sigma=2.3)
    assert "pesflow_demo_pair" in sys.modules and labeler_class(plugin) is type(labeler)
    result = labeler.label(cu4())
    assert isinstance(result, LabelResult) and result.labeler == plugin
    assert result.stress is not None and result.code_version == "pair-1.0"


def test_an_entry_point_labeler_passes_the_shipped_contract(plugin: str) -> None:
    spec = ContractSpec(
        energy_per_atom=(-5.0, 5.0),
        fd_forces=(((0, 0), (2, 1)), 1e-4, 1e-5),
        fd_stress=((0, 3), 1e-5, 1e-5),
    )
    report = check_labeler(lambda _: get_labeler(plugin), cu4, spec=spec)
    report.raise_for_failures()
    assert set(report.skipped) == {"failure", "failure_once"}  # it has no way to fail


def test_a_campaign_config_validates_builds_and_labels_with_it(plugin: str, tmp_path: Path) -> None:
    from workflows.config import load_config
    from workflows.labeler import make_labeler

    from ..workflows._campaigns import write_config

    path = write_config(tmp_path / "c.yaml", labeler={"name": plugin, "settings": {"sigma": 2.2}})
    cfg = load_config(path, data_dir=tmp_path / "data")
    assert cfg.labeler.name == plugin
    labeler = make_labeler(cfg)
    assert labeler.name == plugin and labeler.settings.sigma == 2.2
    assert labeler.retry_policy.physics_keys == ()
    result = labeler.label(cu4(), workdir=tmp_path / "label-1")
    assert isinstance(result, LabelResult) and result.persisted


def test_make_labeler_says_when_the_plugin_is_gone(plugin: str, site: Path, tmp_path: Path) -> None:
    from workflows.config import ConfigError, load_config
    from workflows.labeler import make_labeler

    from ..workflows._campaigns import write_config

    cfg = load_config(write_config(tmp_path / "c.yaml", labeler={"name": plugin}), tmp_path / "d")
    sys.path.remove(str(site))  # uninstalled after the campaign was set up
    try:
        with pytest.raises(ConfigError, match=r"labeler\.name: unknown labeler 'pair-plugin'"):
            make_labeler(cfg)
    finally:
        sys.path.insert(0, str(site))


def test_a_config_with_an_unknown_setting_of_the_plugin_is_refused(
    plugin: str, tmp_path: Path
) -> None:
    from workflows.config import ConfigError, load_config

    from ..workflows._campaigns import write_config

    path = write_config(tmp_path / "c.yaml", labeler={"name": plugin, "settings": {"sigmaa": 2}})
    with pytest.raises(ConfigError, match=r"unknown setting 'sigmaa' .* did you mean 'sigma'"):
        load_config(path, data_dir=tmp_path / "data")


def test_a_broken_entry_point_names_the_distribution_and_entry_point(
    site: Path, tmp_path: Path
) -> None:
    _distribution(site, "pesflow-demo-broken", "[pesflow.labelers]\nbroken = pesflow_demo_gone:X\n")
    assert "broken" in available_labelers()
    with pytest.raises(LabelerLoadError) as err:
        labeler_class("broken")
    message = str(err.value)
    assert "distribution 'pesflow-demo-broken' 0.1" in message
    assert "entry point 'broken = pesflow_demo_gone:X'" in message
    assert "ModuleNotFoundError" in message
    get_labeler("emt").label(cu4())  # the other labelers are unaffected

    from workflows.config import ConfigError, load_config

    from ..workflows._campaigns import write_config

    path = write_config(tmp_path / "c.yaml", labeler={"name": "broken"})
    with pytest.raises(ConfigError, match="pesflow-demo-broken"):
        load_config(path, data_dir=tmp_path / "data")


def test_an_entry_point_must_name_a_labeler_of_that_name(site: Path) -> None:
    _distribution(
        site,
        "pesflow-demo-odd",
        "[pesflow.labelers]\nnot-a-class = pesflow_demo_odd:VALUE\nalias = pesflow_demo_odd:EMT\n",
        "from dft_adapters.mock import EMTLabeler as EMT\nVALUE = 3\n",
    )
    with pytest.raises(LabelerLoadError, match=r"is 3, not a dft_adapters\.Labeler subclass"):
        labeler_class("not-a-class")
    with pytest.raises(LabelerLoadError, match="whose name is 'emt'"):
        labeler_class("alias")


def test_a_name_claimed_twice_is_refused_naming_both(site: Path) -> None:
    _distribution(site, "pesflow-demo-rival", "[pesflow.labelers]\nemt = pesflow_demo_rival:EMT\n")
    with pytest.raises(LabelerLoadError, match="claimed more than once") as err:
        labeler_class("emt")
    assert "pesflow-demo-rival" in str(err.value) and "dft_adapters.mock:EMTLabeler" in str(
        err.value
    )


def test_the_builtins_are_declared_as_entry_points_of_pesflow() -> None:
    from importlib import metadata

    from dft_adapters.registry import _BUILTIN, ENTRY_POINT_GROUP

    declared = {
        ep.name: ep.value
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.name == "pesflow"
    }
    assert declared == _BUILTIN  # pyproject's table and the fallback table agree


@pytest.mark.slow
def test_pesflow_run_labels_with_an_entry_point_labeler(plugin: str, site: Path, tmp_path: Path):
    """``pesflow run`` in a fresh process that finds the plug-in's distribution through
    ``PYTHONPATH`` (as an installed one): one reduced iteration (~60 s, mostly the Prefect
    server), every label computed by the plug-in."""
    import json
    import os
    import subprocess

    from ..workflows._campaigns import write_config

    config = write_config(
        tmp_path / "c.yaml",
        labeler={"name": plugin, "settings": {"sigma": 2.3}},
        bootstrap={"n_structures": 4},
        validation={"n_structures": 4},
        training={"max_epochs": 5, "max_time_s": 10, "warm_start_epochs": 3, "patience": 5},
        exploration={
            "walkers": [{"temperature": 300, "steps": 20, "timestep": 2.0, "record_every": 5}]
        },
        convergence={"max_iterations": 1, "accurate_ratio": 0.6, "patience": 1},
    )
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    env.pop("PESFLOW_DATABASE_URL", None)
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "pesflow", "run", str(config), "--data-dir", str(data), "-q"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    outcomes = [json.loads(p.read_text()) for p in data.glob("labels/**/outcome.json")]
    assert len(outcomes) >= 8 and {o["labeler"] for o in outcomes} == {plugin}
