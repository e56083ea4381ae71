"""The ``mace`` model backend: K MACE models trained by MACE's own training code.

Each member is one run of MACE's trainer (``mace.cli.run_train.run``, the code behind
``mace_run_train``, called in this process with the process-wide state it changes restored
afterwards), on the campaign's labels written as extended XYZ with
pesflow's keys (``REF_energy``, ``REF_forces``, ``REF_stress`` Voigt eV/Å^3). Members differ by
their seed (a deep ensemble, like the native committee). Isolated-atom energies are MACE's
``--E0s=average`` (a least-squares fit over the training compositions). Warm start between
iterations: the previous member is MACE's ``--foundation_model`` with
``--multiheads_finetuning=False`` (plain fine-tuning of one's own model). The trained members
form a :class:`~mlip_core.model.LoopCommittee` of :class:`~mlip_core.mace_backend.MaceMember`.

Checkpoints: MACE saves whole pickled modules; a pesflow checkpoint of this backend holds each
member's bytes and :meth:`MaceBackend.from_payload` unpickles them (``weights_only=False``).
pesflow only loads a checkpoint after checking its sha256 against the database record, so only
files it wrote itself are unpickled; do not load MACE checkpoints from untrusted sources.

Options (``model: {backend: mace, ...}``): see :class:`MaceOptions`. ``training.max_time_s`` is
not applied (MACE has no time budget); ``training.max_epochs`` / ``warm_start_epochs``,
``batch_size``, ``learning_rate``, ``patience``, ``energy_weight`` and ``val_fraction`` are.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .backends import TrainRequest, check_dataclass_options
from .plugins import check_field_bounds

__all__ = ["MaceBackend", "MaceOptions", "MaceTrainingError"]

_TORCH_FX_LOCK = threading.RLock()
"""Unpickling or building a MACE model runs e3nn's code generation through ``torch.fx``, whose
tracer keeps its state in a module global (``CURRENT_PATCHER``): two threads doing it at once
(walkers loading the committee in a thread pool) corrupt it. Every MACE build and load here
holds this lock."""


class MaceTrainingError(RuntimeError):
    """MACE's trainer failed (the message ends with its last output lines)."""


@dataclass
class MaceOptions:
    """Hyper-parameters passed to MACE's trainer (its own names; defaults: a small model).

    Attributes:
        num_channels: feature channels (MACE ``--num_channels``).
        max_L: highest irrep of the hidden features (0: invariant, fast; 1-2: equivariant).
        num_interactions: message-passing layers.
        correlation: body order of the product basis minus one.
        max_ell: highest spherical harmonic of the edge features.
        num_radial_basis: Bessel radial functions.
        forces_weight: MACE's force loss weight (``energy_weight`` comes from ``training``).
        stress_weight: stress loss weight (applied when the labels carry stress and
            ``training.stress_weight`` is not 0).
        default_dtype: ``float64`` (MD-grade forces) or ``float32``.
    """

    num_channels: int = field(default=16, metadata={"ge": 1, "le": 1024})
    max_L: int = field(default=0, metadata={"ge": 0, "le": 3})
    num_interactions: int = field(default=2, metadata={"ge": 1, "le": 8})
    correlation: int = field(default=2, metadata={"ge": 1, "le": 4})
    max_ell: int = field(default=2, metadata={"ge": 1, "le": 4})
    num_radial_basis: int = field(default=8, metadata={"ge": 1, "le": 64})
    forces_weight: float = field(default=100.0, metadata={"ge": 0})
    stress_weight: float = field(default=1.0, metadata={"ge": 0})
    default_dtype: Literal["float64", "float32"] = "float64"

    def __post_init__(self) -> None:
        check_field_bounds(self)
        if self.default_dtype not in ("float64", "float32"):
            raise ValueError(
                f"default_dtype must be float64 or float32, got {self.default_dtype!r}"
            )


@dataclass
class MaceResult:
    """Outcome of :meth:`MaceBackend.train` (the fields of a ``TrainingResult`` callers use)."""

    model: Any
    epochs: int
    wall_time_s: float
    stop_reason: str
    time_capped: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


def _write(path: Path, frames: list[Any]) -> None:
    import ase.io

    out = []
    for a in frames:
        b = a.copy()  # no calculator: only the REF_* keys are labels
        b.constraints = []  # labels are computed on the unconstrained structure
        out.append(b)
    ase.io.write(path, out, format="extxyz")


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Training and validation indices: at least one of each (both all when n == 1)."""
    if n < 2:
        return list(range(n)), list(range(n))
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(n - 1, max(1, round(fraction * n)))
    return sorted(order[n_val:]), sorted(order[:n_val])


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Undo what MACE's trainer changes for the whole process: torch's default dtype and
    global RNG, numpy's global RNG, the root logger's handlers and level, and the environment
    variable ``import mace`` sets (see :func:`mlip_core.mace_backend._import_mace`)."""
    import torch

    dtype, rng, np_rng = torch.get_default_dtype(), torch.get_rng_state(), np.random.get_state()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    env = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_rng_state(rng)
        np.random.set_state(np_rng)
        for h in root.handlers:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)
        if env is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = env


def _train_in_process(argv: list[str], wd: Path) -> None:
    """One member: MACE's own ``run_train`` with ``argv`` (in this process: one import of
    MACE serves every member and iteration); its log is in ``wd/logs``, what it prints in
    ``wd/mace_run_train.out`` (not on the terminal)."""
    from mace.cli.run_train import run
    from mace.tools import build_default_arg_parser

    from . import mace_backend  # noqa: F401  (imports mace the safe way first)

    args = build_default_arg_parser().parse_args(argv)
    with (
        _TORCH_FX_LOCK,
        _process_state_kept(),
        open(wd / "mace_run_train.out", "w") as out,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(out),
    ):
        try:
            run(args)
        except SystemExit as exc:  # argparse / MACE's own exits
            raise MaceTrainingError(
                f"mace_run_train exited ({exc.code}); see {wd / 'logs'}"
            ) from exc
        except Exception as exc:
            raise MaceTrainingError(
                f"mace_run_train failed: {type(exc).__name__}: {exc}; see {wd / 'logs'}"
            ) from exc


@dataclass
class MaceBackend:
    """K MACE members, each trained by ``mace.cli.run_train``."""

    name: str = "mace"
    options_cls: type = field(default=MaceOptions, repr=False)

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options checked against :class:`MaceOptions`; ``ValueError`` also when mace-torch is
        not installed here (a config naming this backend cannot run)."""
        import importlib.util

        if importlib.util.find_spec("mace") is None:
            raise ValueError("model backend 'mace' needs mace-torch: pip install 'pesflow[mace]'")
        return check_dataclass_options(MaceOptions, options, self.name)

    def _args(
        self, req: TrainRequest, opts: dict[str, Any], k: int, wd: Path, sizes: tuple[int, int]
    ) -> list[str]:
        import torch

        tc = req.training
        n_train, n_val = sizes
        # training.stress_weight 0 (set, or auto without stress labels) switches the term off;
        # otherwise MACE's own stress_weight option weighs it (MACE normalises its loss itself)
        stress = tc.stress_weight > 0 and any("REF_stress" in a.info for a in req.structures)
        seed = (int(tc.seed) + 7919 * k) % 2**32  # distinct per member, in numpy's range
        args = [
            f"--name=member{k}",
            f"--seed={seed}",
            f"--work_dir={wd}",
            f"--train_file={wd.parent / 'train.xyz'}",
            f"--valid_file={wd.parent / 'valid.xyz'}",
            "--model=MACE",
            f"--r_max={req.cutoff}",
            f"--num_channels={opts['num_channels']}",
            f"--max_L={opts['max_L']}",
            f"--num_interactions={opts['num_interactions']}",
            f"--correlation={opts['correlation']}",
            f"--max_ell={opts['max_ell']}",
            f"--num_radial_basis={opts['num_radial_basis']}",
            "--E0s=average",
            "--energy_key=REF_energy",
            "--forces_key=REF_forces",
            "--stress_key=REF_stress",
            f"--energy_weight={tc.energy_weight}",
            f"--forces_weight={opts['forces_weight']}",
            f"--stress_weight={opts['stress_weight'] if stress else 0.0}",
            f"--max_num_epochs={tc.max_epochs}",
            f"--patience={tc.patience}",
            # MACE refuses a batch larger than its training set (tiny first iterations)
            f"--batch_size={max(1, min(tc.batch_size, n_train))}",
            f"--valid_batch_size={max(1, min(max(tc.batch_size, 4), n_val))}",
            f"--lr={tc.learning_rate}",
            f"--default_dtype={opts['default_dtype']}",
            "--device=cpu",
            "--eval_interval=1",
            "--error_table=PerAtomRMSE",
        ]
        if stress:
            args.append("--compute_stress=True")
            args.append("--loss=weighted")
        if req.warm is not None:
            from .repulsion import unwrap

            warm = unwrap(req.warm)[0]  # fine-tune the learned part of a wrapped committee
            member = warm.members[k] if hasattr(warm, "members") else None
            if member is None or not hasattr(member, "model"):
                raise MaceTrainingError("warm start needs the previous MACE committee")
            prev = wd / "previous.model"
            with _TORCH_FX_LOCK:
                torch.save(member.model, prev)
            args += [f"--foundation_model={prev}", "--multiheads_finetuning=False"]
        return args

    def train(self, request: TrainRequest) -> MaceResult:
        """Train ``request.n_members`` MACE models; returns a :class:`MaceResult`.

        Raises:
            MaceTrainingError: a member's training failed or produced no model file.
        """
        import torch

        from . import mace_backend
        from .model import LoopCommittee

        opts = self.check_options(request.options)
        if request.warm is not None and request.warm.n_members != request.n_members:
            raise MaceTrainingError(
                f"warm start from {request.warm.n_members} members into {request.n_members}"
            )
        t0 = time.perf_counter()
        root = Path(request.workdir or tempfile.mkdtemp(prefix="pesflow-mace-"))
        root.mkdir(parents=True, exist_ok=True)
        tr, va = _split(
            len(request.structures), request.training.val_fraction, request.training.seed
        )
        _write(root / "train.xyz", [request.structures[i] for i in tr])
        _write(root / "valid.xyz", [request.structures[i] for i in va])
        members = []
        for k in range(request.n_members):
            wd = root / f"member{k}"
            wd.mkdir(exist_ok=True)
            _train_in_process(self._args(request, opts, k, wd, (len(tr), len(va))), wd)
            files = [f for f in sorted(wd.glob(f"member{k}*.model")) if "compiled" not in f.name]
            if not files:
                raise MaceTrainingError(f"mace_run_train for member {k} saved no model in {wd}")
            with _TORCH_FX_LOCK:
                model = torch.load(files[0], map_location="cpu", weights_only=False)
            members.append(mace_backend.MaceMember(model.eval()))
            if request.callback is not None:
                request.callback({"member": float(k)})
        committee = LoopCommittee(members).eval()
        epochs = int(request.training.max_epochs)
        return MaceResult(
            model=committee,
            epochs=epochs,
            wall_time_s=time.perf_counter() - t0,
            stop_reason=f"mace_run_train: up to {epochs} epochs per member "
            f"(patience {request.training.patience})",
        )

    def to_payload(self, model: Any) -> dict[str, Any]:
        import torch

        blobs = []
        with _TORCH_FX_LOCK:
            for m in model.members:
                buf = io.BytesIO()
                torch.save(m.model, buf)
                blobs.append(buf.getvalue())
        return {"members": blobs, "dtype": str(model.dtype).removeprefix("torch.")}

    def from_payload(self, payload: Mapping[str, Any]) -> Any:
        import torch

        from . import mace_backend
        from .model import LoopCommittee

        with _TORCH_FX_LOCK:
            members = [
                mace_backend.MaceMember(
                    torch.load(io.BytesIO(b), map_location="cpu", weights_only=False).eval()
                )
                for b in payload["members"]
            ]
        return LoopCommittee(members).eval()
