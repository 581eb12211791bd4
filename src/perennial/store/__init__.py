"""Store: the SQLite run store."""

from perennial.store.db import DB_NAME, RunRecord, RunStore, dumps

__all__ = ["DB_NAME", "RunRecord", "RunStore", "dumps"]
