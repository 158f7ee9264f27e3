"""Logging: the configured format, and a level that follows config reloads."""

from __future__ import annotations

import json
import os

from twisted.logger import Logger
from twisted.trial import unittest

from haitatsu import log
from haitatsu.config.model import Config


def config(level: str, fmt: str) -> Config:
    return Config.from_mapping({"logging": {"level": level, "format": fmt}})


class LogTests(unittest.SynchronousTestCase):
    def setUp(self):
        saved = vars(log.settings).copy()
        self.addCleanup(lambda: vars(log.settings).update(saved))
        self.addCleanup(lambda: log.settings.set_level(saved["level"]))
        self.path = os.path.abspath(self.mktemp())

    def records(self):
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def test_json_lines_with_fields_and_a_live_level(self):
        log.configure(config("info", "json"), logfile=self.path, nodaemon=False)
        observer = log.observer()
        logger = Logger(namespace="haitatsu.test", observer=observer)
        logger.debug("hidden {n}", n=1)
        logger.info("accepted {trace_id}", trace_id="T1")
        log.apply_reload(config("info", "json"), config("debug", "json"))
        logger.debug("shown {n}", n=2)
        log.apply_reload(config("debug", "json"), config("error", "json"))
        logger.warn("filtered {n}", n=3)
        records = self.records()
        self.assertEqual([r["log_format"] for r in records], ["accepted {trace_id}", "shown {n}"])
        self.assertEqual(records[0]["trace_id"], "T1")
        self.assertEqual(records[1]["n"], 2)

    def test_text_format(self):
        log.configure(config("warn", "text"), logfile=self.path, nodaemon=False)
        logger = Logger(namespace="haitatsu.test", observer=log.observer())
        logger.info("quiet")
        logger.error("loud {what}", what="thing")
        with open(self.path) as f:
            text = f.read()
        self.assertNotIn("quiet", text)
        self.assertIn("loud thing", text)
