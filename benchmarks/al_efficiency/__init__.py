"""Does active learning save DFT? ``python -m benchmarks.al_efficiency CONFIG``.

Side by side in one run, from the same initial structures, bootstrap and validation sets and
with the same exploration and label budget per iteration, each **arm** — a selection policy of
the product (``selection.strategy``: ``fps``, ``max-first``, ``random`` by default) — runs a
whole campaign **through the product's own loop** (:func:`workflows.steps.run_campaign`,
in-process, on a temporary SQLite store in a temporary data directory): the product's train,
explore, select and label steps, with its member seeds, its exclusion of already-selected
frames, its trust window and its handling of cut and crashed walkers. Each arm's campaign is
the benchmark's campaign (``campaign`` + ``campaign_overrides``) with only the ``selection``
section changed; arms of one benchmark seed share the campaign ``seed``, so they train the same
first committee.

After each campaign, every committee it trained (one per iteration, read back from the store's
model rows and checkpoints) is scored on a held-out test set labelled by the same oracle,
built by oracle-driven MD of bulk at several temperatures, a vacancy, strained cells and a
surface (never trained on, never explored); a validation set of the same kinds fits the
calibration of the uncertainty. Also reported per arm: the oracle calls the campaign made
(every label: bootstrap, validation, picks) vs the MD steps its committee-driven exploration
ran, i.e. what oracle-driven MD of the same length would have cost; the product's per-iteration
figures (explored, candidate and failed frames, cut and failed walkers, picks, step times);
property checks (lattice constant, bulk modulus, elastic constants, vacancy formation energy)
of the final committees against the oracle.

Outputs ``report.json`` (every number) and PNG plots in the report folder (see
:func:`~benchmarks.al_efficiency.run.run_benchmark`).

Differences from the former benchmark (which re-implemented the loop, ``workflows.al_benchmark``):

- the arm ``al`` is now named by its strategy (``fps``); the ``random`` arm is the product's
  random selector, uniform among the committee's **candidates**; the former baseline that picked
  uniformly among *all* explored frames (no uncertainty at all) needed a loop of its own and is
  dropped;
- each arm trains its own first committee (identical across arms: same seed, same labels)
  instead of sharing one trained outside the loop;
- the campaign's ``convergence`` section is replaced: every arm runs exactly ``iterations + 1``
  product iterations (the product labels the last iteration's picks before it stops; those
  labels are counted as oracle calls, ``oracle_calls_unused``, but never trained on);
- ``labels_per_iteration`` is gone: set ``campaign_overrides.selection.max_per_iteration``.
"""

from __future__ import annotations

from .analysis import calibration_curve, headline, labels_to_reach, mean_curve
from .arm import run_arm
from .config import ARMS, BenchConfig, arm_config, load_bench_config
from .run import reanalyse, run_benchmark, summary_lines
from .testset import build_test_set, evaluate

__all__ = [
    "ARMS",
    "BenchConfig",
    "arm_config",
    "build_test_set",
    "calibration_curve",
    "evaluate",
    "headline",
    "labels_to_reach",
    "load_bench_config",
    "mean_curve",
    "reanalyse",
    "run_arm",
    "run_benchmark",
    "summary_lines",
]
