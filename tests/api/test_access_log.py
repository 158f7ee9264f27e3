"""The API's access log (``QuietSite``): a line per request where the live log level shows
level info, and none formatted where it does not (``logging.level = "warn"``)."""

import os

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

import haitatsu.log
from haitatsu.api import HaitatsuAPI
from tests.api.client import LiveConfig


class AccessLogTests(unittest.TestCase):
    async def setUp(self):
        previous = haitatsu.log.settings.level
        self.addCleanup(haitatsu.log.settings.set_level, previous)
        self.path = os.path.abspath(self.mktemp())
        site = HaitatsuAPI(LiveConfig(), None, None, reactor).site()
        site.logPath = self.path  # read when the port starts the factory
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(site)
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    async def get(self, path):
        response = await self.http.get(self.base + path)
        await response.content()
        return response.code

    def lines(self):
        with open(self.path) as f:
            return f.read().splitlines()

    async def test_info_logs_each_request(self):
        haitatsu.log.settings.set_level("info")
        self.assertEqual(await self.get("/health"), 200)
        self.assertEqual(await self.get("/nowhere"), 404)
        lines = self.lines()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn('"GET /health HTTP/1.1" 200', lines[0])
        self.assertIn('"GET /nowhere HTTP/1.1" 404', lines[1])

    async def test_warn_formats_no_line_and_a_reload_to_info_brings_them_back(self):
        haitatsu.log.settings.set_level("warn")
        self.assertEqual(await self.get("/health"), 200)
        self.assertEqual(self.lines(), [])
        haitatsu.log.settings.set_level("info")  # what a reload of logging.level does
        self.assertEqual(await self.get("/health"), 200)
        self.assertEqual(len(self.lines()), 1)
