"""DKIM keys over HTTP (API.md 1.11) on a real store: create, get, list, the legacy paths, the
DNS record (which verifies a signature made with the key), validation and conflicts."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from twisted.trial import unittest

from haitatsu import dkim as dkimmod
from tests.api.client import APIClient, error
from tests.support import make_store


class DkimKeyTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)

    async def test_create_rsa_key(self):
        answer = await self.client.post("/api/v1/dkim", {"domain": "  Example.COM "})
        self.assertEqual(answer.status, 201, answer.body)
        key = answer.json["data"]
        self.assertEqual(sorted(key), ["dns", "domain", "id", "selector"])
        self.assertEqual((key["domain"], key["selector"]), ("example.com", "zpr1"))
        self.assertRegex(key["id"], r"^[0-9A-HJKMNP-TV-Z]{26}$")
        self.assertEqual(sorted(key["dns"]), ["name", "type", "value"])
        self.assertEqual(key["dns"]["name"], "zpr1._domainkey.example.com")
        self.assertEqual(key["dns"]["type"], "TXT")
        prefix = "v=DKIM1; k=rsa; p="
        self.assertTrue(key["dns"]["value"].startswith(prefix), key["dns"]["value"])
        # p= is the public key's DER: a 2048-bit RSA key, the one stored (PKCS#1 private,
        # PKIX public PEM).
        public = serialization.load_der_public_key(
            base64.b64decode(key["dns"]["value"][len(prefix) :])
        )
        self.assertEqual(public.key_size, 2048)
        stored = await self.store.get_dkim_key(key["id"])
        self.assertTrue(stored.private_key.startswith("-----BEGIN RSA PRIVATE KEY-----"))
        self.assertTrue(stored.public_key.startswith("-----BEGIN PUBLIC KEY-----"))
        self.assertEqual(stored.algorithm, "rsa")
        self.assertNotIn("PRIVATE", answer.body.decode())

    async def test_create_ed25519_key(self):
        answer = await self.client.post(
            "/api/v1/dkim", {"domain": "example.com", "selector": "ed1", "algorithm": "ed25519"}
        )
        self.assertEqual(answer.status, 201, answer.body)
        value = answer.json["data"]["dns"]["value"]
        self.assertTrue(value.startswith("v=DKIM1; k=ed25519; p="), value)
        self.assertEqual(len(base64.b64decode(value.split("p=")[1])), 32)

    async def test_get_list_and_legacy_paths(self):
        created = []
        for selector in ("a", "b", "c"):
            answer = await self.client.post(
                "/api/v1/dkim_keys",
                {"domain": "example.com", "selector": selector, "algorithm": "ed25519"},
            )
            self.assertEqual(answer.status, 201)
            created.append(answer.json["data"])
        for path in ("/api/v1/dkim/", "/api/v1/dkim_keys/"):
            answer = await self.client.get(path + created[0]["id"])
            self.assertEqual(answer.status, 200)
            self.assertEqual(answer.json["data"], created[0])
        answer = await self.client.get("/api/v1/dkim?limit=2")
        self.assertEqual(answer.status, 200)
        self.assertEqual([k["selector"] for k in answer.json["data"]], ["c", "b"])
        following = await self.client.get(
            "/api/v1/dkim_keys?limit=2&cursor=" + answer.json["pagination"]["next"]
        )
        self.assertEqual([k["selector"] for k in following.json["data"]], ["a"])
        self.assertEqual(following.json["pagination"], {"next": "", "limit": 2})

    async def test_not_found(self):
        answer = await self.client.get("/api/v1/dkim/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.json, error("dkim_key_not_found", "DKIM key not found"))

    async def test_domain_required(self):
        for body in ({}, {"domain": ""}, {"domain": "  "}, {"selector": "x"}):
            answer = await self.client.post("/api/v1/dkim", body)
            self.assertEqual(answer.status, 400)
            self.assertEqual(answer.json, error("domain_required", "Domain is required"))

    async def test_invalid_values(self):
        for body, message in (
            ({"domain": "exa mple.com"}, "domain must be a domain name such as example.com"),
            ({"domain": "localhost"}, "domain must be a domain name such as example.com"),
            (
                {"domain": "example.com", "selector": "a;b"},
                "selector must be a DNS label such as zpr1",
            ),
            ({"domain": "example.com", "algorithm": "dsa"}, 'algorithm must be "rsa" or "ed25519"'),
            ({"domain": 7}, "domain must be a string"),
        ):
            answer = await self.client.post("/api/v1/dkim", body)
            self.assertEqual(answer.status, 400, body)
            self.assertEqual(answer.json, error("invalid_dkim_key", message))

    async def test_duplicate_selector_is_409(self):
        body = {"domain": "example.com", "selector": "s1", "algorithm": "ed25519"}
        self.assertEqual((await self.client.post("/api/v1/dkim", body)).status, 201)
        answer = await self.client.post("/api/v1/dkim", dict(body, domain="EXAMPLE.com"))
        self.assertEqual(answer.status, 409)
        self.assertEqual(answer.json["error"]["code"], "constraint_violation")

    async def test_invalid_json(self):
        answer = await self.client.request("POST", "/api/v1/dkim", body=b"{")
        self.assertEqual(answer.status, 400)
        self.assertEqual(answer.json, error("invalid_request", "Invalid JSON body"))

    async def test_record_verifies_a_signature(self):
        """The published record and the stored private key belong together: a header signed
        with the key verifies against the record (dkimpy's dnsfunc hook serves it)."""
        import dkim

        answer = await self.client.post("/api/v1/dkim", {"domain": "example.com"})
        stored = await self.store.get_dkim_key(answer.json["data"]["id"])
        header = b"From: a@example.com\r\nSubject: s\r\n"
        hasher = dkimmod.RelaxedBodyHash()
        hasher.update_line(b"body\r\n")
        signature = dkimmod.signature(
            header,
            hasher.digest(),
            dkimmod.SigningKey(
                stored.domain, stored.selector, stored.algorithm, stored.private_key
            ),
            1700000000,
        )
        record = answer.json["data"]["dns"]["value"].encode()
        message = signature + header + b"\r\nbody\r\n"
        self.assertTrue(dkim.verify(message, dnsfunc=lambda name, timeout=5: record))
