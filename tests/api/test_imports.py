"""Import jobs over HTTP (API.md 1.13), run by the real job worker, on SQLite and PostgreSQL:
a Maildir and mbox files on disk, a ZIP in the blob store (our own export), and a live IMAP
server (haitatsu itself on another port), each imported with flags, internal dates and folders
intact; imports that stop half-way and are claimed again store nothing twice."""

from __future__ import annotations

import io
import os
import tempfile
import time
import zipfile

import attrs
from twisted.internet import reactor, task
from twisted.trial import unittest

from haitatsu.config.model import Config, ImportsConfig, LimitsConfig
from haitatsu.imap import IMAPFactory
from haitatsu.jobs import JobWorker
from haitatsu.jobs.importer import Importer, open_source
from haitatsu.storage.records import Delivery
from tests.api.client import APIClient, LiveConfig
from tests.jobs.fixtures import build_maildir, build_mbox, crlf, lf_message
from tests.support import PG_SKIP, MotoS3Mixin, make_pg_store, make_s3_store, make_store


def dying_importer(store, job, fence, source, after: int) -> Importer:
    """An importer whose node dies once it has stored ``after`` messages."""
    importer = Importer(store, job, fence, source)

    def check():
        if importer.imported >= after:
            raise RuntimeError("the node died")

    importer.check = check
    return importer


class ImportTests:
    async def make(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = await self.make()
        base = self.mktemp()
        self.import_root = os.path.join(base, "import-root")
        os.makedirs(self.import_root)
        self.config = LiveConfig()
        self.configure()
        self.client = APIClient(self.store, config=self.config)
        self.spool = os.path.join(base, "spool")
        self.mailbox = await self.store.create_mailbox("alice@example.com")

    def configure(self, **limits):
        self.config.config = attrs.evolve(
            self.config.config,
            imports=ImportsConfig(root=self.import_root),
            limits=LimitsConfig(**limits),
        )

    def worker(self, clock=None, node="node-1"):
        return JobWorker(self.store, self.config, reactor, self.spool, clock=clock, node=node)

    async def create(self, source_type, source, mailbox_id=None, status=201):
        answer = await self.client.post(
            f"/api/v1/mailboxes/{mailbox_id or self.mailbox.id}/import",
            {"source_type": source_type, "source": source},
        )
        self.assertEqual(answer.status, status, answer.body)
        return answer.json.get("data") or answer.json

    async def run_import(self, source_type, source, mailbox_id=None):
        job = await self.create(source_type, source, mailbox_id)
        self.assertEqual(job["status"], "queued")
        await self.worker().process_due()
        answer = await self.client.get(f"/api/v1/imports/{job['id']}")
        self.assertEqual(answer.status, 200)
        return answer.json["data"]

    async def contents(self, mailbox_id=None):
        """``{folder name: {bytes: (flags, internal date)}}`` of a mailbox's live messages."""
        mailbox_id = mailbox_id or self.mailbox.id
        out = {}
        for folder in await self.store.list_folders(mailbox_id):
            rows = await self.store.list_folder_messages(folder.id)
            found = {}
            for row, info in await self.store.get_messages(folder.id, [r.uid for r in rows]):
                data = await self.store.read_message(info)
                self.assertNotIn(data, found, f"{data!r} twice in {folder.name}")
                found[data] = (frozenset(row.flags), row.internal_date)
            out[folder.name] = found
        return out

    def assert_imported(self, contents, expected):
        for item in expected:
            folder = contents.get(item.folder, {})
            self.assertIn(item.data, folder, f"{item.data[:60]!r} not in {item.folder}")
            flags, date = folder[item.data]
            self.assertEqual(flags, item.flags, item.data[:60])
            if item.internal_date is not None:
                self.assertEqual(date, item.internal_date, item.data[:60])
        total = sum(len(v) for v in contents.values())
        self.assertEqual(total, len(expected))

    # -- the request ----------------------------------------------------------------------

    async def test_request_errors(self):
        path = f"/api/v1/mailboxes/{self.mailbox.id}/import"
        cases = [
            ({}, "source_type_required"),
            ({"source_type": ""}, "source_type_required"),
            ({"source_type": "pst", "source": {}}, "source_type_invalid"),
            ({"source_type": "imap", "source": {}}, "source_invalid"),
            ({"source_type": "imap", "source": {"addr": "no-port"}}, "source_invalid"),
            ({"source_type": "zip", "source": {}}, "source_invalid"),
            ({"source_type": "zip", "source": {"key": "../../etc/passwd"}}, "source_invalid"),
            ({"source_type": "maildir", "source": {}}, "source_invalid"),
            ({"source_type": "maildir", "source": {"path": "../../etc"}}, "source_invalid"),
            ({"source_type": "mbox", "source": {"path": "/etc/passwd"}}, "source_invalid"),
            ({"source_type": "maildir", "source": "nope"}, "source_invalid"),
        ]
        for body, code in cases:
            answer = await self.client.post(path, body)
            self.assertEqual((answer.status, answer.json["error"]["code"]), (400, code), body)
        answer = await self.client.post(path, body=b"{nope")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (400, "invalid_request"))
        self.assertEqual(await self.store.list_jobs("import"), [])

    async def test_paths_need_an_import_root(self):
        self.config.config = attrs.evolve(self.config.config, imports=ImportsConfig(root=""))
        answer = await self.client.post(
            f"/api/v1/mailboxes/{self.mailbox.id}/import",
            {"source_type": "maildir", "source": {"path": "Maildir"}},
        )
        self.assertEqual(answer.status, 400)
        self.assertEqual(answer.json["error"]["code"], "source_invalid")
        self.assertIn("imports.root", answer.json["error"]["message"])

    async def test_job_object_list_and_redaction(self):
        other = await self.store.create_mailbox("other@example.com")
        source = {"addr": "imap.example.com:993", "username": "u", "password": "hunter2"}
        job = await self.create("imap", source)
        self.assertEqual(
            set(job),
            {"id", "mailbox_id", "source_type", "source", "status", "created_at", "updated_at"},
        )
        self.assertEqual(job["source"]["password"], "[redacted]")
        self.assertEqual(job["source"]["username"], "u")
        self.assertNotIn("hunter2", str(job))
        second = await self.create("zip", {"object_key": "imports/x.zip"}, other.id)
        answer = await self.client.get("/api/v1/imports")
        self.assertEqual([j["id"] for j in answer.json["data"]], [second["id"], job["id"]])
        self.assertNotIn(b"hunter2", answer.body)
        answer = await self.client.get(f"/api/v1/imports?mailbox_id={other.id}")
        self.assertEqual([j["id"] for j in answer.json["data"]], [second["id"]])
        answer = await self.client.get(f"/api/v1/imports/{job['id']}")
        self.assertEqual(answer.json["data"]["source"]["password"], "[redacted]")
        answer = await self.client.get("/api/v1/imports/01JNOSUCHIMPORT00000000000")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "import_not_found"))

    # -- maildir and mbox -----------------------------------------------------------------

    async def test_maildir_with_flags_folders_and_dates(self):
        expected = build_maildir(os.path.join(self.import_root, "alice", "Maildir"))
        job = await self.run_import("maildir", {"path": "alice/Maildir"})
        self.assertEqual(job["status"], "completed", job)
        self.assertEqual(job["imported_count"], len(expected))
        self.assertNotIn("last_error", job)
        contents = await self.contents()
        self.assert_imported(contents, expected)
        self.assertEqual(contents["Empty"], {})
        self.assertIn("Work", contents)
        self.assertNotIn(b"secret", b"".join(b for f in contents.values() for b in f))
        mailbox = await self.store.get_mailbox(self.mailbox.id)
        self.assertEqual(mailbox.used_bytes, sum(len(e.data) for e in expected))
        [event] = await self.store.list_events(event_type="mailbox.import_completed")
        self.assertEqual(event.payload["imported_count"], len(expected))

        # The same source again: every message is already there.
        again = await self.run_import("maildir", {"path": "alice/Maildir"})
        self.assertEqual((again["status"], again.get("imported_count", 0)), ("completed", 0))
        self.assert_imported(await self.contents(), expected)

    async def test_mbox_file_and_directory(self):
        expected = build_mbox(os.path.join(self.import_root, "alice.mbox"))
        job = await self.run_import("mbox", {"path": "alice.mbox"})
        self.assertEqual((job["status"], job["imported_count"]), ("completed", 3), job)
        self.assert_imported(await self.contents(), expected)

        other = await self.store.create_mailbox("bob@example.com")
        directory = os.path.join(self.import_root, "bob-mail")
        first = build_mbox(os.path.join(directory, "Inbox"))
        os.makedirs(os.path.join(directory, "Lists.sbd"))
        with open(os.path.join(directory, "Lists.sbd", "python"), "wb") as f:
            f.write(b"From x@example.org Mon Feb  5 09:00:00 2024\n" + lf_message(40, "list"))
        with open(os.path.join(directory, "Inbox.msf"), "wb") as f:
            f.write(b"// an index, not mail\n")
        job = await self.run_import("mbox", {"path": directory}, other.id)
        self.assertEqual((job["status"], job["imported_count"]), ("completed", 4), job)
        contents = await self.contents(other.id)
        self.assertEqual(set(contents["INBOX"]), {e.data for e in first})
        self.assertEqual(list(contents["Lists/python"]), [crlf(lf_message(40, "list"))])

    async def test_a_missing_path_fails_the_job_with_the_reason(self):
        job = await self.run_import("maildir", {"path": "nobody/Maildir"})
        self.assertEqual(job["status"], "failed")
        self.assertIn("not a directory", job["last_error"]["error"])
        [event] = await self.store.list_events(event_type="mailbox.import_failed")
        self.assertEqual(event.payload["error"], job["last_error"]["error"])

    async def test_an_unknown_mailbox_fails_the_job(self):
        build_maildir(os.path.join(self.import_root, "m"))
        job = await self.run_import("maildir", {"path": "m"}, "01JNOSUCHMAILBOX0000000000")
        self.assertEqual(
            (job["status"], job["last_error"]), ("failed", {"error": "mailbox not found"})
        )

    async def test_messages_over_the_size_limit_are_skipped_and_reported(self):
        expected = build_maildir(os.path.join(self.import_root, "m"))
        limit = 200
        self.configure(max_message_size_bytes=limit)
        job = await self.run_import("maildir", {"path": "m"})
        small = [e for e in expected if len(e.data) <= limit]
        self.assertTrue(0 < len(small) < len(expected))
        self.assertEqual((job["status"], job["imported_count"]), ("completed", len(small)))
        self.assertEqual(
            job["last_error"]["error"],
            f"skipped {len(expected) - len(small)} messages larger than {limit} bytes "
            "(limits.max_message_size_bytes)",
        )
        self.assert_imported(await self.contents(), small)

    async def test_an_import_cut_off_half_way_resumes_without_duplicates(self):
        expected = build_maildir(os.path.join(self.import_root, "m"))
        job = await self.create("maildir", {"path": "m"})
        # node-0 claims the job, stores three messages and dies.
        claimed, fence = await self.store.claim_job("import", "node-0", 300 * 10**9)
        source = open_source(claimed, self.import_root, self.store, self.spool, 10**6, reactor)
        os.makedirs(self.spool, exist_ok=True)
        with self.assertRaises(RuntimeError):
            await dying_importer(self.store, claimed, fence, source, after=3).run()
        row = await self.store.get_job("import", job["id"])
        self.assertEqual((row.status, row.imported_count), ("processing", 3))
        # Nobody else may take it while the lease runs ...
        self.assertEqual(await self.worker().process_due(), 0)
        # ... then another node does, and continues where node-0 stopped.
        later = task.Clock()
        later.advance(time.time() + 301)
        self.assertEqual(await self.worker(clock=later, node="node-2").process_due(), 1)
        done = (await self.client.get(f"/api/v1/imports/{job['id']}")).json["data"]
        self.assertEqual((done["status"], done["imported_count"]), ("completed", len(expected)))
        self.assert_imported(await self.contents(), expected)
        self.assertEqual((await self.store.get_job("import", job["id"])).attempts, 2)

    # -- zip ------------------------------------------------------------------------------

    async def test_an_export_imported_into_another_mailbox(self):
        messages = [
            b"From: a@example.org\r\nSubject: one\r\n\r\nOne.\r\n",
            b"From: b@example.org\nSubject: LF kept as is\n\nTwo.\n",
        ]
        for data in messages:
            fd, path = tempfile.mkstemp(suffix=".eml")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            await self.store.deliver(
                path,
                [Delivery(self.mailbox.id, flags=("\\Seen",))],
                trace_id="T",
                internal_date=1_600_000_000 * 10**9,
            )
            os.unlink(path)
        export = await self.client.post(f"/api/v1/mailboxes/{self.mailbox.id}/export")
        await self.worker().process_due()
        key = (await self.client.get(f"/api/v1/exports/{export.json['data']['id']}")).json["data"][
            "object_key"
        ]
        target = await self.store.create_mailbox("copy@example.com")
        job = await self.run_import("zip", {"object_key": key}, target.id)
        self.assertEqual((job["status"], job["imported_count"]), ("completed", 2), job)
        contents = await self.contents(target.id)
        self.assertEqual(set(contents["INBOX"]), set(messages))
        for flags, date in contents["INBOX"].values():
            self.assertEqual(date, 1_600_000_000 * 10**9)  # the entry's time, to the second
            self.assertEqual(flags, frozenset())

    async def test_zip_entries_other_than_eml_are_ignored(self):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("a/one.eml", b"Subject: one\r\n\r\n1\r\n")
            archive.writestr("README.txt", b"not mail")
            archive.writestr("b/TWO.EML", b"Subject: two\r\n\r\n2\r\n")
        path = os.path.join(self.mktemp() + ".zip")
        with open(path, "wb") as f:
            f.write(buffer.getvalue())
        await self.store.blobs.put_object("imports/upload.zip", path)
        job = await self.run_import("zip", {"key": "imports/upload.zip"})
        self.assertEqual((job["status"], job["imported_count"]), ("completed", 2), job)
        missing = await self.run_import("zip", {"key": "imports/none.zip"})
        self.assertEqual(missing["status"], "failed")
        self.assertIn("no object imports/none.zip", missing["last_error"]["error"])
        with open(path, "wb") as f:
            f.write(b"not a zip")
        await self.store.blobs.put_object("imports/bad.zip", path)
        bad = await self.run_import("zip", {"key": "imports/bad.zip"})
        self.assertIn("not a readable ZIP", bad["last_error"]["error"])

    # -- IMAP -----------------------------------------------------------------------------

    async def imap_source_server(self):
        """Another haitatsu (its own store) serving IMAP on a free loopback port, with a
        mailbox holding a folder tree and flagged messages; ``(port, password, expected)``."""
        source_store = await make_store(self)
        owner = await source_store.create_mailbox("carol@example.org")
        _, password = await source_store.create_app_password(owner.id, "import", ["imap"])
        for name in ("Work/Projects", "Spam", "Empty", "Été"):
            await source_store.create_folder(owner.id, name)
        base = 1_650_000_000
        placements = [
            ("INBOX", {"\\Seen", "\\Flagged"}, "INBOX"),
            ("INBOX", set(), "INBOX"),
            ("Sent", {"\\Seen"}, "Sent"),
            ("Work/Projects", {"\\Answered", "\\Draft", "$Label1"}, "Work/Projects"),
            ("Spam", {"\\Seen"}, "Junk"),
            ("Trash", {"\\Seen", "\\Deleted"}, "Trash"),
            ("Été", {"\\Seen"}, "Été"),
        ]
        expected = []
        from tests.jobs.fixtures import Expected

        for n, (folder, flags, local) in enumerate(placements):
            data = crlf(lf_message(50 + n, f"imap {n}"))
            fd, path = tempfile.mkstemp(suffix=".eml")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            await source_store.deliver(
                path,
                [Delivery(owner.id, folder=folder, flags=tuple(flags))],
                trace_id="T",
                internal_date=(base + n * 3600) * 10**9,
            )
            os.unlink(path)
            expected.append(Expected(local, data, frozenset(flags), (base + n * 3600) * 10**9))
        spool_dir = os.path.join(self.mktemp(), "spool")
        os.makedirs(spool_dir)
        factory = IMAPFactory(
            lambda: Config(limits=LimitsConfig(max_message_size_bytes=10**6)),
            source_store,
            reactor,
            spool_dir=spool_dir,
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.source_store, self.source_owner = source_store, owner
        return port.getHost().port, password, expected

    async def test_imap_from_a_live_haitatsu_with_flags_and_folders(self):
        port, password, expected = await self.imap_source_server()
        source = {
            "addr": f"127.0.0.1:{port}",
            "username": "carol@example.org",
            "password": password,
            "tls": False,
        }
        job = await self.run_import("imap", source)
        self.assertEqual(job["status"], "completed", job)
        self.assertEqual(job["imported_count"], len(expected))
        self.assertEqual(
            job["source"], {"addr": source["addr"], "username": source["username"], "tls": False}
        )
        contents = await self.contents()
        self.assert_imported(contents, expected)
        self.assertEqual(contents["Empty"], {})
        # Read with EXAMINE and BODY.PEEK: the source's unseen message is still unseen.
        inbox = await self.source_store.get_folder(self.source_owner.id, "INBOX")
        flags = [m.read for m in await self.source_store.list_folder_messages(inbox.id)]
        self.assertEqual(sorted(flags), [False, True])
        # No spool file left behind.
        self.assertEqual(os.listdir(self.spool), [])

    async def test_imap_only_the_folders_asked_for(self):
        port, password, expected = await self.imap_source_server()
        source = {
            "addr": f"127.0.0.1:{port}",
            "username": "carol@example.org",
            "password": password,
            "tls": False,
            "mailboxes": ["Work/Projects", "inbox"],
        }
        job = await self.run_import("imap", source)
        self.assertEqual(job["status"], "completed", job)
        wanted = [e for e in expected if e.folder in ("INBOX", "Work/Projects")]
        self.assert_imported(await self.contents(), wanted)

    async def test_imap_login_refused_fails_the_job(self):
        port, _, _ = await self.imap_source_server()
        source = {
            "addr": f"127.0.0.1:{port}",
            "username": "carol@example.org",
            "password": "wrong",
            "tls": False,
        }
        job = await self.run_import("imap", source)
        self.assertEqual(job["status"], "failed")
        self.assertIn("the IMAP server answered", job["last_error"]["error"])
        self.assertNotIn("password", job["source"])

    async def test_imap_nothing_listening(self):
        source = {"addr": "127.0.0.1:1", "username": "u", "password": "p", "tls": False}
        job = await self.run_import("imap", source)
        self.assertEqual(job["status"], "failed")
        self.assertIn("connection refused", job["last_error"]["error"])

    async def test_imap_import_resumes_after_the_last_uid(self):
        port, password, expected = await self.imap_source_server()
        source = {
            "addr": f"127.0.0.1:{port}",
            "username": "carol@example.org",
            "password": password,
            "tls": False,
        }
        job = await self.create("imap", source)
        claimed, fence = await self.store.claim_job("import", "node-0", 300 * 10**9)
        os.makedirs(self.spool, exist_ok=True)
        imap = open_source(claimed, self.import_root, self.store, self.spool, 10**6, reactor)
        with self.assertRaises(RuntimeError):
            await dying_importer(self.store, claimed, fence, imap, after=4).run()
        row = await self.store.get_job("import", job["id"])
        self.assertEqual((row.status, row.imported_count), ("processing", 4))
        later = task.Clock()
        later.advance(time.time() + 301)
        await self.worker(clock=later).process_due()
        done = (await self.client.get(f"/api/v1/imports/{job['id']}")).json["data"]
        self.assertEqual((done["status"], done["imported_count"]), ("completed", len(expected)))
        self.assert_imported(await self.contents(), expected)


class SQLiteImportTests(ImportTests, unittest.TestCase):
    timeout = 60

    async def make(self):
        return await make_store(self)


class PostgresImportTests(ImportTests, unittest.TestCase):
    skip = PG_SKIP
    timeout = 60

    async def make(self):
        return await make_pg_store(self)


class S3ZipImportTests(MotoS3Mixin, unittest.TestCase):
    """The ZIP read from S3 (PostgreSQL metadata when available, else SQLite)."""

    timeout = 60

    async def test_export_then_import_through_s3(self):
        store = await make_s3_store(self, self.moto, postgres=not PG_SKIP)
        config = LiveConfig()
        client = APIClient(store, config=config)
        source = await store.create_mailbox("a@example.com")
        target = await store.create_mailbox("b@example.com")
        data = b"From: x@example.org\r\nSubject: s3\r\n\r\n" + b"y" * 300_000 + b"\r\n"
        fd, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.addCleanup(os.unlink, path)
        await store.deliver(path, [Delivery(source.id)], trace_id="T")
        worker = JobWorker(store, config, reactor, self.mktemp(), node="n")
        export = (await client.post(f"/api/v1/mailboxes/{source.id}/export")).json["data"]
        await worker.process_due()
        key = f"exports/{export['id']}"
        answer = await client.post(
            f"/api/v1/mailboxes/{target.id}/import",
            {"source_type": "zip", "source": {"object_key": key}},
        )
        await worker.process_due()
        job = (await client.get(f"/api/v1/imports/{answer.json['data']['id']}")).json["data"]
        self.assertEqual((job["status"], job["imported_count"]), ("completed", 1), job)
        inbox = await store.get_folder(target.id, "INBOX")
        [row] = await store.list_folder_messages(inbox.id)
        [(_, info)] = await store.get_messages(inbox.id, [row.uid])
        self.assertEqual(await store.read_message(info), data)


class IMAPTLSImportTests(unittest.TestCase):
    """IMAP sources over TLS: implicit TLS and STARTTLS to a haitatsu IMAP server with a test
    CA's certificate (not in the system's trust store, so only ``skip_verify`` accepts it)."""

    timeout = 60

    async def setUp(self):
        from tests.tls.ca import TLSFixture

        self.store = await make_store(self)
        self.config = LiveConfig()
        self.client = APIClient(self.store, config=self.config)
        self.mailbox = await self.store.create_mailbox("alice@example.com")
        self.source_store = await make_store(self)
        owner = await self.source_store.create_mailbox("carol@example.org")
        _, self.password = await self.source_store.create_app_password(owner.id, "i", ["imap"])
        self.data = crlf(lf_message(70, "over TLS"))
        fd, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(fd, "wb") as f:
            f.write(self.data)
        self.addCleanup(os.unlink, path)
        await self.source_store.deliver(path, [Delivery(owner.id, flags=("\\Seen",))], trace_id="T")
        self.fixture = TLSFixture(self.mktemp())
        tls = self.fixture.service(reactor)
        spool_dir = self.mktemp()
        os.makedirs(spool_dir)
        factory = IMAPFactory(
            lambda: Config(limits=LimitsConfig(max_message_size_bytes=10**6)),
            self.source_store,
            reactor,
            spool_dir=spool_dir,
            tls=tls,
        )
        plain = reactor.listenTCP(0, factory, interface="127.0.0.1")
        implicit = reactor.listenTCP(0, tls.wrap_factory(factory), interface="127.0.0.1")
        self.addCleanup(plain.stopListening)
        self.addCleanup(implicit.stopListening)
        self.plain, self.implicit = plain.getHost().port, implicit.getHost().port

    async def run_import(self, **source):
        source = {"username": "carol@example.org", "password": self.password, **source}
        answer = await self.client.post(
            f"/api/v1/mailboxes/{self.mailbox.id}/import",
            {"source_type": "imap", "source": source},
        )
        self.assertEqual(answer.status, 201, answer.body)
        await JobWorker(self.store, self.config, reactor, self.mktemp(), node="n").process_due()
        return await self.store.get_job("import", answer.json["data"]["id"])

    async def inbox(self):
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        rows = await self.store.list_folder_messages(folder.id)
        out = []
        for row, info in await self.store.get_messages(folder.id, [r.uid for r in rows]):
            out.append((await self.store.read_message(info), row.read))
        return out

    async def test_implicit_tls(self):
        job = await self.run_import(addr=f"127.0.0.1:{self.implicit}", skip_verify=True)
        self.assertEqual((job.status, job.imported_count), ("completed", 1), job.last_error)
        self.assertEqual(await self.inbox(), [(self.data, True)])

    async def test_starttls(self):
        # The plain port refuses LOGIN before STARTTLS (LOGINDISABLED): only STARTTLS works.
        job = await self.run_import(addr=f"127.0.0.1:{self.plain}", starttls=True, skip_verify=True)
        self.assertEqual((job.status, job.imported_count), ("completed", 1), job.last_error)
        refused = await self.run_import(addr=f"127.0.0.1:{self.plain}", tls=False)
        self.assertEqual(refused.status, "failed")

    async def test_an_unknown_certificate_is_refused(self):
        job = await self.run_import(addr=f"127.0.0.1:{self.implicit}")
        self.assertEqual(job.status, "failed")
        self.assertIn("IMAP 127.0.0.1", job.last_error["error"])
        self.assertEqual(await self.inbox(), [])
