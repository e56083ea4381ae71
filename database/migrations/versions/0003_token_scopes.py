"""Scoped API tokens: ``api_tokens.scope``, ``expires_at`` and ``last_used_at``.

``scope`` is one of ``read`` < ``operate`` < ``admin`` (each includes the ones before it).
Existing tokens become ``admin``: before this revision every token could do everything
(create and cancel campaigns included), so ``admin`` keeps what they could do; narrow them by
creating new tokens with a smaller scope and revoking the old ones. Existing tokens do not
expire and have no recorded use.

The downgrade drops the three columns: every remaining token gets full power again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCOPES = ("read", "operate", "admin")


def upgrade() -> None:
    """Add the columns; existing tokens get scope ``admin`` (the server default, then
    dropped: new tokens always name their scope)."""
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.add_column(
            sa.Column("scope", sa.String(length=16), nullable=False, server_default="admin")
        )
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_check_constraint(
            batch_op.f("ck_api_tokens_scope"),
            f"scope IN ({', '.join(repr(s) for s in SCOPES)})",
        )
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.alter_column("scope", existing_type=sa.String(length=16), server_default=None)


def downgrade() -> None:
    """Drop the columns (tokens get full power again)."""
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_api_tokens_scope"), type_="check")
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("scope")
