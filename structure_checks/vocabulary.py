"""The words every package shares: the data keys of a labelled structure, the ways a label can
fail, the states a label goes through. One definition each; ``dft_adapters`` (the failure
kinds of its labelers), ``database`` (the values it stores and checks), ``mlip_core`` (the keys
it trains on) and the API (the values it filters by) use these.
"""

from __future__ import annotations

__all__ = [
    "FAILURE_KINDS",
    "LABELER_FAILURE_KINDS",
    "LABEL_STATUSES",
    "OTHER_FAILURE",
    "REF_ENERGY",
    "REF_FORCES",
    "REF_KEYS",
    "REF_STRESS",
]

REF_ENERGY = "REF_energy"
"""``atoms.info`` key of a labelled structure's reference energy (eV)."""
REF_FORCES = "REF_forces"
"""``atoms.arrays`` key of its reference forces ((N, 3), eV/Å)."""
REF_STRESS = "REF_stress"
"""``atoms.info`` key of its reference stress (Voigt xx yy zz yz xz xy, eV/Å^3), when known."""
REF_KEYS = (REF_ENERGY, REF_FORCES, REF_STRESS)
"""The exported label keys (never the bare ``energy`` / ``forces``, which ASE turns into a
calculator), as MACE (``--energy_key`` ...) and NequIP (``key_mapping``) read them."""

LABELER_FAILURE_KINDS = (
    "scf_unconverged",
    "crashed",
    "timeout",
    "invalid_input",
    "missing_executable",
    "unparsable_output",
)
"""The failures a labeler reports (``dft_adapters.FailureKind`` values)."""
OTHER_FAILURE = "other"
"""The failure kind stored for an error that is not a labeler's typed failure."""
FAILURE_KINDS = (*LABELER_FAILURE_KINDS, OTHER_FAILURE)
"""Every failure kind a stored label may carry, in display order."""

LABEL_STATUSES = ("pending", "running", "done", "failed")
"""A label's states: requested, claimed by a labeller, with a result, failed for good."""
