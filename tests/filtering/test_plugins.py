"""Finding plugins (built-ins and the operator's directory) and building chains from config."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap

from twisted.internet import task
from twisted.plugin import IPlugin
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from haitatsu.config.model import Config, ConfigError, FilterSpec
from haitatsu.filtering import FilterConfigError, FilterEnvironment, IFilter, IFilterFactory
from haitatsu.filtering.registry import PLUGIN_PACKAGE, Filtering, build_chain, discover

BUILTINS = {"dnsbl", "greylist", "header_validate", "rate_limit", "sender_rules", "size_check"}

PLUGIN = '''
"""A test plugin: stamps a header on every message."""
from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import IFilter, IFilterFactory, Options, Stage, continue_


@implementer(IFilter)
class Stamp:
    name = "{name}"
    stages = (Stage.DATA,)

    def __init__(self, text):
        self.text = text

    def check(self, stage, context):
        return continue_(headers=[("X-Stamp", self.text)])


@implementer(IPlugin, IFilterFactory)
class StampFactory:
    name = "{name}"
    description = "stamps X-Stamp"

    def build(self, options, environment):
        opts = Options(self.name, options)
        text = opts.string("text", default="{default}")
        opts.done()
        return Stamp(text)


factory = StampFactory()
'''


def write_plugin(directory, module, name="stamp", default="stamped"):
    path = os.path.join(directory, f"{module}.py")
    with open(path, "w") as f:
        f.write(PLUGIN.format(name=name, default=default))
    return path


def environment(config=None):
    return FilterEnvironment(
        store=None, reactor=task.Clock(), resolver=None, config=config or Config()
    )


#: Sender authentication (filters/spf.py, dkim.py, dmarc.py, arc.py).
BUILTINS |= {"spf", "dkim", "dmarc", "arc"}


class BuiltinTests(unittest.SynchronousTestCase):
    def test_builtins_are_plugins(self):
        factories = discover()
        self.assertEqual(set(factories), BUILTINS)
        for name, factory in factories.items():
            verifyObject(IFilterFactory, factory)
            self.assertTrue(IPlugin.providedBy(factory), name)
            self.assertTrue(factory.description, name)

    def test_every_builtin_builds_with_its_defaults(self):
        factories = discover()
        for name in BUILTINS:
            chain = build_chain([FilterSpec(name)], environment(), factories)
            [entry] = chain.entries
            verifyObject(IFilter, entry.filter)
            self.assertEqual((entry.name, entry.on_error, entry.timeout), (name, "tempfail", 30.0))

    def test_unknown_filter(self):
        with self.assertRaises(FilterConfigError) as caught:
            build_chain([FilterSpec("size_check"), FilterSpec("nope")], environment(), discover())
        message = str(caught.exception)
        self.assertIn("filters[1]: no filter called 'nope'", message)
        self.assertIn("(installed: ", message)
        self.assertIn("dnsbl, greylist, header_validate", message)

    def test_bad_options_name_the_filter_and_the_option(self):
        factories = discover()
        cases = [
            (
                FilterSpec("size_check", options={"max_bytes": "big"}),
                "filters[size_check].max_bytes: expected an Int",
            ),
            (
                FilterSpec("size_check", options={"max_byte": 5}),
                "filters[size_check]: unknown option max_byte",
            ),
            (FilterSpec("greylist", options={"skip_networks": ["nonsense"]}), "is not a network"),
            (
                FilterSpec("dnsbl", options={"zones": [{"zone": "x.test", "action": "maybe"}]}),
                "filters[dnsbl].zones[0].action: must be one of",
            ),
            (
                FilterSpec("rate_limit", options={"per_ip": {"limit": -1}}),
                "filters[rate_limit].per_ip.limit: must be >= 0",
            ),
            (
                FilterSpec("header_validate", options={"checks": ["spelling"]}),
                "unknown check 'spelling'",
            ),
        ]
        for spec, expected in cases:
            with self.assertRaises(FilterConfigError) as caught:
                build_chain([spec], environment(), factories)
            self.assertIn(expected, str(caught.exception))

    def test_timeout_and_error_policy_from_config(self):
        spec = FilterSpec("size_check", on_error="continue", timeout_seconds=2.5)
        [entry] = build_chain([spec], environment(), discover()).entries
        self.assertEqual((entry.on_error, entry.timeout), ("continue", 2.5))


class PluginDirectoryTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        os.chmod(self.directory, 0o755)

    def test_a_module_in_the_directory_is_a_plugin(self):
        write_plugin(self.directory, "stamp_plugin")
        factories = discover(self.directory)
        self.assertEqual(set(factories), BUILTINS | {"stamp"})
        self.assertEqual(type(factories["stamp"]).__module__, f"{PLUGIN_PACKAGE}.stamp_plugin")
        chain = build_chain([FilterSpec("stamp", options={"text": "hi"})], environment(), factories)
        self.assertEqual(chain.entries[0].filter.text, "hi")

    def test_the_directory_is_not_on_sys_path(self):
        """Its modules cannot shadow top-level modules: only haitatsu_plugins.<name> exists."""
        write_plugin(self.directory, "json")
        discover(self.directory)
        self.assertNotIn(self.directory, sys.path)
        self.assertTrue(hasattr(importlib.import_module("json"), "dumps"))
        self.assertIn(f"{PLUGIN_PACKAGE}.json", sys.modules)

    def test_a_changed_module_is_imported_again(self):
        path = write_plugin(self.directory, "stamp_plugin", default="one")
        factories = discover(self.directory)
        self.assertEqual(
            build_chain([FilterSpec("stamp")], environment(), factories).entries[0].filter.text,
            "one",
        )
        write_plugin(self.directory, "stamp_plugin", default="two, longer")
        os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
        factories = discover(self.directory)
        self.assertEqual(
            build_chain([FilterSpec("stamp")], environment(), factories).entries[0].filter.text,
            "two, longer",
        )
        os.unlink(path)
        self.assertNotIn("stamp", discover(self.directory))

    def test_a_broken_module_is_an_error_naming_the_file(self):
        path = os.path.join(self.directory, "broken.py")
        with open(path, "w") as f:
            f.write("import nonexistent_module_for_the_test\n")
        with self.assertRaises(FilterConfigError) as caught:
            discover(self.directory)
        self.assertIn(path, str(caught.exception))
        self.assertIn("ModuleNotFoundError", str(caught.exception))

    def test_two_plugins_with_one_name(self):
        write_plugin(self.directory, "a", name="same")
        write_plugin(self.directory, "b", name="same")
        with self.assertRaises(FilterConfigError) as caught:
            discover(self.directory)
        self.assertIn("two filter plugins are called 'same'", str(caught.exception))

    def test_a_plugin_cannot_replace_a_builtin(self):
        write_plugin(self.directory, "mine", name="greylist")
        with self.assertRaises(FilterConfigError) as caught:
            discover(self.directory)
        self.assertIn("'greylist'", str(caught.exception))

    def test_world_writable_is_refused(self):
        path = write_plugin(self.directory, "stamp_plugin")
        os.chmod(path, 0o666)
        with self.assertRaises(FilterConfigError) as caught:
            discover(self.directory)
        self.assertIn("may be written by any user", str(caught.exception))
        os.chmod(path, 0o644)
        os.chmod(self.directory, 0o777)
        with self.assertRaises(FilterConfigError):
            discover(self.directory)

    def test_missing_directory(self):
        with self.assertRaises(FilterConfigError) as caught:
            discover(os.path.join(self.directory, "nope"))
        self.assertIn("is not a directory", str(caught.exception))

    def test_filtering_turns_errors_into_config_errors(self):
        config = Config(filters=(FilterSpec("nope"),))
        with self.assertRaises(ConfigError) as caught:
            Filtering(None, task.Clock(), config)
        self.assertIn("no filter called 'nope'", str(caught.exception))


class PluginTemplateTests(unittest.SynchronousTestCase):
    def test_template_is_valid_python(self):
        compile(textwrap.dedent(PLUGIN.format(name="x", default="y")), "plugin", "exec")


class DocumentedPluginTests(unittest.SynchronousTestCase):
    """The plugin in docs/plugins.md works as written."""

    def test_the_example_plugin(self):
        import re

        from haitatsu.filtering import Action, Recipient, Stage
        from tests.filtering.helpers import make_context

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "docs", "plugins.md")) as f:
            blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
        [source] = [b for b in blocks if "RecipientCapFactory" in b]
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory, mode=0o755)
        with open(os.path.join(directory, "recipient_cap.py"), "w") as f:
            f.write(source)
        factories = discover(directory)
        spec = FilterSpec("recipient_cap", options={"limit": 1})
        [entry] = build_chain([spec], environment(), factories).entries
        context = make_context()
        context.envelope.recipients[:] = [Recipient("a@x.example"), Recipient("b@x.example")]
        verdict = entry.filter.check(Stage.DATA, context)
        self.assertIs(verdict.action, Action.REJECT)
        self.assertEqual(verdict.text, "too many recipients (2)")
        context.envelope.recipients.pop()
        verdict = entry.filter.check(Stage.DATA, context)
        self.assertEqual(verdict.headers, (("X-Recipient-Count", "1"),))
