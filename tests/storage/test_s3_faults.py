"""S3 faults seen from outside: the real SMTP server (smtplib over loopback) and ``/ready``, on a
store whose blobs go to moto_server through ``S3Proxy``, which the tests take down and bring back.

While S3 cannot be reached, mail is refused with 451 4.3.0, nothing of it is visible anywhere
(no message row, no quota used, no object in the bucket) and ``/ready`` answers 503 naming S3;
once S3 is back, the next delivery succeeds on the same server, with no restart.
"""

from __future__ import annotations

import smtplib

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from haitatsu.interfaces import StorageUnavailable
from haitatsu.smtp import InboundSMTPFactory
from haitatsu.storage.s3 import RetryPolicy
from tests.api.client import APIClient
from tests.smtp.helpers import make_config, temp_dir
from tests.support import MotoS3Mixin, S3Proxy, make_s3_store

MESSAGE = (
    b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: while S3 is away\r\n\r\nHello.\r\n"
)


class S3FaultTests(MotoS3Mixin, unittest.TestCase):
    timeout = 120

    async def setUp(self):
        self.root = temp_dir(self)
        self.proxy = S3Proxy(self.moto.url)
        await self.proxy.start(self)
        # Production's five attempts, with short waits.
        retry = RetryPolicy(attempts=5, base_seconds=0.01, cap_seconds=0.05)
        self.store = await make_s3_store(
            self, self.moto, self.root, retry=retry, endpoint=self.proxy.endpoint
        )
        self.bucket = self.store.blobs.config.bucket
        self.bob = await self.store.create_mailbox("bob@example.com")
        factory = InboundSMTPFactory(
            lambda: make_config(max_message_size=100_000, max_line_length=4000),
            self.store,
            reactor,
            self.root + "/spool",
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.smtp_port = port.getHost().port

    def send(self):
        """Runs in a thread: one message to bob; what the server answered at the end of DATA."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
            client.ehlo("client.example")
            try:
                client.sendmail("alice@example.org", ["bob@example.com"], MESSAGE)
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error
            return 250, b""

    async def inbox(self):
        folder = await self.store.get_folder(self.bob.id, "INBOX")
        return await self.store.list_folder_messages(folder.id)

    async def test_smtp_tempfails_while_s3_is_down_and_recovers_without_restart(self):
        await self.proxy.down()
        code, text = await deferToThread(self.send)
        self.assertEqual((code, text[:5]), (451, b"4.3.0"))
        # The server logs why it tempfailed: the S3 reason.
        [logged] = self.flushLoggedErrors(StorageUnavailable)
        self.assertIn("s3: cannot reach", str(logged.value))
        self.assertEqual(await self.inbox(), [])
        self.assertEqual((await self.store.get_mailbox(self.bob.id)).used_bytes, 0)
        self.assertEqual(await deferToThread(self.moto.object_names, self.bucket), [])

        await self.proxy.up()
        self.assertEqual(await deferToThread(self.send), (250, b""))
        [placed] = await self.inbox()
        [(_, info)] = await self.store.get_messages(placed.folder_id, [placed.uid])
        self.assertTrue((await self.store.blobs.read(info.blob_key)).endswith(MESSAGE))
        self.assertEqual(len(await deferToThread(self.moto.object_names, self.bucket)), 1)

    async def test_smtp_tempfails_while_s3_answers_503(self):
        self.proxy.fail_next = 1000
        code, text = await deferToThread(self.send)
        self.assertEqual((code, text[:5]), (451, b"4.3.0"))
        [logged] = self.flushLoggedErrors(StorageUnavailable)
        self.assertIn("HTTP 503", str(logged.value))
        self.assertIn("(after 5 attempts)", str(logged.value))
        self.assertEqual(await self.inbox(), [])
        self.proxy.fail_next = 0
        self.assertEqual(await deferToThread(self.send), (250, b""))
        self.assertEqual(len(await self.inbox()), 1)

    async def test_ready_names_s3_while_it_is_down(self):
        api = APIClient(self.store)
        self.assertEqual((await api.get("/ready", auth=False)).status, 200)
        await self.proxy.down()
        answer = await api.get("/ready", auth=False)
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json["status"], "not_ready")
        self.assertTrue(
            answer.json["error"].startswith(f"blobs: s3: cannot reach {self.proxy.endpoint}"),
            answer.json,
        )
        await self.proxy.up()
        answer = await api.get("/ready", auth=False)
        self.assertEqual((answer.status, answer.json), (200, {"status": "ready"}))


class S3ReadyReasonTests(MotoS3Mixin, unittest.TestCase):
    """``/ready`` says which S3 setting is wrong."""

    timeout = 60

    async def ready_error(self, **overrides) -> str:
        store = await make_s3_store(self, self.moto, **overrides)
        answer = await APIClient(store).get("/ready", auth=False)
        self.assertEqual(answer.status, 503)
        return answer.json["error"]

    async def test_wrong_secret(self):
        error = await self.ready_error(secret_access_key="wrong")
        self.assertEqual(
            error,
            "blobs: s3: access denied (check access_key_id/secret_access_key) "
            "[SignatureDoesNotMatch]",
        )

    async def test_missing_bucket(self):
        error = await self.ready_error(bucket="haitatsu-missing")
        self.assertEqual(error, "blobs: s3: bucket haitatsu-missing does not exist")
