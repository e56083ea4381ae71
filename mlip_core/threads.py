"""Torch CPU threads, set by pesflow rather than inherited from the environment.

Training and evaluation results depend on the number of intra-op threads torch uses (parallel
reductions sum in a different order), and on a loaded machine more threads can be much slower
on pesflow's small tensors (2 threads were 10-30x slower than 1 on a busy 2-core box). So pesflow
sets the count itself with :func:`configure_threads` (the workflows do it once per worker
process from a setting, default 1).

- The setting is **process-global**: it applies to every thread of the process and to all
  later torch work until changed again; it is not scoped to a call.
- ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) must not be relied upon: it only sets torch's
  initial count when torch starts, is inherited from whatever shell or scheduler started the
  process, and is overridden by :func:`configure_threads`.
- Determinism (bit-identical weights from :func:`mlip_core.training.train_committee` for the
  same data, config and seed) holds for a fixed thread count, on the same machine type and
  library versions; a different count may change the last bits and, through training, more.
- Only the intra-op pool is set; torch's inter-op pool (used by TorchScript forks) does not
  affect pesflow's results and can only be sized before torch's first parallel work.
"""

from __future__ import annotations

import operator

import torch

__all__ = ["configure_threads", "current_threads"]


def current_threads() -> int:
    """Torch's current intra-op thread count in this process."""
    return int(torch.get_num_threads())


def configure_threads(n: int) -> int:
    """Set torch's intra-op CPU threads for this whole process (``torch.set_num_threads``).

    Args:
        n: number of threads, >= 1 (pesflow's default is 1 per worker process).

    Returns:
        The previous thread count (pass it back to restore the old setting).

    Raises:
        TypeError: ``n`` is not an integer (numpy integers are accepted, bools refused).
        ValueError: ``n`` < 1.
    """
    if isinstance(n, bool):
        raise TypeError("thread count must be an int, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"thread count must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    previous = current_threads()
    if n != previous:
        torch.set_num_threads(n)
    return previous
