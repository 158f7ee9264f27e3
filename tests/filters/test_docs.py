"""The sender-authentication chains in docs/plugins.md, docs/configuration.md and (commented
out) in etc/haitatsu.pkl evaluate with the real ``pkl`` and build, as written."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from twisted.internet import reactor
from twisted.trial import unittest

from haitatsu.config.loader import load_config
from haitatsu.dns import Resolver
from haitatsu.filtering import FilterEnvironment
from haitatsu.filtering.registry import build_chain, discover
from tests.filters.helpers import signing_key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY_PATH = "/etc/haitatsu/arc.pem"


class DocumentedChainTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="haitatsu-authdocs-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.key = os.path.join(self.dir, "arc.pem")
        with open(self.key, "wb") as f:
            f.write(signing_key()[0])

    def build(self, text: str):
        path = os.path.join(self.dir, "haitatsu.pkl")
        with open(path, "w") as f:
            f.write(text.replace(KEY_PATH, self.key))
        config = load_config(path)
        environment = FilterEnvironment(None, reactor, Resolver(reactor), config)
        return build_chain(config.filters, environment, discover()).names

    def blocks(self, doc: str) -> list[str]:
        with open(os.path.join(ROOT, "docs", doc)) as f:
            blocks = re.findall(r"```pkl\n(.*?)```", f.read(), re.S)
        return [b for b in blocks if 'name = "spf"' in b]

    def test_plugins_md(self):
        first, second = self.blocks("plugins.md")
        self.assertEqual(self.build(first), ["sender_rules", "spf", "dkim", "dmarc"])
        self.assertEqual(self.build(second), ["spf", "dkim", "arc", "dmarc", "arc"])

    def test_configuration_md(self):
        [block] = self.blocks("configuration.md")
        self.assertEqual(self.build(block), ["sender_rules", "spf", "dkim", "dmarc"])

    def test_example_config(self):
        with open(os.path.join(ROOT, "etc", "haitatsu.pkl")) as f:
            text = f.read()
        names = ("spf", "dkim", "arc", "dmarc")
        pattern = r'^(\s*)// (new \{ name = "(?:%s)".*)$' % "|".join(names)
        uncommented = re.sub(pattern, r"\1\2", text, flags=re.M)
        self.assertNotEqual(uncommented, text)
        self.assertEqual(
            self.build(uncommented), ["sender_rules", "spf", "dkim", "arc", "dmarc", "arc"]
        )
