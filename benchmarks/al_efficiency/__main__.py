"""``python -m benchmarks.al_efficiency [CONFIG] [--out DIR] [--reanalyse DIR] [--score CKPT]``.

Exit codes: 0 done (targets met or not: the report says), 2 bad config.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from workflows.config import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "bench_cu_emt.yaml"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or reanalyse a report) and print its headline; returns the exit code."""
    from .config import load_bench_config
    from .run import reanalyse, run_benchmark, summary_lines

    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.al_efficiency",
        description="Active learning: one campaign per selection policy, side by side.",
    )
    ap.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="benchmark YAML")
    ap.add_argument("--out", default=None, help="report folder (default: <report_dir>/<stamp>)")
    ap.add_argument(
        "--reanalyse",
        metavar="REPORT_DIR",
        default=None,
        help="recompute curves, headline and plots of an existing report",
    )
    ap.add_argument(
        "--score",
        metavar="CHECKPOINT",
        default=None,
        help="score one committee checkpoint against the targets on the test set",
    )
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.score:
        import json

        from .score import score_checkpoint, score_lines

        try:
            bench, campaign = load_bench_config(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        report = score_checkpoint(args.score, bench, campaign)
        print("\n".join(score_lines(report)))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1, default=float))
        return 0
    if args.reanalyse:
        print("\n".join(summary_lines(reanalyse(args.reanalyse))))
        return 0
    try:
        bench, campaign = load_bench_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else Path(bench.report_dir) / f"{bench.name}-{stamp}"
    report = run_benchmark(bench, campaign, out, log=lambda m: print(m, flush=True))
    print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
