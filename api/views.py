"""The API's response models built from the records of :mod:`database.queries` and
:mod:`database.queries_browse` (the queries themselves live in ``database``).

Only what the API adds is here: the public config snapshot of a campaign (no server paths or
operator settings: reads may be anonymous) and model download URLs.
"""

from __future__ import annotations

from typing import Any

from database import Store
from database import queries as q
from database import queries_browse as qb
from database.queries import LabelAggregate, campaign_name, label_aggregate
from database.read_records import CampaignSummary, ModelRow
from workflows.service import public_snapshot

from . import schemas

__all__ = [
    "campaign_detail",
    "campaign_name",
    "failures_by_kind",
    "get_campaign",
    "get_model",
    "histogram",
    "iterations",
    "label_aggregate",
    "list_campaigns",
    "list_labels",
    "list_models",
    "list_structures",
    "most_uncertain",
]


def _campaign_fields(c: CampaignSummary) -> dict[str, Any]:
    return {k: getattr(c, k) for k in schemas.CampaignOut.model_fields}


def list_campaigns(store: Store) -> list[schemas.CampaignOut]:
    """All campaigns, oldest first, with iteration and label counts."""
    return [schemas.CampaignOut(**_campaign_fields(c)) for c in q.list_campaigns(store)]


def campaign_detail(
    store: Store, campaign: Any, agg: LabelAggregate | None = None
) -> schemas.CampaignDetail:
    """One campaign (id, name, or a record as it was read, e.g. the record a status change
    returned: its status is the one this change produced) with its public config (without the
    workflow's runtime bookkeeping); label counts from ``agg`` when given."""
    c = q.campaign_summary(store, campaign, agg)
    config = {k: v for k, v in c.config.items() if k != q.RUNTIME_KEY}
    models = qb.list_models(store, c.id)
    return schemas.CampaignDetail(
        **_campaign_fields(c),
        config=public_snapshot(config),
        latest_model_id=models[-1].id if models else None,
        validation_regimes=q.regime_errors(models[-1].validation) if models else {},
    )


get_campaign = campaign_detail


def iterations(store: Store, campaign_id: int) -> list[schemas.IterationOut]:
    """The per-iteration summary (:class:`database.IterationSummary`)."""
    return [
        schemas.IterationOut.model_validate(m, from_attributes=True)
        for m in store.iteration_summaries(campaign_id)
    ]


def histogram(
    store: Store, campaign_id: int, index: int | None = None, bins: int = 40
) -> schemas.Histogram:
    """Uncertainty histogram of one iteration (default: the latest with frames)."""
    return schemas.Histogram.model_validate(
        q.histogram(store, campaign_id, index, bins), from_attributes=True
    )


def failures_by_kind(
    store: Store,
    campaign_id: int,
    its: list[schemas.IterationOut],
    agg: LabelAggregate | None = None,
) -> dict[str, list[int]]:
    """Failed labels per iteration (aligned with ``its``) by failure kind."""
    return q.failures_by_kind(store, campaign_id, [it.iteration_id for it in its], agg)


def list_structures(store: Store, campaign_id: int, **filters: Any) -> schemas.Page:
    """A page of selected structures (filters of :func:`database.queries_browse.list_structures`)."""
    page = qb.list_structures(store, campaign_id, **filters)
    return schemas.Page[schemas.StructureOut](
        items=[schemas.StructureOut.model_validate(r, from_attributes=True) for r in page.items],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )


def most_uncertain(store: Store, campaign_id: int, n: int = 10) -> list[schemas.UncertainStructure]:
    """The ``n`` selected structures with the largest committee uncertainty."""
    return [
        schemas.UncertainStructure.model_validate(r, from_attributes=True)
        for r in qb.most_uncertain(store, campaign_id, n)
    ]


def list_labels(store: Store, campaign_id: int, **filters: Any) -> schemas.Page:
    """A page of labels (filters of :func:`database.queries_browse.list_labels`)."""
    page = qb.list_labels(store, campaign_id, **filters)
    return schemas.Page[schemas.LabelOut](
        items=[schemas.LabelOut.model_validate(r, from_attributes=True) for r in page.items],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )


def _model_out(m: ModelRow) -> schemas.ModelOut:
    own = ("download_url", "parity_url", "regimes")
    return schemas.ModelOut(
        **{k: getattr(m, k) for k in schemas.ModelOut.model_fields if k not in own},
        regimes=q.regime_errors(m.validation),
        download_url=f"/api/v1/models/{m.id}/checkpoint",
        parity_url=f"/api/v1/models/{m.id}/parity" if m.validation.get("parity_uri") else None,
    )


def model_parity(store: Store, data_dir: str, model_id: int) -> schemas.ParityOut:
    """A model's validation predictions per regime (:func:`workflows.parity.read_parity`);
    :class:`database.NotFoundError` when the model or its parity data is absent."""
    from pathlib import Path

    from database import NotFoundError
    from workflows.service import read_parity

    m = qb.get_model(store, model_id)
    uri = m.validation.get("parity_uri")
    if not uri:
        raise NotFoundError(f"model {model_id} has no stored validation predictions")
    path = Path(uri) if Path(uri).is_absolute() else Path(data_dir) / uri
    try:
        regimes = read_parity(path)
    except FileNotFoundError:
        raise NotFoundError(f"validation predictions of model {model_id} are missing") from None
    return schemas.ParityOut(model_id=model_id, regimes=regimes)


def list_models(store: Store, campaign_id: int) -> list[schemas.ModelOut]:
    """A campaign's models, oldest first."""
    return [_model_out(m) for m in qb.list_models(store, campaign_id)]


def get_model(store: Store, model_id: int) -> tuple[schemas.ModelOut, str]:
    """A model and its stored checkpoint path; :class:`database.NotFoundError` if absent."""
    m = qb.get_model(store, model_id)
    return _model_out(m), m.checkpoint_uri
