"""Sieve scripts over HTTP: /api/v1/mailboxes/:id/sieve (docs/sieve.md)."""

import attrs
from twisted.trial import unittest

from haitatsu.config.model import SieveConfig
from tests.api.client import APIClient, LiveConfig
from tests.support import make_store

NOBODY = "01JNOTTHERE0000000000000000"
SCRIPT = 'require "fileinto";\nif header :contains "subject" "x" { fileinto "Work"; }\n'


class SieveAPITests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.config = LiveConfig()
        self.client = APIClient(self.store, config=self.config)
        self.mailbox = await self.store.create_mailbox("alice@example.com")
        self.base = f"/api/v1/mailboxes/{self.mailbox.id}/sieve"

    def put(self, name, body):
        return self.client.request("PUT", f"{self.base}/{name}", json_body=body)

    async def test_crud(self):
        answer = await self.put("main", {"content": SCRIPT})
        self.assertEqual(answer.status, 201, answer.body)
        script = answer.json["data"]
        self.assertEqual(
            (script["name"], script["active"], script["content"], script["size"]),
            ("main", False, SCRIPT, len(SCRIPT)),
        )
        answer = await self.put("main", {"content": "keep;\n", "active": True})
        self.assertEqual((answer.status, answer.json["data"]["active"]), (200, True))
        await self.put("other", {"content": "discard;\n"})
        listed = (await self.client.get(self.base)).json
        self.assertEqual(
            [(s["name"], s["active"]) for s in listed["data"]],
            [("other", False), ("main", True)],
        )
        self.assertNotIn("content", listed["data"][0])
        self.assertEqual(listed["pagination"], {"next": "", "limit": 50})
        got = await self.client.get(f"{self.base}/main")
        self.assertEqual(got.json["data"]["content"], "keep;\n")
        answer = await self.client.post(f"{self.base}/other/activate")
        self.assertEqual((answer.status, answer.json["data"]["name"]), (200, "other"))
        self.assertEqual((await self.store.active_sieve_script(self.mailbox.id)).name, "other")
        answer = await self.client.delete(f"{self.base}/other")
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (409, "sieve_script_active")
        )
        answer = await self.client.post(f"{self.base}/deactivate")
        self.assertEqual((answer.status, answer.json), (200, {"data": {}}))
        self.assertIsNone(await self.store.active_sieve_script(self.mailbox.id))
        answer = await self.client.delete(f"{self.base}/other")
        self.assertEqual((answer.status, answer.json), (200, {"data": {}}))
        self.assertEqual((await self.client.get(f"{self.base}/other")).status, 404)

    async def test_validation_errors_name_the_line(self):
        answer = await self.put("bad", {"content": 'require "fileinto";\n\nfileinto "x"\n}\n'})
        self.assertEqual(answer.status, 400)
        error = answer.json["error"]
        self.assertEqual(error["code"], "invalid_sieve_script")
        self.assertTrue(error["message"].startswith("Invalid Sieve script: line 4: "), error)
        answer = await self.put("bad", {"content": 'require "enotify";\nkeep;\n'})
        self.assertEqual(
            answer.json["error"]["message"],
            "Invalid Sieve script: line 1: unsupported extension 'enotify'",
        )
        answer = await self.put("bad", {"content": 'fileinto "x";\n'})
        self.assertIn("line 1", answer.json["error"]["message"])
        self.assertEqual(await self.store.list_sieve_scripts(self.mailbox.id), [])

    async def test_bad_requests(self):
        for body, code in [
            ({}, "sieve_script_content_required"),
            ({"content": 5}, "sieve_script_content_required"),
            ({"content": "keep;", "active": "yes"}, "invalid_request"),
        ]:
            answer = await self.put("x", body)
            self.assertEqual((answer.status, answer.json["error"]["code"]), (400, code), body)
        answer = await self.client.request("PUT", f"{self.base}/x", body=b"not json")
        self.assertEqual(answer.status, 400)
        answer = await self.put("%01bad", {"content": "keep;"})
        self.assertEqual(answer.json["error"]["code"], "invalid_sieve_script_name")
        nobody = f"/api/v1/mailboxes/{NOBODY}"
        for method, path, code in [
            ("GET", f"{nobody}/sieve", "mailbox_not_found"),
            ("GET", f"{nobody}/sieve/x", "mailbox_not_found"),
            ("POST", f"{nobody}/sieve/x/activate", "mailbox_not_found"),
            ("POST", f"{nobody}/sieve/deactivate", "mailbox_not_found"),
            ("DELETE", f"{nobody}/sieve/x", "mailbox_not_found"),
            ("GET", f"{nobody}/vacation", "mailbox_not_found"),
            ("DELETE", f"{nobody}/vacation", "mailbox_not_found"),
            ("GET", f"{self.base}/none", "sieve_script_not_found"),
            ("POST", f"{self.base}/none/activate", "sieve_script_not_found"),
            ("DELETE", f"{self.base}/none", "sieve_script_not_found"),
        ]:
            answer = await self.client.request(method, path)
            self.assertEqual((answer.status, answer.json["error"]["code"]), (404, code), path)
        answer = await self.client.request(
            "PUT", f"/api/v1/mailboxes/{NOBODY}/sieve/x", json_body={"content": "keep;"}
        )
        self.assertEqual(answer.json["error"]["code"], "mailbox_not_found")

    async def test_limits(self):
        self.config.config = attrs.evolve(
            self.config.config, sieve=SieveConfig(max_script_bytes=100, max_scripts=2)
        )
        answer = await self.put("big", {"content": "keep;" * 30})
        self.assertEqual(answer.status, 400)
        self.assertIn("over the limit of 100", answer.json["error"]["message"])
        await self.put("a", {"content": "keep;"})
        await self.put("b", {"content": "keep;"})
        answer = await self.put("c", {"content": "keep;"})
        self.assertEqual((answer.status, answer.json["error"]["code"]), (409, "sieve_script_limit"))
        # Replacing an existing one is not a new script.
        self.assertEqual((await self.put("b", {"content": "discard;"})).status, 200)

    async def test_needs_the_token(self):
        answer = await self.client.get(self.base, auth=False)
        self.assertEqual(answer.status, 401)


class VacationAPITests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.mailbox = await self.store.create_mailbox("alice@example.com")
        self.path = f"/api/v1/mailboxes/{self.mailbox.id}/vacation"

    async def test_get_put_delete(self):
        answer = await self.client.get(self.path)
        self.assertEqual(answer.status, 200)
        self.assertEqual(
            answer.json["data"],
            {
                "mailbox_id": self.mailbox.id,
                "enabled": False,
                "subject": "",
                "body": "",
                "days": 7,
                "from": "",
                "addresses": [],
                "starts_at": None,
                "ends_at": None,
                "updated_at": None,
            },
        )
        body = {
            "enabled": True,
            "subject": "Away",
            "body": "Back on Monday.",
            "days": 3,
            "addresses": ["alias@example.com"],
            "starts_at": "2030-01-01T00:00:00Z",
            "ends_at": "2030-01-10T00:00:00Z",
        }
        answer = await self.client.request("PUT", self.path, json_body=body)
        self.assertEqual(answer.status, 200, answer.body)
        setting = answer.json["data"]
        self.assertEqual(
            (setting["enabled"], setting["days"], setting["starts_at"], setting["addresses"]),
            (True, 3, "2030-01-01T00:00:00Z", ["alias@example.com"]),
        )
        self.assertEqual((await self.client.get(self.path)).json["data"], setting)
        stored = await self.store.get_vacation_setting(self.mailbox.id)
        self.assertEqual(stored.body, "Back on Monday.")
        answer = await self.client.delete(self.path)
        self.assertEqual((answer.status, answer.json), (200, {"data": {}}))
        self.assertIsNone(await self.store.get_vacation_setting(self.mailbox.id))

    async def test_invalid(self):
        for body in [
            {"enabled": "yes"},
            {"enabled": True},
            {"enabled": True, "body": "x", "days": 0},
            {"body": "x", "days": True},
            {"body": "x", "addresses": ["nope"]},
            {"body": "x", "from": "not an address"},
            {"body": "x", "subject": "two\nlines"},
            {"body": "x", "starts_at": "yesterday"},
            {"body": "x", "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"},
            {"body": "x", "ends_at": "9999-12-31T00:00:00Z"},
            {"body": "x", "colour": "blue"},
        ]:
            answer = await self.client.request("PUT", self.path, json_body=body)
            self.assertEqual(
                (answer.status, answer.json["error"]["code"]), (400, "invalid_vacation"), body
            )
        answer = await self.client.get(f"/api/v1/mailboxes/{NOBODY}/vacation")
        self.assertEqual(answer.status, 404)
