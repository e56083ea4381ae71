"""The campaign's labeler, built from its config and the operator's execution profile."""

from __future__ import annotations

from typing import Any

from .config import CampaignConfig, ConfigError

__all__ = ["make_labeler"]


def make_labeler(cfg: CampaignConfig):
    """Build the configured labeler through the registry (:func:`dft_adapters.get_labeler`:
    built-ins and ``pesflow.labelers`` entry points), with injected faults and retry policy.
    Its executor (command, launcher, env, scratch, timeout) and operator-only settings
    (server paths such as ``pseudo_dir``) come from the execution section — the operator's
    profile, resolved with this process's settings (:func:`workflows.profiles.resolve_execution`)
    — under ``labelers.<name>``. Raises :class:`ConfigError` when a setting is given both by the
    config and by the execution section, or the labeler is not available here (unknown name,
    broken entry point)."""
    from dft_adapters import Executor, RetryPolicy, get_labeler
    from dft_adapters.registry import LabelerLoadError, UnknownLabelerError

    from .profiles import resolve_execution

    lc = cfg.labeler
    kwargs: dict[str, Any] = dict(lc.settings)
    run = resolve_execution(cfg.execution).labelers.get(lc.name)
    if run is not None:
        both = sorted(set(run.settings) & set(kwargs))
        if both:
            raise ConfigError(
                f"labeler.settings.{both[0]}: also set by the execution section "
                f"(labelers.{lc.name}.settings); give it in one place"
            )
        kwargs.update(run.settings)
        kwargs["executor"] = Executor(**run.executor_kwargs())
    if lc.faults is not None:
        from dft_adapters.mock import FaultInjection

        kinds = lc.faults.kinds or None
        kwargs["faults"] = (
            FaultInjection.spread(lc.faults.fraction, kinds, lc.faults.seed, lc.faults.delay)
            if kinds
            else FaultInjection.spread(
                lc.faults.fraction, seed=lc.faults.seed, delay=lc.faults.delay
            )
        )
    kwargs["retry_policy"] = (
        RetryPolicy(physics_keys=tuple(lc.retry_may_change))
        if lc.retries
        else RetryPolicy.no_retries()
    )
    try:
        return get_labeler(lc.name, **kwargs)
    except (UnknownLabelerError, LabelerLoadError) as exc:  # e.g. a plug-in uninstalled since
        raise ConfigError(f"labeler.name: {exc}") from None
