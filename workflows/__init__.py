"""pesflow: workflows — the campaign config, the resumable active-learning loop, its Prefect
flow and the ``pesflow`` CLI.

The only package that imports Prefect, and only in :mod:`workflows.flows` (imported by the CLI
after :func:`workflows.settings.configure_prefect_env`); :mod:`workflows.steps` holds the plain,
database-idempotent step functions the flow wraps.
"""
