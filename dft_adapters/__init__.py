"""pesflow: dft_adapters — the DFT oracle of the active-learning loop.

One :class:`Labeler` interface (``Atoms`` in, :class:`LabelResult` or typed
:class:`LabelFailure` out), backends found by name through :func:`get_labeler`:
``emt`` / ``lj`` / ``morse`` (mocks with fault injection), ``espresso`` (Quantum ESPRESSO pw.x),
``pyscf`` (in-process), ``vasp`` (pymatgen input sets, vasprun.xml) and ``cp2k``, plus any
labeler an installed distribution declares in the ``pesflow.labelers`` entry-point group.
File-based codes share one sequence (:class:`FileLabeler`: write files -> run -> classify ->
read); :mod:`dft_adapters.contract` is the contract every labeler runs and
:mod:`dft_adapters.testing` the test doubles (fake process runner, run counting).
With a ``workdir``, ``label()`` is exactly-once: the outcome is written to
``workdir/outcome.json`` and re-read by later calls (:mod:`dft_adapters.outcome`).
No Prefect, no SQL. Heavy backends are imported on first use.
"""

from .base import Labeler, RawLabel
from .execution import Executor, ProcessResult, ProcessRunner, SubprocessRunner
from .mock import FaultInjection
from .outcome import (
    OutcomeCorruptError,
    OutcomeMismatchError,
    discard_outcome,
    input_fingerprint,
    read_outcome,
)
from .preflight import PreflightLimits, check_geometry
from .registry import (
    ENTRY_POINT_GROUP,
    LabelerLoadError,
    UnknownLabelerError,
    available_labelers,
    get_labeler,
    labeler_class,
    register,
)
from .results import (
    AttemptRecord,
    FailureKind,
    LabelError,
    LabelFailure,
    LabelOutcome,
    LabelResult,
    outcome_from_dict,
)
from .retry import RetryPolicy
from .settings import Settings, canonical_json, settings_hash
from .template import FileLabeler, FileRun

__all__ = [
    "ENTRY_POINT_GROUP",
    "AttemptRecord",
    "Executor",
    "FailureKind",
    "FaultInjection",
    "FileLabeler",
    "FileRun",
    "LabelError",
    "LabelFailure",
    "LabelOutcome",
    "LabelResult",
    "Labeler",
    "LabelerLoadError",
    "OutcomeCorruptError",
    "OutcomeMismatchError",
    "PreflightLimits",
    "ProcessResult",
    "ProcessRunner",
    "RawLabel",
    "RetryPolicy",
    "Settings",
    "SubprocessRunner",
    "UnknownLabelerError",
    "available_labelers",
    "canonical_json",
    "check_geometry",
    "discard_outcome",
    "get_labeler",
    "input_fingerprint",
    "labeler_class",
    "outcome_from_dict",
    "read_outcome",
    "register",
    "settings_hash",
]
