"""Storage: metadata in SQL (SQLite or PostgreSQL), bodies in a blob store.

``build_store`` makes the store a configuration names without touching the disk or network;
``MailStore.open()`` connects and migrates. Until it has, every operation fails with
``StorageUnavailable``, which the protocols answer as a temporary failure.
"""

from haitatsu.storage.blobs import BlobRef, DirectoryBlobStore
from haitatsu.storage.changes import LocalChangeBus
from haitatsu.storage.engine import Database, SQLiteEngine
from haitatsu.storage.store import MailStore


def build_sqlite_store(
    reactor, sqlite_path: str, blob_dir: str, blobs=None, **options
) -> MailStore:
    """The embedded default: a SQLite file and a blob directory (or the ``blobs`` given).
    ``options`` go to ``MailStore`` (``attachment_dedup_threshold``)."""
    database = Database(SQLiteEngine(sqlite_path), reactor)
    if blobs is None:
        blobs = DirectoryBlobStore(blob_dir, reactor)
    return MailStore(database, blobs, LocalChangeBus(), reactor, **options)


def build_postgres_store(
    reactor, dsn: str, blob_dir: str, max_connections: int = 10, blobs=None, **options
) -> MailStore:
    """PostgreSQL (txpostgres pool, LISTEN/NOTIFY change bus) and a blob directory (or the
    ``blobs`` given). ``options`` go to ``MailStore``."""
    from haitatsu.storage.changes_pg import PostgresChangeBus
    from haitatsu.storage.postgres import PostgresDatabase, PostgresEngine

    engine = PostgresEngine(dsn, max_connections=max_connections)
    return MailStore(
        PostgresDatabase(engine, reactor),
        blobs if blobs is not None else DirectoryBlobStore(blob_dir, reactor),
        PostgresChangeBus(engine, reactor),
        reactor,
        **options,
    )


def build_blob_store(config, reactor):
    """The blob store a ``Config`` names: S3 when the ``s3`` block has an endpoint, else the
    blob directory. Independent of the metadata database."""
    if config.s3 is not None and config.s3.endpoint:
        from haitatsu.storage.s3 import build_s3_blob_store

        return build_s3_blob_store(config.s3, reactor)
    return DirectoryBlobStore(config.blob_dir, reactor)


def build_store(config, reactor) -> MailStore:
    """The store a ``Config`` names (not opened yet)."""
    options = {"attachment_dedup_threshold": config.storage.attachment_dedup_threshold_bytes}
    blobs = build_blob_store(config, reactor)
    if config.database.driver == "postgres":
        return build_postgres_store(
            reactor,
            config.database.dsn,
            config.blob_dir,
            config.database.max_connections,
            blobs=blobs,
            **options,
        )
    return build_sqlite_store(reactor, config.sqlite_path, config.blob_dir, blobs=blobs, **options)


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
    "build_postgres_store",
    "build_sqlite_store",
    "build_store",
    "open_sqlite_store",
]
