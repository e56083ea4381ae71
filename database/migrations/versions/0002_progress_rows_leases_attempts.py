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
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

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
STEPS = ("seed", "train", "explore", "select", "label", "decide")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _encode_f8(values: Sequence[float]) -> bytes:
    """database.arrays.encode_array for a 1-D float64 array (format frozen here)."""
    return b"PFA1d" + struct.pack("<BI", 1, len(values)) + struct.pack(f"<{len(values)}d", *values)


def _decode_f8(blob: bytes | None) -> list[float]:
    if not blob:
        return []
    blob = bytes(blob)
    (n,) = struct.unpack_from("<I", blob, 6)
    return list(struct.unpack_from(f"<{n}d", blob, 10))


def _now() -> datetime:
    return datetime.now(UTC)


def _relative_checkpoint(uri: str) -> str:
    """``<data dir>/campaigns/<name>/models/x.pt`` -> ``campaigns/<name>/models/x.pt``
    (pesflow always wrote checkpoints there); other paths are kept as they are."""
    if not uri.startswith("/"):
        return uri
    marker = "/campaigns/"
    i = uri.rfind(marker)
    return uri[i + 1 :] if i >= 0 else uri


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
        sa.UniqueConstraint("iteration_id", "walker", name=op.f("uq_walker_runs_iteration_id_walker")),
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
        batch_op.create_index(batch_op.f("ix_candidates_iteration_id"), ["iteration_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_candidates_structure_id"), ["structure_id"], unique=False)
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
            "label_id", "retry_round", "attempt", name=op.f("uq_label_attempts_label_id_retry_round_attempt")
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
        batch_op.create_check_constraint(batch_op.f("ck_campaigns_status"), _in("status", NEW_STATUSES))


# --------------------------------------------------------------------------- data
_iterations = sa.table(
    "iterations",
    sa.column("id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("finished_at", sa.DateTime(timezone=True)),
    sa.column("step_timings", sa.JSON),
    sa.column("validation", sa.JSON),
    sa.column("max_force_devs", sa.LargeBinary),
    sa.column("decision", sa.Text),
)
_steps = sa.table(
    "iteration_steps",
    sa.column("iteration_id", sa.Integer),
    sa.column("step", sa.String),
    sa.column("seconds", sa.Float),
    sa.column("completed_at", sa.DateTime(timezone=True)),
)
_walkers = sa.table(
    "walker_runs",
    sa.column("id", sa.Integer),
    sa.column("iteration_id", sa.Integer),
    sa.column("walker", sa.Integer),
    sa.column("status", sa.String),
    sa.column("temperature", sa.Float),
    sa.column("pressure", sa.Float),
    sa.column("ensemble", sa.String),
    sa.column("n_frames", sa.Integer),
    sa.column("n_accurate", sa.Integer),
    sa.column("n_candidate", sa.Integer),
    sa.column("n_failed", sa.Integer),
    sa.column("stopped_early", sa.Boolean),
    sa.column("stop_reason", sa.Text),
    sa.column("error", sa.Text),
    sa.column("md_wall_s", sa.Float),
    sa.column("max_force_devs", sa.LargeBinary),
    sa.column("finished_at", sa.DateTime(timezone=True)),
)
_candidates = sa.table(
    "candidates",
    sa.column("walker_run_id", sa.Integer),
    sa.column("iteration_id", sa.Integer),
    sa.column("structure_id", sa.Integer),
    sa.column("uncertainty", sa.Float),
    sa.column("max_force_dev", sa.Float),
    sa.column("cut", sa.Boolean),
)
_labels = sa.table(
    "labels",
    sa.column("id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("attempts", sa.Integer),
    sa.column("claims", sa.Integer),
    sa.column("failure_kind", sa.String),
    sa.column("failure_message", sa.Text),
    sa.column("wall_time", sa.Float),
    sa.column("settings", sa.JSON),
    sa.column("host", sa.String),
    sa.column("finished_at", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_attempts = sa.table(
    "label_attempts",
    sa.column("label_id", sa.Integer),
    sa.column("retry_round", sa.Integer),
    sa.column("attempt", sa.Integer),
    sa.column("status", sa.String),
    sa.column("message", sa.Text),
    sa.column("wall_time", sa.Float),
    sa.column("settings", sa.JSON),
    sa.column("settings_changes", sa.JSON),
    sa.column("host", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_models = sa.table(
    "models",
    sa.column("id", sa.Integer),
    sa.column("iteration_id", sa.Integer),
    sa.column("checkpoint_uri", sa.Text),
)
_structures = sa.table("structures", sa.column("id", sa.Integer))


def _finite(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else float("nan")


def _migrate_iteration(conn, row, known_structures: set[int]) -> None:
    validation = dict(row.validation or {})
    timings = dict(row.step_timings or {})
    done = row.status == "done"
    stamp = row.finished_at or _now()
    for step, seconds in timings.items():
        if step not in STEPS:
            continue
        complete = step != "label" or done
        conn.execute(
            _steps.insert().values(
                iteration_id=row.id,
                step=step,
                seconds=float(seconds or 0.0),
                completed_at=stamp if complete else None,
            )
        )
    if done and "decide" not in timings:
        conn.execute(
            _steps.insert().values(iteration_id=row.id, step="decide", seconds=0.0, completed_at=stamp)
        )
    conn.execute(
        _iterations.update()
        .where(_iterations.c.id == row.id)
        .values(decision=validation.get("decision"))
    )
    for key, stats in sorted(validation.items()):
        if not key.startswith("walker:") or not isinstance(stats, dict):
            continue
        try:
            walker = int(key.split(":", 1)[1])
        except ValueError:
            continue
        devs = [_finite(d) for d in stats.get("devs") or []]
        wid = conn.execute(
            _walkers.insert()
            .values(
                iteration_id=row.id,
                walker=walker,
                status="failed" if stats.get("error") else "done",
                temperature=stats.get("temperature"),
                pressure=stats.get("pressure"),
                ensemble=stats.get("ensemble"),
                n_frames=int(stats.get("n_frames") or 0),
                n_accurate=int(stats.get("n_accurate") or 0),
                n_candidate=int(stats.get("n_candidate") or 0),
                n_failed=0 if stats.get("error") else int(stats.get("n_failed") or 0),
                stopped_early=bool(stats.get("stopped_early")),
                stop_reason=stats.get("stop_reason"),
                error=stats.get("error"),
                md_wall_s=stats.get("md_wall_s"),
                max_force_devs=_encode_f8(devs),
                finished_at=stamp,
            )
            .returning(_walkers.c.id)
        ).scalar_one()
        seen: set[int] = set()
        for entry in stats.get("candidates") or []:
            sid = int(entry[0])
            if sid in seen or sid not in known_structures:
                continue
            seen.add(sid)
            dev = float(entry[1])
            conn.execute(
                _candidates.insert().values(
                    walker_run_id=wid,
                    iteration_id=row.id,
                    structure_id=sid,
                    uncertainty=dev,
                    max_force_dev=float(entry[2]) if len(entry) > 2 else dev,
                    cut=False,
                )
            )


def _migrate_data() -> None:
    conn = op.get_bind()
    known = {r[0] for r in conn.execute(sa.select(_structures.c.id))}
    rows = conn.execute(
        sa.select(
            _iterations.c.id,
            _iterations.c.status,
            _iterations.c.finished_at,
            _iterations.c.step_timings,
            _iterations.c.validation,
        )
    ).all()
    for row in rows:
        _migrate_iteration(conn, row, known)

    labels = conn.execute(
        sa.select(_labels).where(_labels.c.status.in_(("done", "failed")))
    ).all()
    for lb in labels:
        conn.execute(
            _attempts.insert().values(
                label_id=lb.id,
                retry_round=0,
                attempt=0,
                status="ok" if lb.status == "done" else (lb.failure_kind or "other"),
                message=lb.failure_message if lb.status == "failed" else None,
                wall_time=lb.wall_time,
                settings=dict(lb.settings or {}),
                settings_changes={},
                host=lb.host,
                created_at=lb.finished_at or lb.created_at or _now(),
            )
        )
    # ``attempts`` counted claims; from now on it counts DFT runs (one recorded per finished label)
    conn.execute(_labels.update().values(claims=_labels.c.attempts))
    conn.execute(
        _labels.update()
        .where(_labels.c.status.in_(("done", "failed")))
        .values(attempts=1)
    )
    conn.execute(_labels.update().where(_labels.c.status.in_(("pending", "running"))).values(attempts=0))

    models = conn.execute(
        sa.select(_models.c.id, _models.c.iteration_id, _models.c.checkpoint_uri).order_by(
            _models.c.id
        )
    ).all()
    latest: dict[int, int] = {}
    for m in models:
        if m.iteration_id is not None:
            latest[m.iteration_id] = m.id
    for m in models:
        values: dict[str, Any] = {}
        if m.iteration_id is not None and latest[m.iteration_id] != m.id:
            values["iteration_id"] = None  # a duplicate written by a concurrent run
        rel = _relative_checkpoint(m.checkpoint_uri)
        if rel != m.checkpoint_uri:
            values["checkpoint_uri"] = rel
        if values:
            conn.execute(_models.update().where(_models.c.id == m.id).values(**values))


# --------------------------------------------------------------------------- downgrade
def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(
        sa.text("UPDATE campaigns SET status = 'paused' WHERE status IN ('queued', 'interrupted')")
    )
    with op.batch_alter_table("campaigns") as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_campaigns_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_campaigns_status"), _in("status", OLD_STATUSES))
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
