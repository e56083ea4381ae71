"""Model backends: how a committee is built, trained, saved and loaded.

An extension point: the :class:`ModelBackend` protocol and :data:`BACKENDS`, a
:class:`~mlip_core.plugins.Registry` of the built-ins (``native``: the stacked committee of
:mod:`mlip_core.model`; ``mace``: K MACE models trained by MACE's own ``mace_run_train``,
:mod:`mlip_core.mace_training`; ``gap``: K GAP fits by QUIP's ``gap_fit`` whose predictive
variance is the uncertainty, :mod:`mlip_core.gap_backend`) and of out-of-tree backends declared under the entry-point
group ``pesflow.models``. A campaign chooses one with ``model: {backend: NAME, ...}``; every
key of that section other than ``backend``, ``n_members`` and ``cutoff`` is a hyper-parameter
checked by :meth:`ModelBackend.check_options`. A checkpoint records its backend
(:mod:`mlip_core.checkpoint`), so it loads without the config. Every backend must pass
:func:`mlip_core.contract.check_model_backend`.

To add one: a class with the methods below, then::

    [project.entry-points."pesflow.models"]
    my-model = "my_package.backend:MyBackend"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .plugins import Registry, check_field_bounds, dataclass_options

__all__ = [
    "BACKENDS",
    "ModelBackend",
    "NativeBackend",
    "NativeOptions",
    "TrainRequest",
    "check_dataclass_options",
    "get_backend",
    "residual_labels",
    "train_with_repulsion",
]


@dataclass
class TrainRequest:
    """Everything a backend needs to train a committee.

    Attributes:
        structures: labelled ``ase.Atoms`` (``REF_energy`` eV, ``REF_forces`` (N, 3) eV/Å,
            optional ``REF_stress`` Voigt eV/Å^3; :mod:`mlip_core.labelled`).
        species: atomic numbers the committee must know.
        n_members: committee size K.
        cutoff: radial cutoff, Å.
        options: the backend's hyper-parameters (as returned by ``check_options``).
        training: :class:`mlip_core.training.TrainingConfig` (epochs, learning rate, batch
            size, patience, weights, seed, time budget); a backend uses what applies to it.
        warm: the previous committee of the same backend to fine-tune, or ``None``.
        workdir: a directory the backend may write scratch files to.
        callback: called once per epoch with a dict of figures (progress bars).
    """

    structures: list[Any]
    species: list[int]
    n_members: int
    cutoff: float
    options: dict[str, Any]
    training: Any
    warm: Any = None
    workdir: Path | None = None
    callback: Callable[[dict[str, float]], None] | None = None


@runtime_checkable
class ModelBackend(Protocol):
    """A committee architecture and its training code.

    ``train`` returns an object with ``model`` (a :class:`mlip_core.model.CommitteeModel`),
    ``epochs``, ``wall_time_s``, ``stop_reason`` and ``time_capped`` (like
    :class:`mlip_core.training.TrainingResult`). ``to_payload`` gives plain containers
    (dicts, lists, str, numbers, bytes, tensors) that ``torch.save`` writes and
    ``from_payload`` rebuilds the model from; the same model must give the same payload.
    """

    name: str
    options_cls: type  # a dataclass of the hyper-parameters; field metadata may give bounds
    # (``ge``, ``gt``, ``le``, ``lt``) that the API's JSON Schema states
    # optional ``own_uncertainty: str``: the unit of an uncertainty the model reports itself
    # (CommitteeOutput.uncertainty), judged instead of the members' force deviation

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validated hyper-parameters with defaults filled in; ``ValueError`` names a bad key."""
        ...

    def train(self, request: TrainRequest) -> Any:
        """Train (or fine-tune ``request.warm``) a committee of ``request.n_members``."""
        ...

    def to_payload(self, model: Any) -> dict[str, Any]:
        """The model as plain containers for a checkpoint."""
        ...

    def from_payload(self, payload: Mapping[str, Any]) -> Any:
        """The model a payload describes (eval mode, CPU)."""
        ...


def check_dataclass_options(cls: type, options: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """Options checked against the fields of dataclass ``cls``, as a dict with the defaults
    filled in (:func:`mlip_core.plugins.dataclass_options`; ``ValueError`` names a bad key)."""
    obj = dataclass_options(cls, options, f"model backend {backend!r}")
    return {f.name: getattr(obj, f.name) for f in fields(cls)}


@dataclass
class NativeOptions:
    """Hyper-parameters of the native committee (:class:`mlip_core.model.ModelConfig`)."""

    channels: int = field(default=32, metadata={"ge": 1})
    n_layers: int = field(default=1, metadata={"ge": 1})
    n_basis: int = field(default=8, metadata={"ge": 1})
    readout_hidden: int = field(default=32, metadata={"ge": 1})

    def __post_init__(self) -> None:
        check_field_bounds(self)


@dataclass
class NativeBackend:
    """The stacked native committee trained by :func:`mlip_core.training.train_committee`."""

    name: str = "native"
    options_cls: type = field(default=NativeOptions, repr=False)

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return check_dataclass_options(NativeOptions, options, self.name)

    def train(self, request: TrainRequest) -> Any:
        from .model import ModelConfig
        from .training import train_committee

        opts = self.check_options(request.options)
        mcfg = ModelConfig(
            species=list(request.species),
            cutoff=request.cutoff,
            n_members=request.n_members,
            **opts,
        )
        return train_committee(
            request.structures,
            request.training,
            model=request.warm,
            model_config=mcfg,
            n_members=request.n_members,
            callback=request.callback,
        )

    def to_payload(self, model: Any) -> dict[str, Any]:
        return {
            "config": model.config.to_dict(),
            "dtype": str(model.dtype).removeprefix("torch."),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        }

    def from_payload(self, payload: Mapping[str, Any]) -> Any:
        import torch

        from .model import CommitteePotential, ModelConfig

        model = CommitteePotential(ModelConfig(**payload["config"])).to(
            getattr(torch, payload["dtype"])
        )
        model.load_state_dict(payload["state_dict"])
        return model.eval()


BACKENDS: Registry[ModelBackend] = Registry(
    "model backend",
    "pesflow.models",
    {
        "native": "mlip_core.backends:NativeBackend",
        "mace": "mlip_core.mace_training:MaceBackend",
        "gap": "mlip_core.gap_backend:GapBackend",
    },
    ModelBackend,
)


def get_backend(name: str) -> ModelBackend:
    """The model backend called ``name``; :class:`~mlip_core.plugins.PluginError` if unknown."""
    return BACKENDS.get(name)


def residual_labels(structures: list[Any], repulsion: Any) -> list[Any]:
    """Copies of labelled structures whose ``REF_energy`` / ``REF_forces`` / ``REF_stress`` are
    the reference minus the repulsion (:class:`mlip_core.repulsion.ZBLRepulsion`): what the
    learned part must predict. A structure without ``REF_stress`` gets none; the inputs are
    not changed.

    Raises:
        ValueError: missing or non-finite labels (as :func:`mlip_core.labelled.read_labels`),
            a ``REF_stress`` on a structure without a cell volume, or an element the repulsion
            does not know (each naming the structure or element).
    """
    from ase.stress import full_3x3_to_voigt_6_stress

    from .labelled import REF_ENERGY, REF_FORCES, REF_STRESS, read_labels
    from .neighbors import build_graph

    index = {z: i for i, z in enumerate(repulsion.species)}
    out = []
    for i, atoms in enumerate(structures):
        energy, forces, stress = read_labels(atoms, i)
        graph = build_graph(atoms, repulsion.max_radius, index)
        if stress is not None and not float(graph.volume[0]) > 0:
            raise ValueError(f"training structure {i} has REF_stress but no periodic cell volume")
        base = repulsion.predict(graph, compute_forces=True, compute_stress=stress is not None)
        copy = atoms.copy()
        copy.calc = None
        copy.info[REF_ENERGY] = energy - float(base.energy[0, 0])
        copy.arrays[REF_FORCES] = forces - base.forces[0].numpy()
        if stress is not None:
            stress_base = full_3x3_to_voigt_6_stress(base.stress[0, 0].numpy())  # type: ignore[index]
            copy.info[REF_STRESS] = stress - stress_base
        out.append(copy)
    return out


def train_with_repulsion(backend: ModelBackend, request: TrainRequest, repulsion: Any) -> Any:
    """Train ``backend``'s committee on the residual of the repulsion and wrap the result.

    With ``repulsion`` (a :class:`mlip_core.repulsion.ZBLRepulsion` of ``request.species``):
    the labels become the reference minus the repulsion (:func:`residual_labels`), a wrapped
    warm-start model (``request.warm``) is unwrapped to its learned part, ``backend.train``
    trains the learned part, and the result's ``model`` is the learned committee plus the
    repulsion (:class:`mlip_core.repulsion.WithRepulsion`). Total = learned + repulsion and
    labels = residual + repulsion, so the errors of the wrapped model on the reference labels
    equal those of the learned model on the residual labels (up to rounding): validation
    figures are errors of the total. With ``None``: the bare learned model, trained on the
    reference labels (a wrapped warm start is unwrapped too).

    Returns the backend's result object with ``model`` replaced.
    """
    import dataclasses

    from .repulsion import unwrap, with_repulsion

    warm = None if request.warm is None else unwrap(request.warm)[0]
    if repulsion is not None:
        structures = residual_labels(list(request.structures), repulsion)
    else:
        structures = list(request.structures)
    result = backend.train(dataclasses.replace(request, structures=structures, warm=warm))
    model = with_repulsion(result.model, repulsion)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.replace(result, model=model)
    result.model = model
    return result
