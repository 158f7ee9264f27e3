"""DKIM keys (API.md 1.11): rows only. Generating keys and signing is ``haitatsu.dkim``'s."""

from __future__ import annotations

from haitatsu.storage.records import DkimKey, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _page_where, new_id


def _dkim_key(row) -> DkimKey:
    return DkimKey(
        id=row["id"],
        domain=row["domain"],
        selector=row["selector"],
        algorithm=row["algorithm"],
        private_key=row["private_key"],
        public_key=row["public_key"],
        active=bool(row["active"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class DkimMixin(StoreBase):
    def create_dkim_key(self, domain, selector, algorithm, private_key, public_key):
        """Store a generated key pair; ``Conflict`` if the domain already has this selector."""
        key_id = new_id()

        async def txn_fn(txn):
            now = now_ns()
            await txn.execute(
                "INSERT INTO dkim_keys (id, domain, selector, algorithm, private_key, "
                "public_key, active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key_id, domain, selector, algorithm, private_key, public_key, True, now, now),
            )
            row = await txn.execute_one("SELECT * FROM dkim_keys WHERE id = ?", (key_id,))
            return _dkim_key(row)

        return self._run("create_dkim_key", txn_fn)

    def get_dkim_key(self, key_id):
        async def txn_fn(txn):
            row = await txn.execute_one("SELECT * FROM dkim_keys WHERE id = ?", (key_id,))
            return _dkim_key(row) if row else None

        return self._run("get_dkim_key", txn_fn, readonly=True)

    def list_dkim_keys(self, limit=50, before=None):
        async def txn_fn(txn):
            where, params = _page_where("", before)
            sql = "SELECT * FROM dkim_keys"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            return [_dkim_key(r) for r in await txn.execute(sql, (*params, limit))]

        return self._run("list_dkim_keys", txn_fn, readonly=True)

    def signing_key(self, domain):
        """The key that signs mail from ``domain``: its newest active key, or None."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT * FROM dkim_keys WHERE domain = ? AND active = ? "
                "ORDER BY created_at DESC, id DESC LIMIT 1",
                (domain.strip().lower(), True),
            )
            return _dkim_key(row) if row else None

        return self._run("signing_key", txn_fn, readonly=True)
