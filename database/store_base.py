"""Base of :class:`database.Store`: engine, sessions (one transaction per call), lookups."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Engine, any_, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from . import engine as _engine
from .convert import CampaignRef, _chunks, as_utc
from .errors import (
    DatabaseInputError,
    DatabaseUnavailableError,
    NotFoundError,
    UnknownCampaignError,
)
from .models import (
    Campaign,
    Iteration,
    IterationStep,
    utcnow,
)
from .records import (
    CampaignRecord,
)
from .resilience import DbRetry


class StoreBase:
    """Engine, sessions and transactions, and the lookups every repository part shares."""

    def __init__(self, engine: Engine, *, owns_engine: bool = True) -> None:
        self.engine = engine
        self._owns_engine = owns_engine
        self.backend: str = engine.dialect.name  # "sqlite" | "postgresql"
        self.db_retry = DbRetry()
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(
            engine.execution_options(pesflow_write=True), expire_on_commit=False
        )

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True, echo: bool = False) -> Self:
        """Open the database at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``),
        migrating it to the current schema when it is behind (a database at head is only read,
        so read-only commands work on a read-only database).

        Raises :class:`DatabaseUnavailableError` naming the database and the cause when it
        cannot be opened (no such server or file, read-only, permission, disk full)."""
        from sqlalchemy.exc import SQLAlchemyError

        from .resilience import classify, describe_database

        try:
            store = cls(_engine.make_engine(url, echo=echo))
        except OSError as exc:  # e.g. the SQLite file's directory cannot be created
            raise DatabaseUnavailableError(
                f"cannot open database {url.split('?')[0].rsplit('@', 1)[-1]}: {exc}",
                cause="cannot open the file",
                where=url,
            ) from exc
        try:
            if migrate and _engine.current_revision(store.engine) != _engine.head_revision():
                store.upgrade()
            else:
                with store.engine.connect() as conn:  # fail here, not at the first query
                    conn.exec_driver_sql("SELECT 1")
        except SQLAlchemyError as exc:
            store.close()
            where = describe_database(store.engine)
            cause = classify(exc) or _open_problem(exc)
            driver = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
            raise DatabaseUnavailableError(
                f"cannot open database {where} ({cause}): {driver}", cause=cause, where=where
            ) from exc
        return store

    @classmethod
    def sqlite(cls, data_dir: str | Path, **kwargs: Any) -> Self:
        """Open (creating if needed) the embedded default ``<data_dir>/pesflow.sqlite``."""
        return cls.from_url(_engine.sqlite_url(data_dir), **kwargs)

    def upgrade(self, revision: str = "head") -> None:
        """Run the Alembic migrations up to ``revision``."""
        _engine.upgrade(self.engine, revision)

    def close(self) -> None:
        """Release the connections."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception.

        Public for the rare query the methods below do not cover; prefer the methods.
        On SQLite a write transaction starts with ``BEGIN IMMEDIATE``."""
        factory = self._write if write else self._read
        with factory() as s, s.begin():
            yield s

    def _insert(self, model):
        # Core insert on the table: executemany / insertmanyvalues without ORM bookkeeping.
        dialect = postgresql if self.backend == "postgresql" else sqlite
        return dialect.insert(model.__table__)

    def _insert_new(
        self, s: Session, model, rows: Sequence[dict[str, Any]], conflict: Sequence[str], key: str
    ) -> dict[Any, int]:
        """Bulk ``INSERT ... ON CONFLICT (conflict) DO NOTHING RETURNING key, id``: inserts the
        rows that do not exist yet and maps their ``key`` column to the new id (existing rows
        are absent from the result; look them up with :meth:`_member`)."""
        table = model.__table__
        stmt = (
            self._insert(model)
            .on_conflict_do_nothing(index_elements=list(conflict))
            .returning(table.c[key], table.c.id)
        )
        out: dict[Any, int] = {}
        for chunk in _chunks(rows):
            out.update(s.execute(stmt, list(chunk)).all())
        return out

    def _member(self, column, values: Sequence[Any]):
        """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one bound array
        instead of one parameter per value (much cheaper to bind and plan)."""
        if self.backend == "postgresql":
            return column == any_(literal(list(values), postgresql.ARRAY(column.type)))
        return column.in_(values)

    def _db_now(self, s: Session) -> datetime:
        """The database's clock on PostgreSQL (one clock for every host), else the local UTC."""
        if self.backend == "postgresql":
            return as_utc(s.scalar(select(func.now())))
        return utcnow()

    def _add_step(
        self, s: Session, iteration_id: int, step: str, seconds: float, complete: bool
    ) -> None:
        """Upsert the (iteration, step) row: add ``seconds``; set ``completed_at`` once."""
        table = IterationStep.__table__
        now = utcnow() if complete else None
        stmt = self._insert(IterationStep).values(
            iteration_id=iteration_id, step=step, seconds=seconds, completed_at=now
        )
        done = table.c.completed_at
        stmt = stmt.on_conflict_do_update(
            index_elements=["iteration_id", "step"],
            set_={
                "seconds": table.c.seconds + stmt.excluded.seconds,
                "completed_at": func.coalesce(done, stmt.excluded.completed_at),
            },
        )
        s.execute(stmt)

    # ------------------------------------------------------------------ lookups
    @staticmethod
    def _campaign_row(s: Session, campaign: CampaignRef, *, lock: bool = False) -> Campaign:
        if isinstance(campaign, CampaignRecord):
            campaign = campaign.id
        if isinstance(campaign, bool) or not isinstance(campaign, int | str):
            raise DatabaseInputError(f"campaign must be an id or a name, got {campaign!r}")
        q = select(Campaign).where(
            Campaign.id == campaign if isinstance(campaign, int) else Campaign.name == campaign
        )
        if lock:
            q = q.with_for_update()
        row = s.scalars(q).one_or_none()
        if row is None:
            raise UnknownCampaignError(f"unknown campaign {campaign!r}")
        return row

    @staticmethod
    def _iteration_row(s: Session, iteration_id: int, campaign_id: int | None = None) -> Iteration:
        it = s.get(Iteration, iteration_id)
        if it is None:
            raise NotFoundError(f"unknown iteration id {iteration_id}")
        if campaign_id is not None and it.campaign_id != campaign_id:
            raise DatabaseInputError(
                f"iteration id {iteration_id} belongs to campaign {it.campaign_id}, not {campaign_id}"
            )
        return it


def _open_problem(exc: Exception) -> str:
    """Words for a database that opens but is not usable (not retried: retrying cannot help)."""
    name = getattr(getattr(exc, "orig", None), "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return "not a database, or corrupt"
    return "error"
