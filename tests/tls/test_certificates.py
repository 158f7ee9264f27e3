"""Certificates from files, chosen by name, and the ``tls`` configuration block."""

from __future__ import annotations

import os
import shutil
import tempfile

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from haitatsu.config.loader import load_config
from haitatsu.config.model import Config, ConfigError, TLSConfig, restart_keys_changed
from haitatsu.tls import CertificateError, CertificateSet, TLSService, load_pem_files
from tests.config.test_loader import ConfigFileMixin
from tests.tls.ca import TestCA, TLSFixture


def temp_dir(testcase) -> str:
    path = tempfile.mkdtemp(prefix="haitatsu-tls-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


class LoadTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.ca = TestCA(self.dir)

    def test_chain_names_and_serial(self):
        cert_file, key_file, serial = self.ca.issue("a", "Mail.Example.Test", "*.example.test")
        cert = load_pem_files(cert_file, key_file)
        self.assertEqual(cert.names, ("mail.example.test", "*.example.test"))
        self.assertEqual(cert.serial, serial)
        self.assertEqual(cert.source, cert_file)
        self.assertEqual([c.subject for c in cert.chain], [self.ca.intermediate.subject])

    def test_key_of_another_certificate_is_refused(self):
        cert_file, _, _ = self.ca.issue("a", "a.example.test")
        _, other_key, _ = self.ca.issue("b", "b.example.test")
        with self.assertRaises(CertificateError) as caught:
            load_pem_files(cert_file, other_key)
        self.assertIn("the private key does not belong to the certificate", str(caught.exception))

    def test_missing_and_garbage_files(self):
        cert_file, key_file, _ = self.ca.issue("a", "a.example.test")
        missing = os.path.join(self.dir, "nope.pem")
        with self.assertRaises(CertificateError) as caught:
            load_pem_files(missing, key_file)
        self.assertIn(f"tls.cert_file: cannot read {missing}", str(caught.exception))
        garbage = os.path.join(self.dir, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("not a certificate\n")
        with self.assertRaises(CertificateError) as caught:
            load_pem_files(garbage, key_file)
        self.assertIn("no PEM certificate", str(caught.exception))
        with self.assertRaises(CertificateError) as caught:
            load_pem_files(cert_file, garbage)
        self.assertIn("the private key could not be read", str(caught.exception))


class ChooseTests(unittest.SynchronousTestCase):
    def setUp(self):
        ca = TestCA(temp_dir(self))
        self.default = load_pem_files(*ca.issue("d", "mail.example.test")[:2])
        self.wild = load_pem_files(*ca.issue("w", "*.other.test")[:2])
        self.exact = load_pem_files(*ca.issue("e", "mx.other.test")[:2])
        self.set = CertificateSet(self.default, [self.wild, self.exact])

    def test_exact_beats_wildcard_whatever_the_order(self):
        self.assertIs(self.set.choose("mx.other.test"), self.exact)
        self.assertIs(self.set.choose("MX.Other.Test."), self.exact)

    def test_wildcard_covers_one_label(self):
        self.assertIs(self.set.choose("imap.other.test"), self.wild)
        self.assertIs(self.set.choose("a.b.other.test"), self.default)
        self.assertIs(self.set.choose("other.test"), self.default)

    def test_default_for_unknown_or_missing_names(self):
        self.assertIs(self.set.choose("unknown.test"), self.default)
        self.assertIs(self.set.choose(None), self.default)
        self.assertIs(self.set.choose(""), self.default)


class ServiceConfigTests(unittest.SynchronousTestCase):
    def test_off_means_no_service(self):
        self.assertIsNone(TLSService.from_config(Config(), reactor))
        self.assertIsNone(TLSService.from_config(Config(tls=TLSConfig(mode="")), reactor))

    def test_modes_not_built_yet_refuse_to_start(self):
        config = Config(tls=TLSConfig(mode="storage"))
        with self.assertRaises(ConfigError) as caught:
            TLSService.from_config(config, reactor)
        self.assertIn('tls.mode: "storage" is not supported yet', str(caught.exception))

    def test_unusable_files_refuse_to_start(self):
        fixture = TLSFixture(temp_dir(self))
        tls = attrs.evolve(fixture.tls_config(), key_file=fixture.other_key)
        with self.assertRaises(CertificateError):
            TLSService.from_config(Config(tls=tls), reactor)

    def test_all_certificates_loaded_in_order(self):
        fixture = TLSFixture(temp_dir(self))
        service = fixture.service(reactor)
        self.assertEqual(
            [c.serial for c in service.certificates.certificates],
            [fixture.default_serial, fixture.other_serial],
        )

    def test_certificate_paths_are_hot_and_mode_is_restart_only(self):
        old = Config(tls=TLSConfig(mode="manual", cert_file="/a.pem", key_file="/a.key"))
        moved = attrs.evolve(old, tls=attrs.evolve(old.tls, cert_file="/b.pem", key_file="/b.key"))
        self.assertEqual(restart_keys_changed(old, moved), [])
        off = attrs.evolve(old, tls=attrs.evolve(old.tls, mode="off"))
        self.assertEqual(restart_keys_changed(old, off), ["tls.mode"])


class PklTests(ConfigFileMixin, unittest.TestCase):
    def test_certificates_listing_with_relative_paths(self):
        path = self.write_config(
            """
            tls {
              mode = "manual"
              cert_file = "certs/default.pem"
              key_file = "certs/default.key"
              certificates {
                new { cert_file = "certs/other.pem"; key_file = "/etc/keys/other.key" }
              }
            }
            imap { tls_addr = "127.0.0.1:10993" }
            """
        )
        config = load_config(path)
        base = os.path.dirname(path)
        self.assertEqual(config.tls.cert_file, os.path.join(base, "certs/default.pem"))
        [extra] = config.tls.certificates
        self.assertEqual(extra.cert_file, os.path.join(base, "certs/other.pem"))
        self.assertEqual(extra.key_file, "/etc/keys/other.key")
        self.assertEqual(config.endpoint("imap.tls_addr"), "tcp:10993:interface=127.0.0.1")

    def test_certificate_entry_needs_both_files(self):
        path = self.write_config(
            """
            tls {
              mode = "manual"
              cert_file = "a.pem"
              key_file = "a.key"
              certificates { new { cert_file = "b.pem" } }
            }
            """
        )
        with self.assertRaises(ConfigError) as caught:
            load_config(path)
        self.assertIn(
            "tls.certificates[0]: cert_file and key_file are required", str(caught.exception)
        )

    def test_certificates_must_be_a_listing(self):
        with self.assertRaises(ConfigError) as caught:
            Config.from_mapping({"tls": {"certificates": "a.pem"}})
        self.assertIn("tls.certificates: expected a Listing", str(caught.exception))
