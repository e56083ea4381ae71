"""Progress as rows, one writer per campaign, every DFT attempt a row.

- ``campaign_leases``: who runs a campaign (host, pid, heartbeat, expiry);
- ``iteration_steps`` / ``walker_runs`` / ``candidates`` replace the keys that several processes
  rewrote inside ``iterations.validation`` and ``iterations.step_timings`` (walkers finishing
  together lost each other's entries on PostgreSQL); the decision becomes ``iterations.decision``
  and the validation errors are read from the iteration's model;
- ``label_attempts``: one row per DFT run; ``labels.claims`` counts claims (what ``attempts``
  used to count), ``labels.retry_round``, ``code_version``, ``effective_settings(_hash)``;
- ``models``: at most one per iteration, ``seed`` and ``parent_model_id`` (recorded training
  inputs), checkpoint paths relative to the data directory;
- campaign statuses ``queued`` and ``interrupted``.

Existing data are carried over: walker statistics and candidates from the JSON entries, step
timings, decisions, one attempt row per finished label, relative checkpoint paths.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from database.migrations.helpers_0002 import (
    STEPS,
    _candidates,
    _decode_f8,
    _encode_f8,
    _iterations,
    _migrate_data,
    _walkers,
)

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = ("created", "running", "paused", "cancelled", "converged", "failed")
NEW_STATUSES = (
    "created",
    "queued",
    "running",
    "paused",
    "interrupted",
    "cancelled",
    "converged",
    "failed",
)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "campaign_leases",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("process", sa.String(length=200), nullable=True),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_leases_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_leases")),
    )
    op.create_table(
        "iteration_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("iteration_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(_in("step", STEPS), name=op.f("ck_iteration_steps_step")),
        sa.ForeignKeyConstraint(
            ["iteration_id"],
            ["iterations.id"],
            name=op.f("fk_iteration_steps_iteration_id_iterations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iteration_steps")),
        sa.UniqueConstraint(
            "iteration_id", "step", name=op.f("uq_iteration_steps_iteration_id_step")
        ),
    )
    with op.batch_alter_table("iteration_steps") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_iteration_steps_iteration_id"), ["iteration_id"], unique=False
        )

    with op.batch_alter_table("models") as batch_op:
        batch_op.add_column(sa.Column("seed", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("parent_model_id", sa.Integer(), nullable=True))

    op.create_table(
        "walker_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("iteration_id", sa.Integer(), nullable=False),
        sa.Column("walker", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("pressure", sa.Float(), nullable=True),
        sa.Column("ensemble", sa.String(length=16), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("n_frames", sa.Integer(), nullable=False),
        sa.Column("n_accurate", sa.Integer(), nullable=False),
        sa.Column("n_candidate", sa.Integer(), nullable=False),
        sa.Column("n_failed", sa.Integer(), nullable=False),
        sa.Column("stopped_early", sa.Boolean(), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("md_wall_s", sa.Float(), nullable=True),
        sa.Column("max_force_devs", sa.LargeBinary(), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_in("status", ("done", "failed")), name=op.f("ck_walker_runs_status")),
        sa.ForeignKeyConstraint(
            ["iteration_id"],
            ["iterations.id"],
            name=op.f("fk_walker_runs_iteration_id_iterations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_walker_runs_model_id_models"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_walker_runs")),
        sa.UniqueConstraint(
            "iteration_id", "walker", name=op.f("uq_walker_runs_iteration_id_walker")
        ),
    )
    with op.batch_alter_table("walker_runs") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_walker_runs_iteration_id"), ["iteration_id"], unique=False
        )
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("walker_run_id", sa.Integer(), nullable=False),
        sa.Column("iteration_id", sa.Integer(), nullable=False),
        sa.Column("structure_id", sa.Integer(), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=False),
        sa.Column("max_force_dev", sa.Float(), nullable=False),
        sa.Column("md_step", sa.Integer(), nullable=True),
        sa.Column("cut", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["iteration_id"],
            ["iterations.id"],
            name=op.f("fk_candidates_iteration_id_iterations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["structure_id"],
            ["structures.id"],
            name=op.f("fk_candidates_structure_id_structures"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["walker_run_id"],
            ["walker_runs.id"],
            name=op.f("fk_candidates_walker_run_id_walker_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
        sa.UniqueConstraint(
            "walker_run_id", "structure_id", name=op.f("uq_candidates_walker_run_id_structure_id")
        ),
    )
    with op.batch_alter_table("candidates") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_candidates_iteration_id"), ["iteration_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_candidates_structure_id"), ["structure_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_candidates_walker_run_id"), ["walker_run_id"], unique=False
        )
    op.create_table(
        "label_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=False),
        sa.Column("retry_round", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("wall_time", sa.Float(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("settings_changes", sa.JSON(), nullable=False),
        sa.Column("workdir", sa.Text(), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["labels.id"],
            name=op.f("fk_label_attempts_label_id_labels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_attempts")),
        sa.UniqueConstraint(
            "label_id",
            "retry_round",
            "attempt",
            name=op.f("uq_label_attempts_label_id_retry_round_attempt"),
        ),
    )
    with op.batch_alter_table("label_attempts") as batch_op:
        batch_op.create_index(batch_op.f("ix_label_attempts_label_id"), ["label_id"], unique=False)

    with op.batch_alter_table("labels") as batch_op:
        batch_op.add_column(sa.Column("claims", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("retry_round", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("code_version", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("effective_settings", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("effective_settings_hash", sa.String(length=64), nullable=True)
        )
    with op.batch_alter_table("iterations") as batch_op:
        batch_op.add_column(sa.Column("decision", sa.Text(), nullable=True))

    _migrate_data()

    with op.batch_alter_table("iterations") as batch_op:
        batch_op.drop_column("validation")
        batch_op.drop_column("step_timings")
        batch_op.drop_column("max_force_devs")
    with op.batch_alter_table("models") as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_models_parent_model_id_models"),
            "models",
            ["parent_model_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_unique_constraint(batch_op.f("uq_models_iteration_id"), ["iteration_id"])
    with op.batch_alter_table("campaigns") as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_campaigns_status"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_campaigns_status"), _in("status", NEW_STATUSES)
        )


# --------------------------------------------------------------------------- downgrade
def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(
        sa.text("UPDATE campaigns SET status = 'paused' WHERE status IN ('queued', 'interrupted')")
    )
    with op.batch_alter_table("campaigns") as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_campaigns_status"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_campaigns_status"), _in("status", OLD_STATUSES)
        )
    with op.batch_alter_table("iterations") as batch_op:
        batch_op.add_column(sa.Column("step_timings", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("validation", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("max_force_devs", sa.LargeBinary(), nullable=True))
    its = conn.execute(sa.text("SELECT id, decision FROM iterations")).all()
    for it_id, decision in its:
        timings = {
            step: seconds
            for step, seconds in conn.execute(
                sa.text("SELECT step, seconds FROM iteration_steps WHERE iteration_id = :i"),
                {"i": it_id},
            )
        }
        validation: dict[str, Any] = {"decision": decision} if decision else {}
        devs: list[float] = []
        for w in conn.execute(
            sa.select(_walkers).where(_walkers.c.iteration_id == it_id).order_by(_walkers.c.walker)
        ):
            wdevs = _decode_f8(w.max_force_devs)
            devs += [d for d in wdevs if math.isfinite(d)]
            cands = conn.execute(
                sa.select(
                    _candidates.c.structure_id,
                    _candidates.c.uncertainty,
                    _candidates.c.max_force_dev,
                ).where(_candidates.c.walker_run_id == w.id)
            ).all()
            validation[f"walker:{w.walker}"] = {
                "temperature": w.temperature,
                "pressure": w.pressure,
                "ensemble": w.ensemble,
                "n_frames": w.n_frames,
                "n_accurate": w.n_accurate,
                "n_candidate": w.n_candidate,
                "n_failed": 1 if w.error else w.n_failed,
                "devs": [d if math.isfinite(d) else None for d in wdevs],
                "candidates": [[int(c[0]), float(c[1]), float(c[2])] for c in cands],
                "stopped_early": bool(w.stopped_early),
                "stop_reason": w.stop_reason,
                "error": w.error,
                "md_wall_s": w.md_wall_s,
            }
        conn.execute(
            _iterations.update()
            .where(_iterations.c.id == it_id)
            .values(
                step_timings=timings,
                validation=validation,
                max_force_devs=_encode_f8(devs) if devs else None,
            )
        )
    with op.batch_alter_table("iterations") as batch_op:
        batch_op.alter_column("step_timings", existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column("validation", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("decision")
    conn.execute(sa.text("UPDATE labels SET attempts = claims"))
    with op.batch_alter_table("labels") as batch_op:
        batch_op.drop_column("effective_settings_hash")
        batch_op.drop_column("effective_settings")
        batch_op.drop_column("code_version")
        batch_op.drop_column("retry_round")
        batch_op.drop_column("claims")
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_models_iteration_id"), type_="unique")
        batch_op.drop_constraint(batch_op.f("fk_models_parent_model_id_models"), type_="foreignkey")
    with op.batch_alter_table("label_attempts") as batch_op:
        batch_op.drop_index(batch_op.f("ix_label_attempts_label_id"))
    op.drop_table("label_attempts")
    with op.batch_alter_table("candidates") as batch_op:
        batch_op.drop_index(batch_op.f("ix_candidates_walker_run_id"))
        batch_op.drop_index(batch_op.f("ix_candidates_structure_id"))
        batch_op.drop_index(batch_op.f("ix_candidates_iteration_id"))
    op.drop_table("candidates")
    with op.batch_alter_table("walker_runs") as batch_op:
        batch_op.drop_index(batch_op.f("ix_walker_runs_iteration_id"))
    op.drop_table("walker_runs")
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_column("parent_model_id")
        batch_op.drop_column("seed")
    with op.batch_alter_table("iteration_steps") as batch_op:
        batch_op.drop_index(batch_op.f("ix_iteration_steps_iteration_id"))
    op.drop_table("iteration_steps")
    op.drop_table("campaign_leases")
