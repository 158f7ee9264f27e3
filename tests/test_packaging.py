"""The installed package: what ``pip install .`` put into the venv works without the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

from twisted.trial import unittest

SITE = sysconfig.get_paths()["purelib"]
INSTALLED = os.path.isdir(os.path.join(SITE, "haitatsu"))


class PackageListTests(unittest.SynchronousTestCase):
    """setup.cfg lists packages explicitly (DESIGN.md): every package in the tree must be there,
    or ``pip install .`` silently leaves it out."""

    def test_every_package_is_listed_in_setup_cfg(self):
        import configparser

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        parser = configparser.ConfigParser()
        parser.read(os.path.join(root, "setup.cfg"))
        listed = set(parser["options"]["packages"].split())
        found = {
            os.path.relpath(dirpath, root).replace(os.sep, ".")
            for dirpath, _, files in os.walk(os.path.join(root, "haitatsu"))
            if "__init__.py" in files
        }
        self.assertEqual(sorted(found - listed), [])


class InstalledPackageTests(unittest.SynchronousTestCase):
    skip = None if INSTALLED else "haitatsu is not installed in this environment (run ./dev test)"

    def run_outside_checkout(self, *args):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(args, cwd="/", env=env, capture_output=True, text=True, timeout=120)

    def test_twistd_lists_the_plugin(self):
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        result = self.run_outside_checkout(twistd, "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("haitatsu", result.stdout)

    def test_package_data_and_filters_are_installed(self):
        code = (
            "import haitatsu.filters, haitatsu.tap, importlib.resources as r;"
            "print(haitatsu.filters.__file__);"
            "print(r.files('haitatsu.config').joinpath('Haitatsu.pkl').is_file());"
            "print(sorted(p.name for p in r.files('haitatsu.storage').joinpath('schema')"
            ".iterdir())[0])"
        )
        result = self.run_outside_checkout(sys.executable, "-c", code)
        self.assertEqual(result.returncode, 0, result.stderr)
        filters_file, has_schema, first_sql = result.stdout.split()
        self.assertTrue(filters_file.startswith(SITE), filters_file)
        self.assertEqual(has_schema, "True")
        self.assertEqual(first_sql, "001_initial.sql")

    def test_bad_config_exits_non_zero_with_the_reason(self):
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        result = self.run_outside_checkout(
            twistd, "--pidfile=", "-n", "haitatsu", "--config", "/nonexistent/haitatsu.pkl"
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("/nonexistent/haitatsu.pkl", result.stdout + result.stderr)
