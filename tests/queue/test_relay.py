"""The queue against relays written with twisted.mail in the test: retry, bounce, expiry,
mixed recipients, STARTTLS with a test CA, AUTH, leases. Time is a ``task.Clock`` (retry
schedules), connections and the store are real."""

from __future__ import annotations

import tempfile

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.trial import unittest

from haitatsu.queue import retry_delay_seconds, retry_window_seconds
from tests.queue.helpers import (
    MESSAGE,
    SENDER,
    ScriptedRelay,
    inbox_messages,
    make_ca,
    make_clock,
    make_config,
    make_queue,
    parse,
    queue_message,
)
from tests.support import make_store


class RelayDeliveryTests(unittest.TestCase):
    timeout = 60

    async def setup_relay(self, **relay_kwargs):
        self.store = await make_store(self)
        self.relay = ScriptedRelay(**relay_kwargs)
        port = self.relay.listen(self)
        return port

    async def test_sent_byte_exact_with_verp_return_path(self):
        port = await self.setup_relay()
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{port}"))
        mailbox, message_id, job_id = await queue_message(self.store, ["bob@remote.test"])
        self.assertEqual(await queue.process_due(), 1)
        (got,) = self.relay.received
        self.assertEqual(got["data"], MESSAGE)
        self.assertEqual(got["rcpts"], ["bob@remote.test"])
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.attempts, job.last_error), ("sent", 1, {}))
        self.assertEqual([r.status for r in job.recipients], ["sent"])
        (attempt,) = job.attempt_log
        self.assertEqual(attempt.node, "node-1")
        self.assertEqual(attempt.result["classification"], "success")
        self.assertEqual(attempt.result["code"], 250)
        self.assertIsNotNone(attempt.finished_at)

    async def test_451_then_250_retried_on_the_clock_and_delivered_once(self):
        port = await self.setup_relay(data_replies=[(451, "4.3.0 try again later")])
        clock = make_clock()
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{port}"), clock=clock)
        _, _, job_id = await queue_message(self.store, ["bob@remote.test"])
        self.assertEqual(await queue.process_due(), 1)
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.attempts), ("retry", 1))
        self.assertEqual(job.next_attempt_at, int(clock.seconds() * 1e9) + 60 * 10**9)
        self.assertEqual(
            job.last_error,
            {
                "code": 451,
                "enhanced_status_code": "4.3.0",
                "classification": "temporary",
                "response": "451 4.3.0 try again later",
            },
        )
        self.assertEqual(job.recipients[0].status, "pending")
        self.assertEqual(self.relay.received, [])
        clock.advance(59)
        self.assertEqual(await queue.process_due(), 0, "not due before the minute is over")
        clock.advance(1)
        self.assertEqual(await queue.process_due(), 1)
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.attempts, job.last_error), ("sent", 2, {}))
        self.assertEqual(len(self.relay.received), 1)
        self.assertEqual(self.relay.data_count, 2)
        self.assertEqual(
            [a.result["classification"] for a in job.attempt_log], ["temporary", "success"]
        )

    async def test_550_bounces_to_the_senders_inbox_with_original_headers(self):
        port = await self.setup_relay(
            rcpt_replies={"bob@remote.test": (550, "5.1.1 <bob@remote.test>: no such user")}
        )
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{port}"))
        mailbox, message_id, job_id = await queue_message(self.store, ["bob@remote.test"])
        self.assertEqual(await queue.process_due(), 1)
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.attempts), ("failed", 1))
        self.assertEqual(job.last_error["classification"], "permanent")
        self.assertEqual(job.last_error["enhanced_status_code"], "5.1.1")
        self.assertEqual(job.recipients[0].status, "failed")
        self.assertEqual(self.relay.received, [])
        (inbox,) = await inbox_messages(self.store, mailbox.id)
        self.assertEqual(job.dsn_message_id, inbox[1].id)
        dsn = parse(inbox[2])
        self.assertIn(b'\r\nFrom: "Haitatsu" <postmaster@mx.example.test>\r\n', b"\r\n" + inbox[2])
        self.assertEqual(dsn["Subject"], "Message delivery failed")
        self.assertEqual(dsn.get_content_type(), "multipart/report")
        self.assertEqual(dsn.get_param("report-type"), "delivery-status")
        text, status, headers = dsn.get_payload()
        self.assertIn("A message could not be delivered.", text.get_content())
        self.assertIn("550 5.1.1 <bob@remote.test>: no such user", text.get_content())
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        per_message, per_rcpt = status.get_payload()
        self.assertEqual(per_message["Reporting-MTA"], "dns; mx.example.test")
        self.assertEqual(per_rcpt["Final-Recipient"], "rfc822; bob@remote.test")
        self.assertEqual(per_rcpt["Action"], "failed")
        self.assertEqual(per_rcpt["Status"], "5.1.1")
        self.assertEqual(per_rcpt["Remote-MTA"], "dns; 127.0.0.1")
        self.assertEqual(
            per_rcpt["Diagnostic-Code"], "smtp; 550 5.1.1 <bob@remote.test>: no such user"
        )
        self.assertEqual(headers.get_content_type(), "text/rfc822-headers")
        original = headers.get_payload(decode=True)
        self.assertEqual(original, MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n")

    async def test_expiry_after_max_attempts_bounces(self):
        port = await self.setup_relay(data_replies=[(451, "4.7.1 greylisted")] * 5)
        clock = make_clock()
        config = make_config(f"127.0.0.1:{port}", max_attempts=3, max_retry_minutes=2)
        queue = make_queue(self, self.store, config, clock=clock)
        mailbox, _, job_id = await queue_message(self.store, ["bob@remote.test"])
        for delay in (60, 120):
            self.assertEqual(await queue.process_due(), 1)
            job = await self.store.get_outbound_job(job_id)
            self.assertEqual(job.status, "retry")
            clock.advance(delay)
        self.assertEqual(await queue.process_due(), 1)
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.attempts), ("failed", 3))
        self.assertTrue(job.attempt_log[-1].result["expired"])
        self.assertEqual(job.recipients[0].status, "failed")
        (inbox,) = await inbox_messages(self.store, mailbox.id)
        dsn = parse(inbox[2])
        _, status, _ = dsn.get_payload()
        per_rcpt = status.get_payload()[1]
        self.assertEqual((per_rcpt["Action"], per_rcpt["Status"]), ("failed", "4.7.1"))
        self.assertIn("retry period ran out", dsn.get_payload()[0].get_content())
        self.assertEqual(self.relay.data_count, 3)

    async def test_mixed_recipients_one_refused_one_accepted(self):
        port = await self.setup_relay(rcpt_replies={"bob@remote.test": (550, "5.1.1 unknown user")})
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{port}"))
        mailbox, _, job_id = await queue_message(
            self.store, ["bob@remote.test", "carol@remote.test"]
        )
        self.assertEqual(await queue.process_due(), 1)
        job = await self.store.get_outbound_job(job_id)
        states = {r.rcpt: (r.status, r.code) for r in job.recipients}
        self.assertEqual(
            states, {"bob@remote.test": ("failed", 550), "carol@remote.test": ("sent", 250)}
        )
        self.assertEqual(job.status, "failed")
        (got,) = self.relay.received
        self.assertEqual(got["rcpts"], ["carol@remote.test"])
        (inbox,) = await inbox_messages(self.store, mailbox.id)
        _, status, _ = parse(inbox[2]).get_payload()
        blocks = status.get_payload()
        self.assertEqual([b["Final-Recipient"] for b in blocks[1:]], ["rfc822; bob@remote.test"])

    async def test_one_recipient_deferred_is_retried_alone(self):
        port = await self.setup_relay(rcpt_replies={"bob@remote.test": (452, "4.2.2 mailbox full")})
        clock = make_clock()
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{port}"), clock=clock)
        _, _, job_id = await queue_message(self.store, ["bob@remote.test", "carol@remote.test"])
        await queue.process_due()
        self.relay.rcpt_replies.clear()
        clock.advance(60)
        await queue.process_due()
        self.assertEqual(
            [r["rcpts"] for r in self.relay.received],
            [["carol@remote.test"], ["bob@remote.test"]],
        )
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual(job.status, "sent")

    async def test_network_error_is_retried(self):
        self.store = await make_store(self)
        relay = ScriptedRelay()
        port = relay.listen(self)
        await relay.port.stopListening()  # nothing listens there any more
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{port}"))
        _, _, job_id = await queue_message(self.store, ["bob@remote.test"])
        await queue.process_due()
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual(job.status, "retry")
        self.assertEqual(job.last_error["classification"], "temporary")
        self.assertEqual(job.last_error["code"], 0)
        self.assertIn("cannot connect to relay", job.last_error["response"])

    async def test_no_relay_configured_leaves_jobs_queued(self):
        self.store = await make_store(self)
        queue = make_queue(self, self.store, make_config(""))
        _, _, job_id = await queue_message(self.store, ["bob@remote.test"])
        self.assertEqual(await queue.process_due(), 0)
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.attempts), ("queued", 0))

    def test_retry_schedule_and_total_window(self):
        self.assertEqual(
            [retry_delay_seconds(n, 240) / 60 for n in range(1, 11)],
            [1, 2, 4, 8, 16, 32, 64, 128, 240, 240],
        )
        # docs/queue.md: 30 attempts, cap 240 minutes -> 5295 minutes (88 h 15 min).
        self.assertEqual(retry_window_seconds(30, 240), 5295 * 60)
        # ... and the two settings it suggests for about two days.
        self.assertEqual(retry_window_seconds(20, 240), (48 * 60 + 15) * 60)
        self.assertEqual(retry_window_seconds(30, 120), (46 * 60 + 7) * 60)


class RelayTLSTests(unittest.TestCase):
    timeout = 60

    async def start(self, **relay_kwargs):
        self.store = await make_store(self)
        directory = tempfile.mkdtemp(prefix="haitatsu-ca-")
        self.ca_file, server_tls = make_ca(directory, "localhost")
        self.relay = ScriptedRelay(tls=server_tls, **relay_kwargs)
        return self.relay.listen(self)

    async def test_starttls_verified_against_the_relay_name(self):
        port = await self.start()
        config = make_config(f"localhost:{port}", ca_file=self.ca_file)
        queue = make_queue(self, self.store, config)
        _, _, job_id = await queue_message(self.store, ["bob@remote.test"])
        await queue.process_due()
        (got,) = self.relay.received
        self.assertTrue(got["tls"])
        self.assertEqual(got["data"], MESSAGE)
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual(job.status, "sent")
        self.assertTrue(job.attempt_log[0].result["tls"])

    async def test_wrong_host_name_fails_and_is_retried(self):
        port = await self.start()
        # The certificate names "localhost"; the relay is addressed as 127.0.0.1.
        config = make_config(f"127.0.0.1:{port}", ca_file=self.ca_file)
        queue = make_queue(self, self.store, config)
        _, _, job_id = await queue_message(self.store, ["bob@remote.test"])
        await queue.process_due()
        self.assertEqual(self.relay.received, [])
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual(job.status, "retry")
        self.assertEqual(job.last_error["classification"], "temporary")
        self.assertIn("TLS", job.last_error["response"])

    async def test_untrusted_ca_fails_and_is_retried(self):
        port = await self.start()
        queue = make_queue(self, self.store, make_config(f"localhost:{port}"))
        _, _, job_id = await queue_message(self.store, ["bob@remote.test"])
        await queue.process_due()
        self.assertEqual(self.relay.received, [])
        self.assertEqual((await self.store.get_outbound_job(job_id)).status, "retry")

    async def test_verify_cert_false_passes(self):
        port = await self.start()
        config = make_config(f"127.0.0.1:{port}", verify_cert=False)
        queue = make_queue(self, self.store, config)
        _, _, job_id = await queue_message(self.store, ["bob@remote.test"])
        await queue.process_due()
        (got,) = self.relay.received
        self.assertTrue(got["tls"])
        self.assertEqual((await self.store.get_outbound_job(job_id)).status, "sent")

    async def test_tls_required_without_starttls_is_retried(self):
        self.store = await make_store(self)
        relay = ScriptedRelay()
        port = relay.listen(self)
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{port}", tls="required"))
        _, _, job_id = await queue_message(self.store, ["bob@remote.test"])
        await queue.process_due()
        self.assertEqual(relay.received, [])
        job = await self.store.get_outbound_job(job_id)
        self.assertEqual(job.status, "retry")
        self.assertIn("TLS", job.last_error["response"])

    async def test_tls_off_never_starts_tls(self):
        port = await self.start()
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{port}", tls="off"))
        await queue_message(self.store, ["bob@remote.test"])
        await queue.process_due()
        (got,) = self.relay.received
        self.assertFalse(got["tls"])


class RelayAuthTests(unittest.TestCase):
    timeout = 60

    async def test_auth_plain_with_the_relay_credentials(self):
        store = await make_store(self)
        relay = ScriptedRelay(auth=("relayuser", "s3cret"))
        port = relay.listen(self)
        config = make_config(f"127.0.0.1:{port}", username="relayuser", password="s3cret")
        queue = make_queue(self, store, config)
        _, _, job_id = await queue_message(store, ["bob@remote.test"])
        await queue.process_due()
        (got,) = relay.received
        self.assertEqual(got["user"], "relayuser")
        self.assertEqual((await store.get_outbound_job(job_id)).status, "sent")

    async def test_wrong_relay_password_is_temporary_not_a_bounce(self):
        store = await make_store(self)
        relay = ScriptedRelay(auth=("relayuser", "s3cret"))
        port = relay.listen(self)
        config = make_config(f"127.0.0.1:{port}", username="relayuser", password="wrong")
        queue = make_queue(self, store, config)
        mailbox, _, job_id = await queue_message(store, ["bob@remote.test"])
        await queue.process_due()
        job = await store.get_outbound_job(job_id)
        self.assertEqual(job.status, "retry")
        self.assertIn("535", job.last_error["response"])
        self.assertEqual(await inbox_messages(store, mailbox.id), [])

    async def test_credentials_never_sent_in_plaintext_to_another_host(self):
        from haitatsu.queue.relay import RelayClient

        client = RelayClient(
            identity="mx.example.test",
            mail_from="bounces+X@example.com",
            recipients=["bob@remote.test"],
            message_file=None,
            remote_mta="relay.example.net",
            username="relayuser",
            password="s3cret",
            allow_plaintext_auth=False,
        )
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        client.makeConnection(transport)
        client.dataReceived(b"220 relay.example.net ESMTP\r\n")
        self.assertEqual(transport.value(), b"EHLO mx.example.test\r\n")
        transport.clear()
        client.dataReceived(b"250-relay.example.net\r\n250 AUTH PLAIN LOGIN\r\n")
        self.assertNotIn(b"AUTH", transport.value())
        self.assertEqual(transport.value(), b"QUIT\r\n")
        client.connectionLost(Failure(Exception("closed")))
        result = self.successResultOf(client.done)
        self.assertIn("without TLS", result.error.response)


class LeaseTests(unittest.TestCase):
    timeout = 60

    async def test_dead_node_lease_expires_and_another_node_sends_once(self):
        store = await make_store(self)
        relay = ScriptedRelay()
        port = relay.listen(self)
        config = make_config(f"127.0.0.1:{port}")
        clock = make_clock()
        _, _, job_id = await queue_message(store, ["bob@remote.test"])
        # node-1 claims the job and dies before doing anything with it.
        (claimed,) = await store.claim_outbound(
            "node-1", 300 * 10**9, now=int(clock.seconds() * 1e9)
        )
        self.assertEqual(claimed.id, job_id)
        node2 = make_queue(self, store, config, clock=clock, node="node-2")
        self.assertEqual(await node2.process_due(), 0, "the lease of node-1 holds")
        clock.advance(299)
        self.assertEqual(await node2.process_due(), 0)
        clock.advance(1)
        self.assertEqual(await node2.process_due(), 1)
        self.assertEqual(len(relay.received), 1)
        job = await store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.attempts), ("sent", 2))
        first, second = job.attempt_log
        self.assertEqual((first.node, first.result["classification"]), ("node-1", "temporary"))
        self.assertIn("lease of node-1 expired", first.result["response"])
        self.assertEqual((second.node, second.result["classification"]), ("node-2", "success"))

    async def test_stalled_node_is_fenced_out_after_takeover(self):
        """node-1 is mid-delivery (the relay sits on the final dot) and its lease runs out
        (its clock stands still: no renewal); node-2 takes the job and delivers it; node-1's
        late report changes nothing."""
        store = await make_store(self)
        stalling = ScriptedRelay(stall=True)
        stall_port = stalling.listen(self)
        good = ScriptedRelay()
        good_port = good.listen(self)
        clock1, clock2 = make_clock(), make_clock()
        node1 = make_queue(
            self, store, make_config(f"127.0.0.1:{stall_port}"), clock=clock1, node="node-1"
        )
        node2 = make_queue(
            self, store, make_config(f"127.0.0.1:{good_port}"), clock=clock2, node="node-2"
        )
        _, _, job_id = await queue_message(store, ["bob@remote.test"])
        first = defer.Deferred.fromCoroutine(node1.run_once())
        while stalling.data_count == 0:
            await deferLater(0.01)
        self.assertEqual(await node2.process_due(), 0, "node-1's lease holds")
        clock2.advance(301)
        self.assertEqual(await node2.process_due(), 1)
        self.assertEqual(len(good.received), 1)
        node1.stop_overdue()  # node-1's connection finally drops
        await first
        job = await store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.attempts), ("sent", 2))
        self.assertEqual(stalling.received, [], "node-1's copy was never accepted")
        self.assertEqual([a.node for a in job.attempt_log], ["node-1", "node-2"])
        self.assertEqual(job.attempt_log[0].result["classification"], "temporary")


def deferLater(seconds):
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)


class WorkerLoopTests(unittest.TestCase):
    timeout = 30

    async def test_idle_worker_is_woken_by_a_queued_job(self):
        store = await make_store(self)
        relay = ScriptedRelay()
        port = relay.listen(self)
        clock = make_clock()  # idle polls never end unless something wakes the worker
        queue = make_queue(self, store, make_config(f"127.0.0.1:{port}"), clock=clock)
        queue.startService()
        self.addCleanup(queue.stopService)
        while not queue._sleepers:
            await deferLater(0.01)
        await queue_message(store, ["bob@remote.test"])
        await relay.arrived
        self.assertEqual(len(relay.received), 1)
        self.assertEqual(SENDER, "alice@example.com")
