"""Debian's mail fetchers and synchronizers against haitatsu over plaintext IMAP on loopback:
fetchmail (new mail only, then fetch all and delete; byte for byte) and offlineimap (a two-way
sync of a folder tree with flags both ways). Each is skipped with a reason when not installed;
``./dev test`` installs them. (isync's mbsync is in test_clients_folders.py.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap

from twisted.internet import threads

from tests.client_tools import FETCHMAIL_SKIP, NearMaildir, client_env, run_fetchmail
from tests.imap.helpers import ADDRESS, EIGHT_BIT, MULTIPART, SIMPLE
from tests.imap.test_clients_folders import _Listening, _TwoWaySync
from tests.imap.test_session import d

OFFLINEIMAP = shutil.which("offlineimap")


class FetchmailIMAPTests(_Listening):
    skip = FETCHMAIL_SKIP
    timeout = 120

    def fetchmail(self, port: int, options: str, name: str) -> tuple[int, list[bytes], str]:
        """Run fetchmail once over IMAP with its own rcfile; return its exit code, the
        messages its MDA wrote (in order), and its output."""
        return run_fetchmail(
            os.path.join(self.root, name),
            f"127.0.0.1 service {port} proto IMAP auth password timeout 20",
            f'user "{ADDRESS}" password "{self.password}" folder INBOX',
            options,
        )

    @d
    async def test_new_mail_then_fetch_all_and_delete_byte_exact(self):
        self.root = self.mktemp()
        await self.deliver(SIMPLE)
        await self.deliver(MULTIPART, flags=["\\Seen"])
        await self.deliver(EIGHT_BIT)
        port = self.listen()
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")

        # keep: only the unseen messages, byte for byte; fetchmail marks them \Seen.
        code, messages, log = await threads.deferToThread(self.fetchmail, port, "keep", "keep")
        self.assertEqual(code, 0, log)
        self.assertEqual(messages, [SIMPLE, EIGHT_BIT])
        rows = await self.store.list_folder_messages(inbox.id)
        self.assertEqual(
            [(r.uid, r.read, r.imap_deleted) for r in rows],
            [
                (1, True, False),
                (2, True, False),
                (3, True, False),
            ],
        )
        # Nothing new now (exit code 1: no mail).
        code, messages, log = await threads.deferToThread(self.fetchmail, port, "keep", "again")
        self.assertEqual((code, messages), (1, []), log)

        # A new delivery is fetched alone; then fetchall nokeep takes everything and
        # deletes it: \Deleted and EXPUNGE, so the messages go to Trash.
        await self.deliver(SIMPLE.replace(b"Lunch on Friday", b"Dinner"))
        code, messages, log = await threads.deferToThread(self.fetchmail, port, "keep", "new")
        self.assertEqual(messages, [SIMPLE.replace(b"Lunch on Friday", b"Dinner")], log)
        code, messages, log = await threads.deferToThread(
            self.fetchmail, port, "fetchall nokeep", "all"
        )
        self.assertEqual(code, 0, log)
        self.assertEqual(len(messages), 4)
        self.assertEqual(messages[:3], [SIMPLE, MULTIPART, EIGHT_BIT])
        self.assertRegex(log, r"IMAP> A\d+ STORE 1 \+FLAGS \([^)]*\\Deleted\)")
        self.assertIn("IMAP< * 1 EXPUNGE", log)
        self.assertEqual(await self.store.list_folder_messages(inbox.id), [])
        trash = await self.store.get_folder(self.mailbox.id, "Trash")
        self.assertEqual(len(await self.store.list_folder_messages(trash.id)), 4)


class OfflineIMAPTests(_TwoWaySync):
    """offlineimap (Debian's offlineimap3) between haitatsu and a Maildir tree."""

    skip = None if OFFLINEIMAP else "offlineimap is not installed (apt-get install -y offlineimap3)"
    timeout = 180

    def write_config(self, port: int) -> str:
        root = os.path.abspath(self.mktemp())
        self.home = root
        self.maildir = os.path.join(root, "mail")
        os.makedirs(self.maildir)
        self.near = NearMaildir(self.maildir)
        path = os.path.join(root, "offlineimaprc")
        with open(path, "w") as f:
            f.write(
                textwrap.dedent(
                    f"""\
                    [general]
                    accounts = haitatsu
                    metadata = {root}/metadata
                    ui = basic

                    [Account haitatsu]
                    localrepository = near
                    remoterepository = far

                    [Repository near]
                    type = Maildir
                    localfolders = {self.maildir}
                    sep = /

                    [Repository far]
                    type = IMAP
                    remotehost = 127.0.0.1
                    remoteport = {port}
                    remoteuser = {ADDRESS}
                    remotepass = {self.password}
                    ssl = no
                    starttls = no
                    maxconnections = 1
                    folderfilter = lambda name: name not in ("Trash", "Junk")
                    createfolders = True
                    """
                )
            )
        return path

    def sync(self, config) -> str:
        result = subprocess.run(
            [OFFLINEIMAP, "-c", config, "-o", "-u", "basic"],
            env=client_env(self.home),
            capture_output=True,
            timeout=90,
        )
        log = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode != 0 or re.search(r"^ERROR|Traceback", log, re.M):
            raise AssertionError(f"offlineimap failed ({result.returncode}):\n{log[-4000:]}")
        return log

    async def far_flags(self, folder_name) -> dict[str, set]:
        folder = await self.store.get_folder(self.mailbox.id, folder_name)
        rows = await self.store.list_folder_messages(folder.id)
        found = {}
        for row, info in await self.store.get_messages(folder.id, [r.uid for r in rows]):
            found[info.subject] = set(row.flags)
        return found

    async def sync_once(self, config) -> str:
        return await threads.deferToThread(self.sync, config)

    @d
    async def test_two_way_sync_of_a_folder_tree_with_flags(self):
        config = await self.first_sync()
        await self.change_both_sides()
        # ... and a new message in the near INBOX.
        with open(os.path.join(self.maildir, "INBOX", "new", "1700000001.2.host"), "wb") as f:
            f.write(SIMPLE.replace(b"Lunch on Friday", b"written here"))

        await self.sync_once(config)
        self.assertEqual(
            await self.far_flags("INBOX"),
            {"one": {"\\Seen"}, "two": {"\\Answered"}, "three": set(), "written here": set()},
        )
        self.assertEqual(
            await self.far_flags("Projects/Alpha"), {"Report attached": {"\\Seen", "\\Answered"}}
        )
        self.assertEqual(await self.far_flags("Local"), {"local": {"\\Seen", "\\Flagged"}})
        self.assertEqual(
            self.near.messages("INBOX"), {"one": "S", "two": "R", "three": "", "written here": ""}
        )

        # A third run has nothing to do and changes nothing.
        await self.sync_once(config)
        self.assertEqual(
            self.near.messages("INBOX"), {"one": "S", "two": "R", "three": "", "written here": ""}
        )
        self.assertEqual(len(await self.far_flags("INBOX")), 4)
        self.assertEqual(len(await self.far_flags("Local")), 1)
