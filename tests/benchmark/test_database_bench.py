"""Smoke test of the benchmark script (tiny size): it runs and prints the side-by-side table."""

from __future__ import annotations

from benchmarks import database as bench


def test_bench_prints_table(capsys):
    assert bench.main(["-n", "20"]) == 0
    out = capsys.readouterr().out
    for step in ("insert 20 labelled", "query 20 training set", "export 20 to extxyz"):
        assert step in out
    assert "sqlite" in out
