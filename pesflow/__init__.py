"""pesflow: active-learning workflows for machine-learned interatomic potentials.

This package is the composition root of the command line: :mod:`pesflow.cli` assembles the
``pesflow`` typer app from the commands of :mod:`workflows` (campaigns, deployments, database)
and of :mod:`api` (``serve``, ``token``). Nothing imports it but the entry point.
"""
