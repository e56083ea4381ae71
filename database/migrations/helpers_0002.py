"""Data-migration helpers of revision 0002 (:mod:`0002_progress_rows_leases_attempts`), kept
out of the revision file so that no module is over 400 lines. Frozen with that revision: the
array format, table shapes and rules here are those of the schema at 0002, not of the current
models; do not change them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

STEPS = ("seed", "train", "explore", "select", "label", "decide")


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
            _steps.insert().values(
                iteration_id=row.id, step="decide", seconds=0.0, completed_at=stamp
            )
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

    labels = conn.execute(sa.select(_labels).where(_labels.c.status.in_(("done", "failed")))).all()
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
        _labels.update().where(_labels.c.status.in_(("done", "failed"))).values(attempts=1)
    )
    conn.execute(
        _labels.update().where(_labels.c.status.in_(("pending", "running"))).values(attempts=0)
    )

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
