"""The service token (API.md 0): exact prefix, constant-time match, live from the config."""

from twisted.trial import unittest

from tests.api.client import TOKEN, APIClient, LiveConfig

UNAUTHORIZED = b'{"error":{"code":"unauthorized","message":"Authentication required","details":{}}}'


class ServiceTokenTests(unittest.TestCase):
    # Unknown paths under /api/v1 need the token before they answer 404, so these tests need
    # no store: authentication is decided before any route runs.

    async def assertUnauthorized(self, client, path="/api/v1/mailboxes", **kw):
        answer = await client.request("GET", path, **kw)
        self.assertEqual(answer.status, 401)
        self.assertEqual(answer.body, UNAUTHORIZED)
        self.assertEqual(answer.header("Content-Type"), "application/json")

    async def test_missing_header_is_401_with_the_exact_body(self):
        await self.assertUnauthorized(APIClient(), auth=False)

    async def test_lowercase_bearer_prefix_is_refused(self):
        await self.assertUnauthorized(
            APIClient(), auth=False, headers={"Authorization": f"bearer {TOKEN}"}
        )

    async def test_two_spaces_after_bearer_are_refused(self):
        await self.assertUnauthorized(
            APIClient(), auth=False, headers={"Authorization": f"Bearer  {TOKEN}"}
        )

    async def test_wrong_token_is_refused(self):
        await self.assertUnauthorized(
            APIClient(), auth=False, headers={"Authorization": "Bearer not-the-token"}
        )

    async def test_token_prefix_is_not_enough(self):
        await self.assertUnauthorized(
            APIClient(), auth=False, headers={"Authorization": f"Bearer {TOKEN[:-1]}"}
        )

    async def test_empty_configured_token_rejects_everything(self):
        client = APIClient(config=LiveConfig(token=""))
        await self.assertUnauthorized(client, auth=False, headers={"Authorization": "Bearer "})
        await self.assertUnauthorized(client, auth=False, headers={"Authorization": "Bearer"})
        await self.assertUnauthorized(client)

    async def test_unknown_api_path_needs_the_token_first(self):
        await self.assertUnauthorized(APIClient(), path="/api/v1/nothing-here", auth=False)

    async def test_unknown_api_path_with_token_is_fibers_plain_404(self):
        answer = await APIClient().get("/api/v1/nothing-here")
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.body, b"Cannot GET /api/v1/nothing-here")
        self.assertEqual(answer.header("Content-Type"), "text/plain; charset=utf-8")

    async def test_unknown_path_outside_the_api_needs_no_token(self):
        answer = await APIClient().request("DELETE", "/elsewhere", auth=False)
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.body, b"Cannot DELETE /elsewhere")

    async def test_path_is_shown_as_sent(self):
        answer = await APIClient().get("/api/v1/%3Cb%3E")
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.body, b"Cannot GET /api/v1/%3Cb%3E")

    async def test_a_reload_changes_the_token_for_the_next_request(self):
        config = LiveConfig(token="old-token")
        client = APIClient(config=config)
        old = {"Authorization": "Bearer old-token"}
        new = {"Authorization": "Bearer new-token"}
        answer = await client.get("/api/v1/nothing", auth=False, headers=old)
        self.assertEqual(answer.status, 404)
        config.set_token("new-token")
        await self.assertUnauthorized(client, path="/api/v1/nothing", auth=False, headers=old)
        answer = await client.get("/api/v1/nothing", auth=False, headers=new)
        self.assertEqual(answer.status, 404)

    async def test_health_needs_no_token(self):
        answer = await APIClient().get("/health", auth=False)
        self.assertEqual((answer.status, answer.body), (200, b'{"status":"ok"}'))
