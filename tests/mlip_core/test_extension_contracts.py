"""The contracts shipped in :mod:`mlip_core.contract`, run over every registered implementation
of each extension kind (model backends, explorers, selectors; labelers: tests/dft_adapters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlip_core.backends import BACKENDS, get_backend
from mlip_core.contract import check_explorer, check_model_backend, check_selector
from mlip_core.explorers import EXPLORERS, get_explorer
from mlip_core.plugins import PluginError
from mlip_core.selectors import SELECTORS, get_selector

SMALL_OPTIONS = {
    "native": {"channels": 8},
    "mace": {"num_channels": 8},
    "gap": {"l_max": 3, "n_max": 4, "n_sparse": 30, "n_sparse_2b": 10},
}
SMALL_PARAMS = {
    "md": {"steps": 20, "record_every": 5, "timestep": 1.0},
    "neb": {"n_images": 3, "steps": 10, "record_every": 5, "interpolation": "linear"},
    "udd": {"steps": 20, "record_every": 5, "timestep": 1.0},
    "lammps": {"steps": 20, "record_every": 5, "timestep": 1.0},
}


@pytest.mark.parametrize("name", SELECTORS.names())
def test_selector_contract(name: str) -> None:
    check_selector(get_selector(name))


@pytest.mark.parametrize("name", EXPLORERS.names())
def test_explorer_contract(name: str) -> None:
    if name == "lammps":
        from .._codes import require_lammps

        require_lammps()  # skip on a user's machine without the lammps module; FAIL in CI
    check_explorer(get_explorer(name), SMALL_PARAMS.get(name, {}))


@pytest.mark.parametrize("name", BACKENDS.names())
def test_model_backend_contract(name: str, tmp_path: Path) -> None:
    if name == "gap":
        from .._codes import require_quippy

        require_quippy()  # skip on a user's machine without quippy-ase; FAIL in CI
    check_model_backend(get_backend(name), tmp_path, SMALL_OPTIONS.get(name, {}), epochs=1)


def test_every_builtin_is_registered_and_unknown_names_list_the_known() -> None:
    assert {"native", "mace", "gap"} <= set(BACKENDS.names())
    assert {"md", "neb", "udd", "lammps"} <= set(EXPLORERS.names())
    assert {"fps", "max-first", "random"} <= set(SELECTORS.names())
    with pytest.raises(
        PluginError, match="unknown explorer 'nope'; available: lammps, md, neb, udd"
    ):
        get_explorer("nope")


def test_an_implementation_that_breaks_a_rule_fails_its_contract() -> None:
    """The checks can fail: a selector that returns non-candidates, an explorer whose frames
    carry no uncertainty."""
    import numpy as np

    class Greedy:
        name = "greedy-bad"
        needs: frozenset[str] = frozenset()

        def select(
            self, candidates, deviations, max_n, *, rng, descriptors, min_distance, atoms=None
        ):
            return np.arange(min(max_n, deviations.size), dtype=np.intp)  # ignores candidates

    with pytest.raises(AssertionError, match="non-candidate"):
        check_selector(Greedy())

    md = get_explorer("md")

    class Silent:
        name = "silent"
        params_cls = md.params_cls
        origin_keys = ()

        def starts(self, params, n):
            return [0]

        def temperature(self, params):
            return 300.0

        def explore(self, structures, calculator, trust, params, seed):
            res = md.explore(structures, calculator, trust, params, seed)
            for f in res.frames:
                del f.info["uncertainty"]
            return res

    with pytest.raises(AssertionError, match="lacks"):
        check_explorer(Silent(), SMALL_PARAMS["md"])


def test_the_documented_selector_example_passes_its_contract() -> None:
    """docs/architecture.md's one-file selector (ordering + the shared near-duplicate rule)."""
    import re

    text = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    code = re.search(r"```python\n(import numpy as np\nfrom mlip_core.selectors.*?)```", text, re.S)
    assert code, "the selector example is gone from docs/architecture.md"
    namespace: dict = {}
    exec(compile(code.group(1), "architecture.md", "exec"), namespace)  # our own docs
    check_selector(namespace["Newest"]())


def test_parameters_are_type_checked_and_a_protocol_miss_is_named() -> None:
    from mlip_core.explorers import make_params

    with pytest.raises(ValueError, match="steps must be an integer, got 'three'"):
        make_params(get_explorer("neb"), {"steps": "three"})

    class Half:
        name = "half"

    with pytest.raises(PluginError, match=r"lacks .*origin_keys.*params_cls"):
        EXPLORERS.register("half", Half())
