"""``GET /api/v1/mailboxes/:mailbox_id/outbound``: the queue's jobs with recipients and
attempts, newest first, paginated (our addition)."""

from __future__ import annotations

from twisted.trial import unittest

from tests.api.client import APIClient
from tests.queue.helpers import ScriptedRelay, make_config, make_queue, queue_message
from tests.support import make_store


class OutboundJobsTests(unittest.TestCase):
    timeout = 60

    async def test_jobs_with_recipients_and_attempts(self):
        store = await make_store(self)
        relay = ScriptedRelay(rcpt_replies={"bob@remote.test": (550, "5.1.1 unknown user")})
        port = relay.listen(self)
        queue = make_queue(self, store, make_config(f"127.0.0.1:{port}"))
        mailbox, message_id, first = await queue_message(store, ["bob@remote.test"])
        await queue.process_due()
        _, _, second = await queue_message(store, ["carol@remote.test"])
        client = APIClient(store)
        base = f"/api/v1/mailboxes/{mailbox.id}/outbound"

        answer = await client.get(base)
        self.assertEqual(answer.status, 200, answer.body)
        jobs = answer.json["data"]
        self.assertEqual([j["id"] for j in jobs], [second, first])
        queued, failed = jobs
        self.assertEqual(queued["status"], "queued")
        (pending,) = queued["recipients"]
        self.assertEqual(
            {k: v for k, v in pending.items() if k != "updated_at"},
            {"rcpt": "carol@remote.test", "status": "pending"},
        )
        self.assertEqual(queued["attempt_log"], [])
        self.assertNotIn("attempts", queued, "zero values are omitted")
        self.assertEqual(failed["status"], "failed")
        self.assertEqual(failed["attempts"], 1)
        self.assertEqual(failed["message_id"], message_id)
        self.assertEqual(failed["mail_from"], f"bounces+{message_id}@example.com")
        self.assertEqual(
            failed["last_error"],
            {
                "code": 550,
                "enhanced_status_code": "5.1.1",
                "classification": "permanent",
                "response": "550 5.1.1 unknown user",
            },
        )
        self.assertEqual(failed["recipients"][0]["status"], "failed")
        self.assertEqual(failed["recipients"][0]["code"], 550)
        (attempt,) = failed["attempt_log"]
        self.assertEqual(attempt["node"], "node-1")
        self.assertEqual(attempt["result"]["classification"], "permanent")
        self.assertIn("bounce_message_id", failed)

        page = (await client.get(base + "?limit=1")).json
        self.assertEqual([j["id"] for j in page["data"]], [second])
        rest = (await client.get(base + "?limit=1&cursor=" + page["pagination"]["next"])).json
        self.assertEqual([j["id"] for j in rest["data"]], [first])
        self.assertEqual(rest["pagination"]["next"], "")

    async def test_unknown_mailbox_is_404(self):
        store = await make_store(self)
        answer = await APIClient(store).get("/api/v1/mailboxes/01JAAAAAAAAAAAAAAAAAAAAAAA/outbound")
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.json["error"]["code"], "mailbox_not_found")
