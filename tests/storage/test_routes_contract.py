"""Routes, RCPT resolution (API.md 5.2), send-as and routing rules at delivery (API.md 1.5):
the storage contract, on SQLite and on PostgreSQL."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from haitatsu.storage import glob
from haitatsu.storage.records import Delivery
from haitatsu.storage.store import InvalidRoute
from tests.support import PG_SKIP, deliver_bytes, make_pg_store, make_store


def d(fn):
    def wrapper(self):
        return defer.ensureDeferred(fn(self))

    wrapper.__name__ = fn.__name__
    return wrapper


def message(subject="Hello", sender="news@lists.example.org") -> bytes:
    return (f"From: {sender}\r\nTo: x@example.com\r\nSubject: {subject}\r\n\r\nBody.\r\n").encode()


class RoutesContractMixin:
    async def make(self):
        raise NotImplementedError

    async def setup(self):
        store = await self.make()
        alice = await store.create_mailbox("alice@example.com")
        bob = await store.create_mailbox("bob@example.com")
        return store, alice, bob

    @d
    async def test_resolution_order(self):
        store, alice, bob = await self.setup()
        carol = await store.create_mailbox("carol@example.com")
        # Step 2: an exact mailbox beats a route of the same address.
        await store.create_route("alice@example.com", "alias", [bob.id])
        r = await store.resolve_recipient(" Alice@Example.com ")
        self.assertEqual((r.mailbox_ids, r.route_id), ((alice.id,), ""))
        # Step 3: an exact route, any type, before patterns and catch-alls.
        exact = await store.create_route("team@example.com", "alias", [alice.id, bob.id])
        pattern = await store.create_route("t*@example.com", "pattern", [carol.id])
        catch = await store.create_route("*@example.com", "catch_all", [carol.id])
        r = await store.resolve_recipient("TEAM@example.com")
        self.assertEqual((r.mailbox_ids, r.route_id), ((alice.id, bob.id), exact.id))
        self.assertEqual(r.mailbox_id, alice.id)
        # With a tag and no exact match: step 4, the mailbox of the base address...
        r = await store.resolve_recipient("bob+x@example.com")
        self.assertEqual((r.mailbox_ids, r.route_id, r.plus_tag), ((bob.id,), "", "x"))
        self.assertEqual((r.original_rcpt, r.base_rcpt), ("bob+x@example.com", "bob@example.com"))
        # ... then the route of the base address.
        r = await store.resolve_recipient("team+y@example.com")
        self.assertEqual((r.route_id, r.base_rcpt), (exact.id, "team@example.com"))
        # An exact route on the tagged address beats the base mailbox (step 3 before 4).
        tagged = await store.create_route("bob+special@example.com", "alias", [carol.id])
        r = await store.resolve_recipient("bob+special@example.com")
        self.assertEqual((r.mailbox_ids, r.route_id), ((carol.id,), tagged.id))
        # Step 5: a pattern on the full address, before the catch-all.
        r = await store.resolve_recipient("tx@example.com")
        self.assertEqual(r.route_id, pattern.id)
        # Step 6: the catch-all for anything else in the domain; nothing in another domain.
        r = await store.resolve_recipient("zed@example.com")
        self.assertEqual((r.route_id, r.mailbox_ids), (catch.id, (carol.id,)))
        self.assertIsNone(await store.resolve_recipient("zed@example.net"))

    @d
    async def test_inactive_routes_and_destinations(self):
        store, alice, bob = await self.setup()
        route = await store.create_route("list@example.com", "alias", [alice.id, bob.id])
        await store.delete_mailbox(alice.id)
        r = await store.resolve_recipient("list@example.com")
        self.assertEqual(r.mailbox_ids, (bob.id,))
        # No active destination: the route does not match and resolution goes on.
        await store.update_mailbox(bob.id, status="suspended")
        self.assertIsNone(await store.resolve_recipient("list@example.com"))
        await store.update_mailbox(bob.id, status="active")
        await store.update_route(route.id, status="paused")
        self.assertIsNone(await store.resolve_recipient("list@example.com"))
        await store.update_route(route.id, status="active")
        deleted = await store.delete_route(route.id)
        self.assertEqual((deleted.status, deleted.deleted_at is not None), ("deleted", True))
        self.assertIsNone(await store.resolve_recipient("list@example.com"))

    @d
    async def test_full_mailboxes_are_left_out(self):
        store, alice, bob = await self.setup()
        await store.create_route("list@example.com", "alias", [alice.id, bob.id])
        await store.update_mailbox(alice.id, quota_bytes=10, used_bytes=10)
        r = await store.resolve_recipient("list@example.com")
        self.assertEqual((r.mailbox_ids, r.over_quota), ((bob.id,), ""))
        await store.update_mailbox(bob.id, quota_bytes=10, used_bytes=10)
        r = await store.resolve_recipient("list@example.com")
        self.assertEqual((r.mailbox_ids, r.over_quota), ((), "mailbox"))

    @d
    async def test_route_validation_and_uniqueness(self):
        store, alice, _ = await self.setup()
        for source, kind, code in (
            ("", "alias", "invalid_route"),
            ("a@example.com", "", "invalid_route"),
            ("Bounces@example.com", "alias", "reserved_local_part"),
            ("x@example.com", "catch_all", "invalid_route"),
            ("*@", "catch_all", "invalid_route"),
            ("[a@example.com", "pattern", "invalid_route"),
        ):
            with self.assertRaises(InvalidRoute) as caught:
                await store.create_route(source, kind, [alice.id])
            self.assertEqual(caught.exception.code, code, source)
        await store.create_route("Sales@example.com", "alias", [alice.id])
        from haitatsu.interfaces import Conflict

        with self.assertRaises(Conflict):
            await store.create_route("sales@EXAMPLE.com", "alias", [alice.id])

    @d
    async def test_send_as(self):
        store, alice, bob = await self.setup()
        self.assertTrue(await store.may_send_as(alice.id, "ALICE@example.com"))
        self.assertFalse(await store.may_send_as(alice.id, "bob@example.com"))
        route = await store.create_route("Sales@example.com", "alias", [alice.id])
        self.assertTrue(await store.may_send_as(alice.id, "sales@example.com"))
        self.assertFalse(await store.may_send_as(bob.id, "sales@example.com"))
        await store.delete_route(route.id)
        self.assertFalse(await store.may_send_as(alice.id, "sales@example.com"))
        self.assertFalse(await store.may_send_as("01JNOTTHERE0000000000000000", "x@example.com"))

    # -- rules ------------------------------------------------------------------------------

    async def deliver(self, store, mailbox_id, data=None, route_id="", rcpt="alice@example.com"):
        local, _, domain = rcpt.partition("@")
        base_local, _, tag = local.partition("+")
        return await store.deliver_with(
            data or message(),
            [
                Delivery(
                    mailbox_id=mailbox_id,
                    original_rcpt=rcpt,
                    base_rcpt=f"{base_local}@{domain}",
                    plus_tag=tag,
                    route_id=route_id,
                    apply_rules=True,
                )
            ],
        )

    @d
    async def test_rules_run_in_scope_then_priority_order(self):
        store, alice, _ = await self.setup()
        store.deliver_with = lambda data, deliveries: _deliver(self, store, data, deliveries)
        route = await store.create_route("team@example.com", "alias", [alice.id])
        # Created in the reverse of the order they must run; each labels the message and moves
        # it to a folder named after itself, so the folder it ends in names the last rule run.
        specs = [
            ("global", "", 0),
            ("domain", "LISTS.example.org", 0),
            ("mailbox", alice.id, 5),
            ("mailbox", alice.id, 1),
            ("address", "Team@example.com", 0),
            ("route", route.id, 0),
        ]
        rules = {}
        for scope, ref, priority in specs:
            name = f"{scope}-{priority}"
            await store.create_folder(alice.id, name)
            await store.create_label(alice.id, name)
            rules[name] = await store.create_rule(
                scope,
                name,
                [{"type": "add_label", "label": name}, {"action": "move", "folder": name}],
                scope_ref=ref,
                priority=priority,
            )
        # A disabled rule and rules for other refs never run.
        await store.create_folder(alice.id, "never")
        for scope, ref, enabled in (
            ("global", "", False),
            ("mailbox", "01JNOTTHERE0000000000000000", True),
            ("address", "other@example.com", True),
            ("route", "01JNOTTHERE0000000000000000", True),
        ):
            await store.create_rule(
                scope,
                "never",
                [{"type": "move", "folder": "never"}],
                scope_ref=ref,
                enabled=enabled,
            )
        expected = ["route-0", "address-0", "mailbox-1", "mailbox-5", "domain-0", "global-0"]
        [placed] = await self.deliver(store, alice.id, route_id=route.id, rcpt="team@example.com")
        entry = await store.get_message_entry(placed.id)
        self.assertEqual(sorted(label.name for label in entry[2]), sorted(expected))
        # Remove the last rule each time: the message then ends in the one before it.
        for last in reversed(expected):
            [placed] = await self.deliver(
                store, alice.id, route_id=route.id, rcpt="team@example.com"
            )
            self.assertEqual((await store.get_folder_by_id(placed.folder_id)).name, last)
            await store.delete_rule(rules[last].id)
        self.assertEqual((await store.get_folder(alice.id, "never")).uid_next, 1)

    @d
    async def test_rule_conditions_and_actions(self):
        store, alice, bob = await self.setup()
        store.deliver_with = lambda data, deliveries: _deliver(self, store, data, deliveries)
        await store.create_rule(
            "mailbox",
            "tagged",
            [{"type": "mark_read"}, {"type": "mark_flagged"}, {"type": "junk"}],
            scope_ref=alice.id,
            conditions={"plus_tag": "SPAMMY", "subject_contains": "offer", "unknown": "x"},
        )
        await store.create_rule(
            "mailbox",
            "copy",
            [{"type": "copy_to_mailbox", "mailbox_id": bob.id}, {"type": "no_such_action"}],
            scope_ref=alice.id,
            conditions={"from": "Boss@Example.org"},
        )
        await store.create_rule(
            "mailbox",
            "drop",
            [{"type": "drop"}, {"type": "webhook"}],
            scope_ref=alice.id,
            conditions={
                "base_rcpt": "alice@example.com",
                "original_rcpt": "alice+trash@example.com",
            },
        )
        # All conditions must hold: the tag matches, the subject does not.
        [plain] = await self.deliver(
            store, alice.id, message("Hi"), rcpt="alice+spammy@example.com"
        )
        self.assertEqual((await store.get_folder_by_id(plain.folder_id)).name, "INBOX")
        self.assertFalse(plain.read)
        [junk] = await self.deliver(
            store, alice.id, message("Great OFFER"), rcpt="alice+spammy@example.com"
        )
        self.assertEqual((await store.get_folder_by_id(junk.folder_id)).name, "Junk")
        self.assertEqual((junk.read, junk.flagged), (True, True))
        # copy_to_mailbox: the same message in bob's INBOX, charged to bob, once.
        [copied] = await self.deliver(store, alice.id, message("x", "boss@example.org"))
        bob_inbox = await store.get_folder(bob.id, "INBOX")
        [copy] = await store.list_folder_messages(bob_inbox.id)
        self.assertEqual(copy.message_id, copied.message_id)
        self.assertEqual((await store.get_mailbox(bob.id)).used_bytes, copy.size_bytes)
        # delete: soft-deleted at once, the quota given back.
        before = (await store.get_mailbox(alice.id)).used_bytes
        [dropped] = await self.deliver(store, alice.id, rcpt="alice+trash@example.com")
        self.assertIsNotNone(dropped.deleted_at)
        self.assertEqual((await store.get_mailbox(alice.id)).used_bytes, before)
        self.assertIsNone(await store.get_message_view(dropped.id))
        # webhook: a message.routed event in the event log, written in the same transaction.
        [routed] = await store.list_events(event_type="message.routed")
        rule = [r for r in await store.list_rules() if r.name == "drop"][0]
        self.assertEqual(routed.mailbox_id, alice.id)
        self.assertEqual(routed.message_id, dropped.message_id)
        self.assertEqual(routed.payload["mailbox_message_id"], dropped.id)
        self.assertEqual(routed.payload["routing_rule_id"], rule.id)
        self.assertEqual(routed.payload["routing_rule_name"], "drop")
        self.assertEqual(routed.payload["original_rcpt"], "alice+trash@example.com")
        self.assertEqual(routed.payload["plus_tag"], "trash")

    @d
    async def test_rules_do_not_run_without_apply_rules(self):
        store, alice, _ = await self.setup()
        await store.create_rule("global", "junk all", [{"type": "junk"}])
        [placed] = await deliver_bytes(store, message(), alice.id)
        self.assertEqual((await store.get_folder_by_id(placed.folder_id)).name, "INBOX")


async def _deliver(testcase, store, data, deliveries):
    import os
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return await store.deliver(path, deliveries, trace_id="T")
    finally:
        os.unlink(path)


class GlobTests(unittest.TestCase):
    def test_go_path_match_semantics(self):
        cases = [
            ("*@example.com", "a.b@example.com", True),
            ("*@example.com", "a@example.co", False),
            ("a?c@x", "abc@x", True),
            ("a?c@x", "ac@x", False),
            ("[a-c]*@x", "bob@x", True),
            ("[^a-c]*@x", "bob@x", False),
            ("[^a-c]*@x", "dan@x", True),
            ("\\*@x", "*@x", True),
            ("\\*@x", "a@x", False),
            ("*", "a/b", False),
            ("sales-*@x", "sales-eu@x", True),
        ]
        for pattern, name, expected in cases:
            self.assertEqual(glob.match(pattern, name), expected, (pattern, name))
        for bad in ("[", "[]a]", "a\\", "[a-]", "[-a]"):
            with self.assertRaises(glob.BadPattern):
                glob.compile(bad)
            self.assertFalse(glob.match(bad, "a"))


class SQLiteRoutesContract(RoutesContractMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresRoutesContract(RoutesContractMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)
