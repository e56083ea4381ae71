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
    DuplicateError,
    LabelStateError,
    NotFoundError,
    UnknownCampaignError,
    UnsafeTestDatabaseError,
)
from .hashing import atoms_hash, structure_hash
from .records import (
    ApiTokenRecord,
    CampaignRecord,
    IterationMetrics,
    IterationRecord,
    LabelledStructure,
    LabelRecord,
    LabelTask,
    ModelRecord,
    Origin,
    SelectionInput,
    SelectionRecord,
    StructureRecord,
)
from .store import CampaignRef, Store, hash_token

__all__ = [
    "ApiTokenRecord",
    "CampaignRecord",
    "CampaignRef",
    "DatabaseInputError",
    "DuplicateError",
    "IterationMetrics",
    "IterationRecord",
    "LabelRecord",
    "LabelStateError",
    "LabelTask",
    "LabelledStructure",
    "ModelRecord",
    "NotFoundError",
    "Origin",
    "SelectionInput",
    "SelectionRecord",
    "Store",
    "StructureRecord",
    "UnknownCampaignError",
    "UnsafeTestDatabaseError",
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
