"""The API served by twisted.web on a real loopback socket, read with treq."""

import io
import json

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import Site

from haitatsu.api import HaitatsuAPI
from tests.api.client import AUTH, LiveConfig
from tests.support import deliver_bytes, make_store

MESSAGE = b"Subject: over the wire\r\nFrom: a@b.example\r\n\r\n" + b"x" * 200_000 + b"\r\n"


class SocketTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        api = HaitatsuAPI(LiveConfig(), self.store, None, reactor)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(Site(api.resource()))
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    async def test_create_mailbox_password_and_read_raw_over_tcp(self):
        response = await self.http.post(
            self.base + "/api/v1/mailboxes",
            data=json.dumps({"primary_address": "wire@example.com"}).encode(),
            headers=AUTH,
        )
        self.assertEqual(response.code, 201)
        mailbox = (await response.json())["data"]

        response = await self.http.post(
            f"{self.base}/api/v1/mailboxes/{mailbox['id']}/passwords",
            data=json.dumps({"name": "laptop", "scopes": ["imap"]}).encode(),
            headers=AUTH,
        )
        self.assertEqual(response.code, 201)
        self.assertEqual(len((await response.json())["data"]["password"]), 32)

        [placed] = await deliver_bytes(self.store, MESSAGE, mailbox["id"])
        response = await self.http.get(f"{self.base}/api/v1/messages/{placed.id}/raw", headers=AUTH)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("Content-Type"), ["message/rfc822"])
        self.assertEqual(await response.content(), MESSAGE)

    async def test_missing_token_over_tcp(self):
        response = await self.http.get(self.base + "/api/v1/mailboxes")
        self.assertEqual(response.code, 401)
        self.assertEqual(
            await response.content(),
            b'{"error":{"code":"unauthorized","message":"Authentication required","details":{}}}',
        )


class BodyLimitTests(unittest.TestCase):
    """``HaitatsuAPI.site()`` refuses bodies over the limit without keeping them."""

    async def setUp(self):
        self.store = await make_store(self)
        api = HaitatsuAPI(LiveConfig(), self.store, None, reactor)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(api.site(body_limit=1000))
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/api/v1/mailboxes"
        self.http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    def body(self, size):
        text = json.dumps({"primary_address": "big@example.com", "status": ""})
        return (text[:-2] + " " * (size - len(text)) + text[-2:]).encode()

    async def assertTooLarge(self, response):
        self.assertEqual(response.code, 413)
        self.assertEqual(
            await response.json(),
            {
                "error": {
                    "code": "request_too_large",
                    "message": "Request body exceeds the 64 MiB limit",
                    "details": {},
                }
            },
        )
        self.assertEqual(await self.store.list_mailboxes(), [])

    async def test_announced_length_over_the_limit_is_413(self):
        response = await self.http.post(self.url, data=self.body(1001), headers=AUTH)
        await self.assertTooLarge(response)

    async def test_chunked_body_over_the_limit_is_413(self):
        # A file-like body of unknown length goes out chunked.
        from twisted.web.client import FileBodyProducer

        producer = FileBodyProducer(io.BytesIO(self.body(5000)))
        producer.length = UNKNOWN_LENGTH
        response = await self.http.post(self.url, data=producer, headers=AUTH)
        await self.assertTooLarge(response)

    async def test_body_at_the_limit_is_accepted(self):
        response = await self.http.post(self.url, data=self.body(1000), headers=AUTH)
        self.assertEqual(response.code, 201)
