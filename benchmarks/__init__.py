"""pesflow's benchmarks: figures and ratios measured side by side in one run (``make bench``,
``make bench-science``). Not part of the wheel (``pyproject.toml`` packages.find includes only
the product packages); run from a checkout as ``python -m benchmarks.<name>``:

- :mod:`benchmarks.mlip_core`: committee MD step time (batched vs a loop, float32 vs float64);
- :mod:`benchmarks.dft_adapters`: label wall time per backend;
- :mod:`benchmarks.database`: insert / training-set query / export, SQLite vs PostgreSQL;
- :mod:`benchmarks.workflows`: orchestration overhead of the demo campaign through Prefect;
- :mod:`benchmarks.cluster`: label throughput through the task runners;
- :mod:`benchmarks.api`: campaign page server time at 200 iterations / 100k structures;
- :mod:`benchmarks.al_efficiency`: does active learning save DFT labels (the product's own
  campaign loop, one campaign per selection policy).

The product packages never import this package (nor matplotlib, which is in the ``bench``
extra).
"""
