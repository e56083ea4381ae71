"""``structures.state``: constraints, initial magnetic moments and charges, tags.

Before this revision a structure kept only numbers, positions, cell and pbc; existing rows have
no state (``NULL``), and their hashes are unchanged (a structure without state hashes as
before). The downgrade drops the column: the states are lost.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable JSON column."""
    with op.batch_alter_table("structures") as batch_op:
        batch_op.add_column(sa.Column("state", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the column (the states are lost)."""
    with op.batch_alter_table("structures") as batch_op:
        batch_op.drop_column("state")
