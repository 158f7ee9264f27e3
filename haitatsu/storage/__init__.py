"""Storage: metadata in SQL (SQLite or PostgreSQL), bodies in a blob store.

``build_store`` makes the store a configuration names without touching the disk or network;
``MailStore.open()`` connects and migrates. Until it has, every operation fails with
``StorageUnavailable``, which the protocols answer as a temporary failure.
"""

from haitatsu.storage.blobs import BlobRef, DirectoryBlobStore
from haitatsu.storage.changes import LocalChangeBus
from haitatsu.storage.engine import Database, SQLiteEngine
from haitatsu.storage.store import MailStore


def build_sqlite_store(reactor, sqlite_path: str, blob_dir: str, **options) -> MailStore:
    """The embedded default: a SQLite file and a blob directory. ``options`` go to
    ``MailStore`` (``attachment_dedup_threshold``)."""
    database = Database(SQLiteEngine(sqlite_path), reactor)
    return MailStore(
        database, DirectoryBlobStore(blob_dir, reactor), LocalChangeBus(), reactor, **options
    )


def build_store(config, reactor) -> MailStore:
    """The store a ``Config`` names (not opened yet)."""
    if config.database.driver != "sqlite":
        raise NotImplementedError(f"database.driver {config.database.driver!r} is not built yet")
    return build_sqlite_store(
        reactor,
        config.sqlite_path,
        config.blob_dir,
        attachment_dedup_threshold=config.storage.attachment_dedup_threshold_bytes,
    )


async def open_sqlite_store(reactor, sqlite_path: str, blob_dir: str) -> MailStore:
    """Build and open the embedded default store."""
    store = build_sqlite_store(reactor, sqlite_path, blob_dir)
    await store.open()
    return store


__all__ = [
    "BlobRef",
    "Database",
    "DirectoryBlobStore",
    "LocalChangeBus",
    "MailStore",
    "SQLiteEngine",
    "build_sqlite_store",
    "build_store",
    "open_sqlite_store",
]
