"""``iteration_drops``: the frames each filter of a step dropped, counted per reason.

Before this revision the select step reported its drops only in the run's log; iterations run
before it have no rows (their drops are in their logs).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STEPS = ("seed", "train", "explore", "select", "label", "decide")


def upgrade() -> None:
    """Create the table (empty)."""
    op.create_table(
        "iteration_drops",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("iteration_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            f"step IN ({', '.join(repr(s) for s in STEPS)})",
            name=op.f("ck_iteration_drops_step"),
        ),
        sa.CheckConstraint("count > 0", name=op.f("ck_iteration_drops_count")),
        sa.ForeignKeyConstraint(
            ["iteration_id"],
            ["iterations.id"],
            name=op.f("fk_iteration_drops_iteration_id_iterations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iteration_drops")),
        sa.UniqueConstraint(
            "iteration_id",
            "step",
            "reason",
            name=op.f("uq_iteration_drops_iteration_id_step_reason"),
        ),
    )
    with op.batch_alter_table("iteration_drops") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_iteration_drops_iteration_id"), ["iteration_id"], unique=False
        )


def downgrade() -> None:
    """Drop the table (the counts are lost; the logs keep the reports)."""
    with op.batch_alter_table("iteration_drops") as batch_op:
        batch_op.drop_index(batch_op.f("ix_iteration_drops_iteration_id"))
    op.drop_table("iteration_drops")
