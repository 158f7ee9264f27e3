"""Real clients on loopback managing folders and moving mail: imapclient, and isync (mbsync)
doing a two-way sync of a folder tree with flags both ways."""

from __future__ import annotations

import os
import re
import shutil
import textwrap

import imapclient
from twisted.internet import threads, utils

from tests.client_tools import NearMaildir, listen
from tests.imap.helpers import ADDRESS, MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d


class _Listening(IMAPTestCase):
    def listen(self) -> int:
        return listen(self, self.factory)


class _TwoWaySync(_Listening):
    """The scenario of both Maildir synchronizers (mbsync, offlineimap): a folder tree with
    flags, synchronised, then changed on both sides. A subclass writes its config
    (``write_config(port)``, setting ``self.near``) and runs one sync (``sync_once``)."""

    async def first_sync(self) -> str:
        """Three messages in INBOX and Projects/Alpha, one sync; return the config."""
        await self.store.create_folder(self.mailbox.id, "Projects/Alpha")
        await self.deliver(SIMPLE.replace(b"Lunch on Friday", b"one"))
        await self.deliver(SIMPLE.replace(b"Lunch on Friday", b"two"), flags=["\\Flagged"])
        await self.deliver(MULTIPART, folder="Projects/Alpha", flags=["\\Seen"])
        config = self.write_config(self.listen())
        await self.sync_once(config)
        self.assertEqual(self.near.messages("INBOX"), {"one": "", "two": "F"})
        self.assertEqual(self.near.messages("Projects/Alpha"), {"Report attached": "S"})
        return config

    async def change_both_sides(self):
        """Near: a new folder Local with a message, flags changed on the old ones. Far: a
        flag changed and a message ("three") delivered. Return the far INBOX."""
        local = self.near.add_folder("Local")
        with open(os.path.join(local, "cur", "1700000000.1.host:2,FS"), "wb") as f:
            f.write(SIMPLE.replace(b"Lunch on Friday", b"local"))
        self.near.set_flags("INBOX", "one", "S")
        self.near.set_flags("Projects/Alpha", "Report attached", "RS")
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        await self.store.store_flags(inbox.id, [2], ["\\Flagged"], "-")
        await self.store.store_flags(inbox.id, [2], ["\\Answered"], "+")
        await self.deliver(SIMPLE.replace(b"Lunch on Friday", b"three"))
        return inbox


class IMAPClientFolderTests(_Listening):
    @d
    async def test_folders_copy_move_with_uidplus_results(self):
        await self.deliver(SIMPLE)
        await self.deliver(MULTIPART, flags=["\\Flagged"])
        port = self.listen()
        password = self.password

        def client():
            out = {}
            with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10) as c:
                c.login(ADDRESS, password)
                out["id"] = c.id_({"name": "imapclient"})
                out["enabled"] = c.enable("CONDSTORE")
                c.create_folder("Projekte/Entwürfe")
                out["exists"] = c.folder_exists("Projekte")
                c.rename_folder("Projekte", "Arbeit")
                out["tree"] = [f[2] for f in c.list_folders("", "Arbeit*")]
                c.select_folder("INBOX")
                out["copy"] = c.copy([1, 2], "Arbeit/Entwürfe")
                out["move"] = c.move([2], "Archive")
                # imapclient answers None for COPY and MOVE; the imaplib underneath keeps the
                # COPYUID response codes (COPY's tagged, MOVE's untagged) in order.
                out["copyuid"] = c._imap.response("COPYUID")[1]
                out["inbox"] = c.search("ALL")
                out["append"] = c.append("Arbeit", SIMPLE, flags=[b"\\Seen"])
                info = c.select_folder("Arbeit/Entwürfe")
                out["uidvalidity"] = info[b"UIDVALIDITY"]
                out["copied"] = c.fetch([1, 2], ["FLAGS"])
                c.set_flags([1, 2], [b"\\Deleted"])
                out["expunge"] = c.expunge([1])
                c.unselect_folder()
                try:
                    c.delete_folder("Arbeit")
                except imapclient.exceptions.IMAPClientError as e:
                    out["delete_parent"] = str(e)
                c.delete_folder("Arbeit/Entwürfe")
                c.delete_folder("Arbeit")
                out["after"] = [f[2] for f in c.list_folders()]
                c.unsubscribe_folder("Junk")
                out["subscribed"] = [f[2] for f in c.list_sub_folders()]
            return out

        out = await threads.deferToThread(client)
        [fields] = out["id"]
        server_id = dict(zip(fields[::2], fields[1::2], strict=True))
        self.assertEqual(server_id, {b"name": b"haitatsu", b"version": b"0.1.0"})
        self.assertEqual(out["enabled"], [b"CONDSTORE"])
        self.assertTrue(out["exists"])
        self.assertEqual(out["tree"], ["Arbeit", "Arbeit/Entwürfe"])
        archive = await self.store.get_folder(self.mailbox.id, "Archive")
        # COPYUID names the UIDVALIDITY a later SELECT of the target shows.
        copy_uid, move_uid = out["copyuid"]
        # COPYUID names the UIDVALIDITY a later SELECT of the target shows.
        self.assertEqual(copy_uid, b"%d 1:2 1:2" % out["uidvalidity"])
        self.assertEqual(move_uid, b"%d 2 1" % archive.uid_validity)
        self.assertEqual(out["inbox"], [1])
        arbeit_uv = int(re.search(rb"^\[APPENDUID (\d+) 1\] ", out["append"]).group(1))
        self.assertEqual(arbeit_uv, out["uidvalidity"] - 1)  # created just before its child
        self.assertEqual(out["copied"][2][b"FLAGS"], (b"\\Flagged",))
        self.assertIn(b"[HASCHILDREN]", out["delete_parent"].encode())
        self.assertNotIn("Arbeit", out["after"])
        self.assertNotIn("Junk", out["subscribed"])
        self.assertIn("Trash", out["subscribed"])
        self.assertEqual(out["expunge"], [None])
        [moved] = await self.store.list_folder_messages(archive.id)
        self.assertTrue(moved.flagged)


class MbsyncTests(_TwoWaySync):
    """isync's mbsync against haitatsu: plaintext IMAP on loopback, a Maildir on the near side."""

    timeout = 60

    def setUp(self):
        self.mbsync = shutil.which("mbsync")
        if self.mbsync is None:
            self.skipTest("isync (mbsync) is not installed: apt-get install -y isync")
        return super().setUp()

    def write_config(self, port: int) -> str:
        root = self.mktemp()
        os.makedirs(os.path.join(root, "mail"))
        self.maildir = os.path.join(root, "mail")
        self.near = NearMaildir(self.maildir)
        path = os.path.join(root, "mbsyncrc")
        with open(path, "w") as f:
            f.write(
                textwrap.dedent(
                    f"""\
                    IMAPAccount haitatsu
                    Host 127.0.0.1
                    Port {port}
                    User {ADDRESS}
                    Pass {self.password}
                    SSLType None
                    AuthMechs LOGIN

                    IMAPStore far
                    Account haitatsu

                    MaildirStore near
                    Path {self.maildir}/
                    Inbox {self.maildir}/INBOX
                    SubFolders Verbatim

                    Channel sync
                    Far :far:
                    Near :near:
                    Patterns * !Trash !Junk
                    Create Both
                    Expunge Both
                    Sync All
                    SyncState *
                    """
                )
            )
        return path

    async def sync_once(self, config):
        out, err, code = await utils.getProcessOutputAndValue(
            self.mbsync, ["-c", config, "-V", "sync"], env=dict(os.environ, HOME=self.maildir)
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])

    @d
    async def test_two_way_sync_of_a_folder_tree_with_flags(self):
        config = await self.first_sync()
        inbox = await self.change_both_sides()

        await self.sync_once(config)
        folder = await self.store.get_folder(self.mailbox.id, "Local")
        self.assertIsNotNone(folder, "mbsync created the folder over IMAP")
        [(row, info)] = await self.store.get_messages(folder.id, [1])
        self.assertEqual((row.flags, info.subject), (("\\Seen", "\\Flagged"), "local"))
        rows = {r.uid: r.flags for r in await self.store.list_folder_messages(inbox.id)}
        self.assertEqual(rows[1], ("\\Seen",))
        alpha = await self.store.get_folder(self.mailbox.id, "Projects/Alpha")
        [alpha_row] = await self.store.list_folder_messages(alpha.id)
        self.assertEqual(set(alpha_row.flags), {"\\Seen", "\\Answered"})
        self.assertEqual(self.near.messages("INBOX"), {"one": "S", "two": "R", "three": ""})

        # A third run has nothing to do and changes nothing.
        await self.sync_once(config)
        self.assertEqual(self.near.messages("INBOX"), {"one": "S", "two": "R", "three": ""})
        self.assertEqual(len(await self.store.list_folder_messages(folder.id)), 1)
