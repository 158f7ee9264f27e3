"""Messages: delivery, reading, message bytes, search, flags, expunge and deletion."""

from __future__ import annotations

import os

from twisted.internet import defer, task

from haitatsu.interfaces import (
    OverQuota,
    StorageUnavailable,
)
from haitatsu.storage import layout as layoutmod
from haitatsu.storage.records import (
    FLAG_COLUMNS,
    MailboxMessage,
    now_ns,
)
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    _MM_COLUMNS,
    _MSG_COLUMNS,
    DELIVERY_RETRY_DELAYS,
    _BlobBusy,
    _flag_columns,
    _folder,
    _json,
    _LeaseLost,
    _live_entry,
    _log,
    _mailbox_message,
    _message_info,
    _page_where,
    _prepare_spool,
    _text,
    new_id,
)
from haitatsu.storage.store.sync import record_vanished
from haitatsu.storage.views import stored_view_json

#: Columns whose values repeat across a folder's rows (``list_folder_messages``).
_REPEATED_COLUMNS = (
    "mailbox_id",
    "folder_id",
    "original_rcpt",
    "base_rcpt",
    "plus_tag",
    "resolved_route_id",
    "keywords",
)


class MessagesMixin(StoreBase):
    def deliver(
        self,
        spool_path,
        deliveries,
        trace_id,
        auth_results=None,
        internal_date=None,
        received=(),
        disposable=False,
        finish=None,
        spam_score=0.0,
    ):
        """``received``: the ``events.Received`` routing results whose ``message.received``
        events are written in the delivery's transaction (empty for APPEND and the like);
        ``spam_score``: what the filters scored the message (``messages.spam_score``).
        ``disposable``: the caller will not write to the file at ``spool_path`` again, only
        remove it, so the blob store may take the file itself instead of a copy (a hard link
        on the blob directory). ``finish``: a blocking callable the store runs in its thread
        before it reads the file (the SMTP server's spool writes its last bytes and closes
        there rather than on the reactor); an ``OSError`` from it is ``StorageUnavailable``."""
        deliveries = list(deliveries)
        if not deliveries:
            raise ValueError("deliver needs at least one Delivery")

        def commit(prepared, parsed, generations):
            return self._commit_delivery(
                prepared,
                generations,
                parsed,
                deliveries,
                trace_id,
                auth_results,
                internal_date,
                received,
                spam_score,
            )

        async def run():
            (placed, message_id), prepared = await self._store_message(
                spool_path, trace_id, commit, disposable, finish
            )
            _log.info(
                "stored message {message_id} ({size} bytes, {blobs} blobs) for {count} placements",
                message_id=message_id,
                size=prepared.size,
                blobs=len(prepared.pieces),
                count=len(placed),
                trace_id=trace_id,
            )
            return placed

        return defer.Deferred.fromCoroutine(run())

    async def _store_message(self, spool_path, trace_id, commit, disposable=False, finish=None):
        """Parse and split the spool file, store its blobs and run ``commit(prepared, parsed,
        generations)`` (a Deferred of the metadata transaction); store and commit again while
        garbage collection gets in the way. Return ``(commit's result, prepared)``.

        Per message: one thread hop reads the spool once (structure, hash, split); the lease
        and the commit are group-committed with other deliveries (``db.run_grouped``); the
        blob store puts with the hash it is given instead of reading the file again.
        """
        try:
            parsed, prepared = await self._thread(
                _prepare_spool,
                spool_path,
                self.attachment_dedup_threshold,
                os.path.dirname(os.path.abspath(spool_path)),
                finish,
            )
        except OSError as e:
            raise StorageUnavailable(f"spool: {e}") from e
        try:
            for attempt, delay in enumerate((*DELIVERY_RETRY_DELAYS, None), 1):
                try:
                    generations = await self._store_blobs(prepared, disposable)
                    result = await commit(prepared, parsed, generations)
                    return result, prepared
                except (_LeaseLost, _BlobBusy) as e:
                    _log.warn(
                        "blob {key} is being collected during delivery (attempt {attempt}); "
                        "storing it again",
                        key=str(e),
                        attempt=attempt,
                        trace_id=trace_id,
                    )
                    if delay is None:
                        raise StorageUnavailable(
                            "blobs kept being collected during delivery"
                        ) from None
                    await task.deferLater(self._reactor, delay, lambda: None)
        finally:
            if any(piece.temporary for piece in prepared.pieces):
                await self._thread(prepared.remove_temporary)

    async def _store_blobs(self, prepared, disposable=False) -> dict[str, str]:
        """Lease every blob of the message, then put it; return the leased row generations.

        The lease (a ``blobs`` row touched before the put) is what keeps garbage collection
        away from a blob between its put and the commit that references it: see
        docs/storage.md for the argument. ``disposable``: the whole-message file may be
        taken by the blob store (split pieces are the store's own temporary files, always).
        """
        pieces = sorted(prepared.pieces, key=lambda p: p.key)

        async def lease(txn):
            now = now_ns()
            generations = {}
            for piece in pieces:
                row = await txn.execute_one(
                    "INSERT INTO blobs (blob_key, size_bytes, refcount, created_at, updated_at, "
                    "generation) VALUES (?, ?, 0, ?, ?, ?) "
                    "ON CONFLICT (blob_key) DO UPDATE SET updated_at = ? "
                    "WHERE blobs.refcount >= 0 RETURNING generation",
                    (piece.key, piece.size, now, now, new_id(), now),
                )
                if row is None:
                    # The row exists with refcount < 0: garbage collection claimed it.
                    raise _BlobBusy(piece.key)
                generations[piece.key] = row["generation"]
            return generations

        generations = await self._run_grouped("lease_blobs", lease)
        for piece in prepared.pieces:
            ref = await self.blobs.put_file(
                piece.path,
                sha256=piece.key,
                size=piece.size,
                link=piece.temporary or disposable,
            )
            if ref.key != piece.key:
                raise StorageUnavailable(f"blob store named {piece.key} {ref.key}")
        if self.before_commit is not None:
            await defer.maybeDeferred(self.before_commit, [p.key for p in pieces])
        return generations

    def _commit_delivery(
        self,
        prepared,
        generations,
        parsed,
        deliveries,
        trace_id,
        auth_results,
        internal_date,
        received=(),
        spam_score=0.0,
    ):
        """One transaction: blob references, the message row, its placements, quotas, and
        the ``message.received`` events (after the routing rules ran, as API.md 5.2 says)."""

        async def txn_fn(txn):
            placed, message_id = await self._insert_delivery(
                txn,
                prepared,
                generations,
                parsed,
                deliveries,
                trace_id,
                auth_results,
                internal_date,
                spam_score,
            )
            if received:
                await self._record_received(txn, received, placed, message_id, trace_id)
            return placed, message_id

        d = self._run_grouped("deliver", txn_fn)

        def unknown(failure):
            failure.trap(KeyError)
            raise ValueError(str(failure.value))

        return d.addErrback(unknown)

    async def _insert_delivery(
        self,
        txn,
        prepared,
        generations,
        parsed,
        deliveries,
        trace_id,
        auth_results,
        internal_date,
        spam_score=0.0,
    ):
        """The delivery's rows in ``txn``: blob references, the message, its placements, quotas.

        Fire with ``(placed, message_id)``; raise ``OverQuota`` when no placement fits and
        ``KeyError`` for a missing folder. MULTIAPPEND runs it once per message in one
        transaction (``store/batch.py``). Routing rules run on a placement whose delivery asks
        for them, and a placement is announced where it ended up.
        """
        internal = internal_date or now_ns()
        message_id = new_id()
        size = prepared.size
        now = now_ns()
        await self._reference_blobs(txn, generations, now)
        await self._insert_message(
            txn, message_id, prepared, parsed, trace_id, auth_results, now, spam_score
        )
        placements, seen = [], set()
        for delivery in deliveries:
            key = (delivery.mailbox_id, delivery.folder)
            if key not in seen:
                seen.add(key)
                placements.append(delivery)
        refusals = await self._charge_quota(txn, [p.mailbox_id for p in placements], size)
        placed, over_quota = [], []
        for delivery, refused in zip(placements, refusals, strict=True):
            if refused:
                over_quota.append(f"{delivery.mailbox_id} ({refused} quota)")
                continue
            mm = await self._place_message(
                txn, message_id, delivery, size, internal, now, announce=False
            )
            for label_id in delivery.labels:  # LabelsMixin (IMAP APPEND into a label)
                await self._attach_label(txn, mm, label_id)
            others = []
            if delivery.apply_rules:  # RulesMixin (API.md 1.5), in this transaction
                mm, others = await self._apply_routing_rules(txn, mm, delivery, parsed, size)
            placed.append(mm)
            if mm.deleted_at is None:
                await self._announce(
                    txn,
                    mm.mailbox_id,
                    {"type": "exists", "folder_id": mm.folder_id, "uid": mm.uid, "id": mm.id},
                )
            for mailbox_id, change in others:
                await self._announce(txn, mailbox_id, change)
        if not placed:
            raise OverQuota(", ".join(over_quota))
        return placed, message_id

    @staticmethod
    async def _reference_blobs(txn, generations, now):
        """Count one more reference on each leased blob; ``_LeaseLost`` if garbage collection
        claimed one since the lease (its object may be gone)."""
        for key in sorted(generations):
            await txn.execute(
                "UPDATE blobs SET refcount = refcount + 1, updated_at = ? "
                "WHERE blob_key = ? AND generation = ? AND refcount >= 0",
                (now, key, generations[key]),
            )
            if txn.rowcount != 1:
                raise _LeaseLost(key)

    @staticmethod
    async def _insert_message(
        txn, message_id, prepared, parsed, trace_id, auth_results, now, spam_score=0.0
    ):
        """The ``messages`` row of a stored message."""
        await txn.execute(
            "INSERT INTO messages (id, trace_id, rfc_message_id, blob_key, sha256, size_bytes, "
            "headers, from_addresses, to_addresses, cc_addresses, bcc_addresses, subject, "
            "date, text_body_extract, html_body_extract, attachments, spam_score, "
            "auth_results, envelope, body, bodystructure, header_size, parts, layout, "
            "header_fields, created_at, updated_at, view_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message_id,
                trace_id,
                _text(parsed.rfc_message_id),
                prepared.blob_key,
                prepared.sha256,
                prepared.size,
                _json(parsed.headers),
                _json(parsed.from_addresses),
                _json(parsed.to_addresses),
                _json(parsed.cc_addresses),
                _json(parsed.bcc_addresses),
                _text(parsed.subject),
                parsed.date,
                _text(parsed.text_body_extract),
                _text(parsed.html_body_extract),
                _json(parsed.attachments),
                float(spam_score),
                _json(auth_results or {}),
                _text(parsed.envelope),
                _text(parsed.body),
                _text(parsed.bodystructure),
                parsed.header_size,
                _json(parsed.parts),
                _json(prepared.layout) if prepared.layout else None,
                parsed.header_fields,
                now,
                now,
                stored_view_json(
                    message_id, prepared, parsed, trace_id, auth_results, now, spam_score
                ),
            ),
        )

    async def _place_message(self, txn, message_id, delivery, size, internal, now, announce=True):
        """Place the message in ``delivery``'s folder (quota already charged): take a UID and a
        MODSEQ, insert the row, announce it unless told not to. Return the ``MailboxMessage``
        (built from what was inserted: nothing is read back)."""
        folder_id, uid, modseq = await self._take_uid(txn, delivery.mailbox_id, delivery.folder)
        columns, keywords = _flag_columns(delivery.flags)
        row_id = new_id()
        await txn.execute(
            "INSERT INTO mailbox_messages (id, mailbox_id, message_id, folder_id, uid, "
            "modseq, original_rcpt, base_rcpt, plus_tag, resolved_route_id, read, "
            "flagged, answered, draft, imap_deleted, keywords, internal_date, size_bytes, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?)",
            (
                row_id,
                delivery.mailbox_id,
                message_id,
                folder_id,
                uid,
                modseq,
                delivery.original_rcpt,
                delivery.base_rcpt,
                delivery.plus_tag,
                delivery.route_id,
                columns["read"],
                columns["flagged"],
                columns["answered"],
                columns["draft"],
                columns["imap_deleted"],
                _json(keywords),
                internal,
                size,
                now,
                now,
            ),
        )
        mm = MailboxMessage(
            id=row_id,
            mailbox_id=delivery.mailbox_id,
            message_id=message_id,
            folder_id=folder_id,
            uid=uid,
            modseq=modseq,
            original_rcpt=delivery.original_rcpt,
            base_rcpt=delivery.base_rcpt,
            plus_tag=delivery.plus_tag,
            resolved_route_id=delivery.route_id,
            keywords=tuple(keywords),
            internal_date=internal,
            size_bytes=size,
            created_at=now,
            updated_at=now,
            deleted_at=None,
            **columns,
        )
        if announce:
            await self._announce(
                txn,
                mm.mailbox_id,
                {"type": "exists", "folder_id": mm.folder_id, "uid": mm.uid, "id": mm.id},
            )
        return mm

    @staticmethod
    async def _take_uid(txn, mailbox_id, name) -> tuple[str, int, int]:
        """Take the next UID and MODSEQ of the mailbox's folder ``name`` in one statement (the
        UPDATE locks the folder row, RETURNING reads what it wrote); fire with ``(folder id,
        uid, modseq)``. ``KeyError`` if there is no such folder."""
        if name.upper() == "INBOX":
            where, params = "mailbox_id = ? AND UPPER(name) = 'INBOX'", (mailbox_id,)
        else:
            where, params = "mailbox_id = ? AND name = ?", (mailbox_id, name)
        row = await txn.execute_one(
            "UPDATE folders SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1, "
            f"updated_at = ? WHERE {where} RETURNING id, uid_next, highest_modseq",
            (now_ns(), *params),
        )
        if row is None:
            raise KeyError(f"no folder {name!r} in {mailbox_id}")
        return row["id"], row["uid_next"] - 1, row["highest_modseq"]

    def list_folder_messages(self, folder_id):
        async def txn_fn(txn):
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                "AND mm.deleted_at IS NULL ORDER BY mm.uid",
                (folder_id,),
            )
            # A large folder's rows repeat the same few strings (mailbox, folder, recipient,
            # keywords): one object each instead of one per row. An IMAP session keeps these
            # rows while the folder is selected.
            shared: dict = {}
            for r in rows:
                for key in _REPEATED_COLUMNS:
                    value = r[key]
                    if value is not None:
                        r[key] = shared.setdefault(value, value)
            return [_mailbox_message(r) for r in rows]

        return self._run("list_folder_messages", txn_fn, readonly=True)

    def get_messages(self, folder_id, uids):
        uids = sorted(set(int(u) for u in uids))

        async def txn_fn(txn):
            out = []
            for start in range(0, len(uids), 500):
                clause, params = txn.in_clause("mm.uid", uids[start : start + 500])
                rows = await txn.execute(
                    f"SELECT {_MM_COLUMNS}, {_MSG_COLUMNS} FROM mailbox_messages mm "
                    "JOIN messages m ON m.id = mm.message_id WHERE mm.folder_id = ? "
                    f"AND mm.deleted_at IS NULL AND {clause} ORDER BY mm.uid",
                    (folder_id, *params),
                )
                out.extend((_mailbox_message(r), _message_info(r)) for r in rows)
            return out

        if not uids:
            return defer.succeed([])
        return self._run("get_messages", txn_fn, readonly=True)

    def get_message_view(self, mailbox_message_id):
        async def txn_fn(txn):
            return await _live_entry(txn, mailbox_message_id)

        return self._run("get_message_view", txn_fn, readonly=True)

    def list_messages(
        self, mailbox_id, folder_id=None, read=None, flagged=None, limit=50, before=None
    ):
        async def txn_fn(txn):
            where, params = _page_where("mm.", before)
            where += ["mm.mailbox_id = ?", "mm.deleted_at IS NULL"]
            params.append(mailbox_id)
            if folder_id:
                where.append("mm.folder_id = ?")
                params.append(folder_id)
            if read is not None:
                where.append("mm.read = ?")
                params.append(bool(read))
            if flagged is not None:
                where.append("mm.flagged = ?")
                params.append(bool(flagged))
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS}, {_MSG_COLUMNS} FROM mailbox_messages mm "
                "JOIN messages m ON m.id = mm.message_id WHERE "
                + " AND ".join(where)
                + " ORDER BY mm.created_at DESC, mm.id DESC LIMIT ?",
                (*params, limit),
            )
            return [(_mailbox_message(r), _message_info(r)) for r in rows]

        return self._run("list_messages", txn_fn, readonly=True)

    def open_message(self, info):
        """Fire with a binary file of the whole message as received, positioned at 0, which
        the caller closes. Seekable; memory does not depend on the message's size."""
        return defer.Deferred.fromCoroutine(self._open_message(info))

    async def _open_message(self, info):
        if not info.layout:
            return await self.blobs.open(info.blob_key)
        files = {}
        try:
            for key, _, _ in info.segments:
                if key not in files:
                    files[key] = await self.blobs.open(key)
        except BaseException:
            for f in files.values():
                f.close()
            raise
        return layoutmod.SegmentReader(files, info.segments)

    def read_message(self, info, start=0, length=None):
        """Fire with ``length`` bytes (to the end if None) of the message from ``start``: for
        headers and other small ranges; stream large ones from ``open_message``."""
        return defer.Deferred.fromCoroutine(self._read_message(info, start, length))

    async def _read_message(self, info, start, length):
        if not info.layout:
            return await self.blobs.read(info.blob_key, start, length)
        end = info.size_bytes if length is None else min(info.size_bytes, start + length)
        out = []
        position = 0
        for key, offset, size in info.segments:
            low, high = max(start, position), min(end, position + size)
            if low < high:
                out.append(await self.blobs.read(key, offset + low - position, high - low))
            position += size
            if position >= end:
                break
        return b"".join(out)

    def search_messages(self, mailbox_id, terms, folder_id=None, limit=50, before=None):
        async def txn_fn(txn):
            where, params = _page_where("mm.", before)
            match, match_params = txn.search_clause("m", terms)
            where += ["mm.mailbox_id = ?", "mm.deleted_at IS NULL", match]
            params += [mailbox_id, *match_params]
            if folder_id:
                where.append("mm.folder_id = ?")
                params.append(folder_id)
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS}, {_MSG_COLUMNS} FROM mailbox_messages mm "
                "JOIN messages m ON m.id = mm.message_id WHERE "
                + " AND ".join(where)
                + " ORDER BY mm.created_at DESC, mm.id DESC LIMIT ?",
                (*params, limit),
            )
            return [(_mailbox_message(r), _message_info(r)) for r in rows]

        return self._run("search_messages", txn_fn, readonly=True)

    def store_flags(self, folder_id, uids, flags, mode):
        if mode not in ("=", "+", "-"):
            raise ValueError(f"bad flag mode {mode!r}")
        uids = sorted(set(int(u) for u in uids))
        wanted_columns, wanted_keywords = _flag_columns(flags)
        wanted_system = {c for c, on in wanted_columns.items() if on}

        async def txn_fn(txn):
            changed = []
            for start in range(0, len(uids), 500):
                clause, params = txn.in_clause("mm.uid", uids[start : start + 500])
                rows = await txn.execute(
                    f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                    f"AND mm.deleted_at IS NULL AND {clause} ORDER BY mm.uid" + txn.for_update,
                    (folder_id, *params),
                )
                for row in rows:
                    mm = await self._apply_flags(
                        txn, folder_id, _mailbox_message(row), mode, wanted_system, wanted_keywords
                    )
                    if mm is not None:
                        changed.append(mm)
            return changed

        return self._run("store_flags", txn_fn) if uids else defer.succeed([])

    async def _apply_flags(self, txn, folder_id, current, mode, wanted_system, wanted_keywords):
        """Change one locked row's flags in ``txn``; return the new row, or None when the flags
        are already as asked (then its MODSEQ stays: nothing changed for CONDSTORE clients)."""
        before = {c for c in FLAG_COLUMNS.values() if getattr(current, c)}
        system = set(before)
        keywords = list(current.keywords)
        if mode == "=":
            system, keywords = set(wanted_system), list(wanted_keywords)
        elif mode == "+":
            system |= wanted_system
            keywords += [k for k in wanted_keywords if k not in keywords]
        else:
            system -= wanted_system
            keywords = [k for k in keywords if k not in wanted_keywords]
        if system == before and keywords == list(current.keywords):
            return None
        modseq = await self._bump_modseq(txn, folder_id)
        sets = ", ".join(f"{c} = ?" for c in FLAG_COLUMNS.values())
        await txn.execute(
            f"UPDATE mailbox_messages SET {sets}, keywords = ?, modseq = ?, "
            "updated_at = ? WHERE id = ?",
            (
                *(c in system for c in FLAG_COLUMNS.values()),
                _json(keywords),
                modseq,
                now_ns(),
                current.id,
            ),
        )
        row = await txn.execute_one(
            f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.id = ?", (current.id,)
        )
        mm = _mailbox_message(row)
        await self._announce(
            txn,
            mm.mailbox_id,
            {
                "type": "flags",
                "folder_id": folder_id,
                "uid": mm.uid,
                "id": mm.id,
                "flags": list(mm.flags),
            },
        )
        return mm

    def expunge(self, folder_id, uids=None):
        async def txn_fn(txn):
            folder = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            if folder is None:
                return []
            folder = _folder(folder)
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                "AND mm.deleted_at IS NULL AND mm.imap_deleted = ? ORDER BY mm.uid"
                + txn.for_update,
                (folder_id, True),
            )
            targets = [_mailbox_message(r) for r in rows]
            if uids is not None:
                allowed = set(int(u) for u in uids)
                targets = [t for t in targets if t.uid in allowed]
            await self._remove_placements(txn, folder, targets, to_trash=True)
            return [mm.uid for mm in targets]

        return self._run("expunge", txn_fn)

    async def _remove_placements(self, txn, folder, targets, to_trash):
        """Take ``targets`` (live rows of ``folder``) out of it in ``txn``: into the mailbox's
        Trash with new UIDs when ``to_trash`` and the folder is not Trash itself (and has one),
        else soft-deleted with their size released from the quota. Records the vanished UIDs
        (QRESYNC) and announces the expunges and the arrivals in Trash."""
        trash = None
        if to_trash and folder.special_use != "\\Trash":
            row = await txn.execute_one(
                "SELECT * FROM folders WHERE mailbox_id = ? AND special_use = '\\Trash'",
                (folder.mailbox_id,),
            )
            trash = _folder(row) if row else None
        now = now_ns()
        moved = []
        for mm in targets:
            if trash is None:
                await txn.execute(
                    "UPDATE mailbox_messages SET deleted_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, mm.id),
                )
                await txn.execute(
                    "UPDATE mailboxes SET used_bytes = used_bytes - ? WHERE id = ?",
                    (mm.size_bytes, mm.mailbox_id),
                )
            else:
                uid, modseq = await self._allocate_uid(txn, trash.id)
                await txn.execute(
                    "UPDATE mailbox_messages SET folder_id = ?, uid = ?, modseq = ?, "
                    "imap_deleted = ?, updated_at = ? WHERE id = ?",
                    (trash.id, uid, modseq, False, now, mm.id),
                )
                moved.append((mm, uid))
        await record_vanished(txn, folder.id, [mm.uid for mm in targets])
        for mm in targets:
            await self._announce(
                txn,
                mm.mailbox_id,
                {"type": "expunge", "folder_id": folder.id, "uid": mm.uid, "id": mm.id},
            )
        for mm, uid in moved:
            await self._announce(
                txn,
                mm.mailbox_id,
                {"type": "exists", "folder_id": trash.id, "uid": uid, "id": mm.id},
            )

    def delete_messages(self, folder_id, uids, to_trash=True):
        """Remove the live messages with these UIDs from the folder, whatever their flags: moved
        to Trash when ``to_trash`` (and the folder is not Trash), else soft-deleted with the quota
        released. Fire with the removed UIDs; UIDs already gone are skipped.

        POP3 applies DELE at QUIT with this. Unlike ``expunge`` it does not depend on
        ``\\Deleted``, so an IMAP client's flags never widen or narrow what a POP3 client deleted.
        """
        uids = sorted(set(int(u) for u in uids))

        async def txn_fn(txn):
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                return []
            folder = _folder(row)
            targets = []
            for start in range(0, len(uids), 500):
                clause, params = txn.in_clause("mm.uid", uids[start : start + 500])
                rows = await txn.execute(
                    f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                    f"AND mm.deleted_at IS NULL AND {clause} ORDER BY mm.uid" + txn.for_update,
                    (folder_id, *params),
                )
                targets.extend(_mailbox_message(r) for r in rows)
            await self._remove_placements(txn, folder, targets, to_trash)
            return [mm.uid for mm in targets]

        if not uids:
            return defer.succeed([])
        return self._run("delete_messages", txn_fn)
