"""Store: the SQLite run store and checkpoint files."""

from perennial.store.checkpoints import CheckpointDir, atomic_write
from perennial.store.db import DB_NAME, RunRecord, RunStore, check_run_id, dumps

__all__ = ["DB_NAME", "CheckpointDir", "RunRecord", "RunStore", "atomic_write", "check_run_id", "dumps"]
