"""pesflow database: SQLAlchemy models, the :class:`Store` repository, Alembic migrations and
extended-XYZ dataset export/import.

Typical use::

    from database import Store
    store = Store.sqlite(data_dir)             # or Store.from_url("postgresql+psycopg://...")
    c = store.create_campaign("CuAu", config)
    it = store.start_iteration(c.id)
    sids = store.add_structures(frames, campaign=c.id, iteration_id=it.id)
    store.record_selections(c.id, [SelectionInput(i, max_force_dev=u) for i, u in ...],
                            iteration_id=it.id)
    store.request_labels(c.id, sids, labeler="qe", settings_hash=h, iteration_id=it.id)
    for task in store.claim_labels(limit=4, labeler="qe"):
        store.store_result(task.label_id, energy=e, forces=f, stress=s)
"""

from .arrays import decode_array, encode_array
from .engine import current_revision, downgrade, make_engine, sqlite_url, upgrade
from .errors import (
    DatabaseInputError,
    DatabaseUnavailableError,
    DuplicateError,
    LabelStateError,
    LeaseHeldError,
    LeaseLostError,
    NotFoundError,
    StatusConflictError,
    UnknownCampaignError,
    UnsafeTestDatabaseError,
)
from .hashing import atoms_hash, structure_hash
from .models import TOKEN_SCOPES
from .read_records import IterationMetrics, IterationSummary
from .records import (
    ApiTokenRecord,
    AttemptInput,
    CampaignRecord,
    CandidateRecord,
    IterationRecord,
    LabelAttemptRecord,
    LabelledStructure,
    LabelRecord,
    LabelTask,
    LeaseRecord,
    ModelRecord,
    Origin,
    SelectionInput,
    SelectionRecord,
    StructureRecord,
    WalkerOutcome,
    WalkerRunRecord,
)
from .repo_lifecycle import CAMPAIGN_TRANSITIONS
from .resilience import DbRetry
from .store import CampaignRef, Store, hash_token

__all__ = [
    "CAMPAIGN_TRANSITIONS",
    "TOKEN_SCOPES",
    "ApiTokenRecord",
    "AttemptInput",
    "CampaignRecord",
    "CampaignRef",
    "CandidateRecord",
    "DatabaseInputError",
    "DatabaseUnavailableError",
    "DbRetry",
    "DuplicateError",
    "IterationMetrics",
    "IterationRecord",
    "IterationSummary",
    "LabelAttemptRecord",
    "LabelRecord",
    "LabelStateError",
    "LabelTask",
    "LabelledStructure",
    "LeaseHeldError",
    "LeaseLostError",
    "LeaseRecord",
    "ModelRecord",
    "NotFoundError",
    "Origin",
    "SelectionInput",
    "SelectionRecord",
    "StatusConflictError",
    "Store",
    "StructureRecord",
    "UnknownCampaignError",
    "UnsafeTestDatabaseError",
    "WalkerOutcome",
    "WalkerRunRecord",
    "atoms_hash",
    "current_revision",
    "decode_array",
    "downgrade",
    "encode_array",
    "hash_token",
    "make_engine",
    "sqlite_url",
    "structure_hash",
    "upgrade",
]
