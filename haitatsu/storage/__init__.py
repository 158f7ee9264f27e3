"""Storage: metadata in SQL (SQLite or PostgreSQL), bodies in a blob store.

``build_store`` makes the store a configuration names without touching the disk or network;
``MailStore.open()`` connects and migrates. Until it has, every operation fails with
``StorageUnavailable``, which the protocols answer as a temporary failure.
"""

from haitatsu.storage.blobs import BlobRef, DirectoryBlobStore
from haitatsu.storage.changes import LocalChangeBus
from haitatsu.storage.engine import Database, SQLiteEngine
from haitatsu.storage.store import MailStore


def build_sqlite_store(reactor, sqlite_path: str, blob_dir: str) -> MailStore:
    """The embedded default: a SQLite file and a blob directory."""
    database = Database(SQLiteEngine(sqlite_path), reactor)
    return MailStore(database, DirectoryBlobStore(blob_dir, reactor), LocalChangeBus(), reactor)


def build_blob_store(config, reactor):
    """The blob store a ``Config`` names: S3 when the ``s3`` block has an endpoint, else the
    blob directory. Independent of the metadata database."""
    if config.s3 is not None and config.s3.endpoint:
        from haitatsu.storage.s3 import build_s3_blob_store

        return build_s3_blob_store(config.s3, reactor)
    return DirectoryBlobStore(config.blob_dir, reactor)


def build_store(config, reactor) -> MailStore:
    """The store a ``Config`` names (not opened yet)."""
    if config.database.driver != "sqlite":
        raise NotImplementedError(f"database.driver {config.database.driver!r} is not built yet")
    database = Database(SQLiteEngine(config.sqlite_path), reactor)
    return MailStore(database, build_blob_store(config, reactor), LocalChangeBus(), reactor)


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
    "build_blob_store",
    "build_sqlite_store",
    "build_store",
    "open_sqlite_store",
]
