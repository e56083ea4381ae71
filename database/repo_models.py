"""Trained models, API tokens, and dataset export/import entry points."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from .convert import (
    CampaignRef,
    _model,
    _token,
    hash_token,
)
from .errors import (
    DatabaseInputError,
    DuplicateError,
    NotFoundError,
)
from .models import (
    ApiToken,
    Model,
    utcnow,
)
from .records import (
    ApiTokenRecord,
    ModelRecord,
)
from .store_base import StoreBase
from .validation import (
    check_json,
    check_nonempty,
)


class ModelsRepo(StoreBase):
    """Trained models, API tokens, and dataset export/import entry points."""

    # ------------------------------------------------------------------ models
    def record_model(
        self,
        campaign: CampaignRef,
        *,
        member_count: int,
        checkpoint_uri: str,
        checkpoint_sha256: str,
        training_label_ids: Sequence[int] | np.ndarray,
        iteration_id: int | None = None,
        validation: dict[str, Any] | None = None,
    ) -> ModelRecord:
        """Record a trained committee: checkpoint location and content hash, the label ids it
        was trained on, and validation metrics."""
        if not isinstance(member_count, int) or member_count < 1:
            raise DatabaseInputError(f"member_count must be an int >= 1, got {member_count!r}")
        check_nonempty(checkpoint_uri, "checkpoint_uri")
        if not (isinstance(checkpoint_sha256, str) and len(checkpoint_sha256) == 64):
            raise DatabaseInputError("checkpoint_sha256 must be 64 hex characters")
        label_ids = np.asarray(training_label_ids, dtype=np.int64).reshape(-1)
        validation = check_json(validation or {}, "validation metrics")
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            if iteration_id is not None:
                self._iteration_row(s, iteration_id, c.id)
            m = Model(
                campaign_id=c.id,
                iteration_id=iteration_id,
                member_count=member_count,
                checkpoint_uri=checkpoint_uri,
                checkpoint_sha256=checkpoint_sha256,
                training_label_ids=label_ids,
                validation=validation,
            )
            s.add(m)
            s.flush()
            return _model(m)

    def list_models(self, campaign: CampaignRef) -> list[ModelRecord]:
        """A campaign's models, oldest first."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            return [
                _model(m)
                for m in s.scalars(
                    select(Model).where(Model.campaign_id == c.id).order_by(Model.id)
                )
            ]

    def latest_model(self, campaign: CampaignRef) -> ModelRecord | None:
        """The most recently recorded model of a campaign, or ``None``."""
        models = self.list_models(campaign)
        return models[-1] if models else None

    # ------------------------------------------------------------------ API tokens
    def add_api_token(self, name: str, token: str) -> ApiTokenRecord:
        """Store an API token under ``name`` (only its SHA-256 is kept)."""
        check_nonempty(name, "token name")
        check_nonempty(token, "token")
        with self.session() as s:
            if s.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
                raise DuplicateError(f"API token {name!r} already exists")
            t = ApiToken(name=name, token_sha256=hash_token(token))
            s.add(t)
            s.flush()
            return _token(t)

    def verify_api_token(self, token: str) -> ApiTokenRecord | None:
        """The non-revoked token record matching ``token``, or ``None``."""
        with self.session(write=False) as s:
            t = s.scalars(
                select(ApiToken).where(
                    ApiToken.token_sha256 == hash_token(token), ApiToken.revoked_at.is_(None)
                )
            ).one_or_none()
            return None if t is None else _token(t)

    def revoke_api_token(self, name: str) -> ApiTokenRecord:
        """Revoke a token by name (idempotent)."""
        with self.session() as s:
            t = s.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
            if t is None:
                raise NotFoundError(f"unknown API token {name!r}")
            if t.revoked_at is None:
                t.revoked_at = utcnow()
            s.flush()
            return _token(t)

    def list_api_tokens(self) -> list[ApiTokenRecord]:
        """All tokens (hashes only)."""
        with self.session(write=False) as s:
            return [_token(t) for t in s.scalars(select(ApiToken).order_by(ApiToken.id))]

    # ------------------------------------------------------------------ datasets
    def export_extxyz(
        self,
        path: str | Path,
        campaign: CampaignRef,
        *,
        labeler: str,
        settings_hash: str,
        config_type: str = "pesflow",
    ) -> int:
        """Write the campaign's training set as extended XYZ (see :mod:`database.extxyz`);
        returns the number of frames."""
        from .extxyz import export_extxyz

        return export_extxyz(
            self,
            path,
            campaign,
            labeler=labeler,
            settings_hash=settings_hash,
            config_type=config_type,
        )

    def import_labelled(
        self,
        paths: str | Path | Sequence[str | Path],
        campaign: CampaignRef,
        *,
        labeler: str,
        settings_hash: str,
        **kwargs: Any,
    ) -> list[int]:
        """Seed a campaign from labelled files (extxyz, vasprun.xml, anything ASE reads with
        energies and forces); see :func:`database.extxyz.import_labelled`."""
        from .extxyz import import_labelled

        return import_labelled(
            self, paths, campaign, labeler=labeler, settings_hash=settings_hash, **kwargs
        )
