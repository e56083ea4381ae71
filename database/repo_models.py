"""Trained models, API tokens, and dataset export/import entry points."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import or_, select, update

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
    TOKEN_SCOPES,
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
        seed: int | None = None,
        parent_model_id: int | None = None,
    ) -> ModelRecord:
        """Record a trained committee: checkpoint location (relative to the data directory)
        and content hash, its training inputs (label ids, seed, the model it was warm-started
        from) and validation metrics. An iteration has at most one model
        (:class:`DuplicateError`); replace a lost checkpoint with :meth:`replace_checkpoint`."""
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
                taken = s.scalar(select(Model.id).where(Model.iteration_id == iteration_id))
                if taken is not None:
                    raise DuplicateError(f"iteration id {iteration_id} already has model {taken}")
            m = Model(
                campaign_id=c.id,
                iteration_id=iteration_id,
                member_count=member_count,
                checkpoint_uri=checkpoint_uri,
                checkpoint_sha256=checkpoint_sha256,
                training_label_ids=label_ids,
                validation=validation,
                seed=seed,
                parent_model_id=parent_model_id,
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

    def get_model(self, model_id: int) -> ModelRecord:
        """A model by id; :class:`NotFoundError` if absent."""
        with self.session(write=False) as s:
            m = s.get(Model, model_id)
            if m is None:
                raise NotFoundError(f"unknown model id {model_id}")
            return _model(m)

    def model_of_iteration(self, iteration_id: int) -> ModelRecord | None:
        """The iteration's committee, or ``None`` if it has not been trained yet."""
        with self.session(write=False) as s:
            m = s.scalars(select(Model).where(Model.iteration_id == iteration_id)).one_or_none()
            return None if m is None else _model(m)

    def replace_checkpoint(
        self,
        model_id: int,
        *,
        checkpoint_uri: str,
        checkpoint_sha256: str,
        validation: dict[str, Any] | None = None,
    ) -> ModelRecord:
        """Point a model row at a retrained checkpoint (the old file was missing or corrupt);
        the training inputs stay, the validation metrics are replaced when given."""
        check_nonempty(checkpoint_uri, "checkpoint_uri")
        if not (isinstance(checkpoint_sha256, str) and len(checkpoint_sha256) == 64):
            raise DatabaseInputError("checkpoint_sha256 must be 64 hex characters")
        with self.session() as s:
            m = s.get(Model, model_id, with_for_update=True)
            if m is None:
                raise NotFoundError(f"unknown model id {model_id}")
            m.checkpoint_uri = checkpoint_uri
            m.checkpoint_sha256 = checkpoint_sha256
            if validation is not None:
                m.validation = check_json(validation, "validation metrics")
            s.flush()
            return _model(m)

    def latest_model(self, campaign: CampaignRef) -> ModelRecord | None:
        """The most recently recorded model of a campaign, or ``None``."""
        models = self.list_models(campaign)
        return models[-1] if models else None

    # ------------------------------------------------------------------ API tokens
    def add_api_token(
        self,
        name: str,
        token: str,
        *,
        scope: str = "admin",
        expires_at: datetime | None = None,
    ) -> ApiTokenRecord:
        """Store an API token under ``name`` (only its SHA-256 is kept) with its ``scope``
        (``read`` < ``operate`` < ``admin``; the default keeps the full power tokens had before
        scopes existed) and optional expiry (timezone-aware, in the future)."""
        check_nonempty(name, "token name")
        check_nonempty(token, "token")
        if scope not in TOKEN_SCOPES:
            raise DatabaseInputError(
                f"token scope must be one of {', '.join(TOKEN_SCOPES)} (got {scope!r})"
            )
        if expires_at is not None:
            if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
                raise DatabaseInputError("token expiry must be a timezone-aware datetime")
            if expires_at <= utcnow():
                raise DatabaseInputError("token expiry must be in the future")
        with self.session() as s:
            if s.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
                raise DuplicateError(f"API token {name!r} already exists")
            t = ApiToken(
                name=name, token_sha256=hash_token(token), scope=scope, expires_at=expires_at
            )
            s.add(t)
            s.flush()
            return _token(t)

    def find_api_token(self, token: str) -> ApiTokenRecord | None:
        """The record of ``token`` looked up by its SHA-256 (the unique index), revoked and
        expired ones included, or ``None``."""
        with self.session(write=False) as s:
            t = s.scalars(
                select(ApiToken).where(ApiToken.token_sha256 == hash_token(token))
            ).one_or_none()
            return None if t is None else _token(t)

    def verify_api_token(self, token: str) -> ApiTokenRecord | None:
        """The record of ``token`` if it is neither revoked nor expired, else ``None``."""
        rec = self.find_api_token(token)
        if rec is None or rec.revoked_at is not None or rec.expired(utcnow()):
            return None
        return rec

    def touch_api_token(self, token_id: int, *, min_interval_s: float = 60.0) -> bool:
        """Record that the token was used now, unless that was recorded less than
        ``min_interval_s`` ago (one conditional UPDATE; concurrent requests write once).
        Whether a row was updated."""
        now = utcnow()
        with self.session() as s:
            stale = or_(
                ApiToken.last_used_at.is_(None),
                ApiToken.last_used_at < now - timedelta(seconds=min_interval_s),
            )
            done = s.execute(
                update(ApiToken).where(ApiToken.id == token_id, stale).values(last_used_at=now)
            )
            return bool(done.rowcount)

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
        """All tokens (hashes only), oldest first."""
        with self.session(write=False) as s:
            return [_token(t) for t in s.scalars(select(ApiToken).order_by(ApiToken.id))]
