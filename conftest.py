"""pytest glue for trial TestCases.

trial's ``TestCase.mktemp()`` makes directories relative to the working directory. Here they go
under one temporary directory of this pytest session instead, removed when the session ends, so
test runs neither litter the checkout nor remove each other's files.

``./dev test`` runs the suite on two pytest-xdist workers (``-n 2 --dist loadgroup``); each
worker is a process of its own with its own temporary directory, PostgreSQL template database
and moto_server (``tests/support.py``), removed when it ends. The tests in ``HEAVY_PEERS`` start
heavy peers (1,500 IMAP connections, pebble, Postfix, Pigeonhole's sieve-test, rspamd): they are
one xdist group, so they run one after another on one worker and never two at once.
"""

import os
import shutil
import sys
import tempfile

import pytest
from twisted.trial import _synctest

_session_dir = tempfile.mkdtemp(prefix="haitatsu-tests-")
_trial_mktemp = _synctest.SynchronousTestCase.mktemp

#: Test modules (paths from the checkout's root) whose tests form the xdist group "heavy-peers".
HEAVY_PEERS = (
    "tests/imap/test_idle_scale.py",
    "tests/tls/test_acme.py",
    "tests/queue/test_postfix.py",
    "tests/sieve/test_differential.py",
    "tests/filtering/test_rspamd.py",
)


def _mktemp(self):
    cwd = os.getcwd()
    os.chdir(_session_dir)
    try:
        return os.path.join(_session_dir, _trial_mktemp(self))
    finally:
        os.chdir(cwd)


_synctest.SynchronousTestCase.mktemp = _mktemp


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # tryfirst: before pytest-xdist reads the marks (it appends the group to the node ids).
    for item in items:
        if item.nodeid.split("::", 1)[0] in HEAVY_PEERS:
            item.add_marker(pytest.mark.xdist_group("heavy-peers"))


def pytest_sessionfinish(session, exitstatus):
    support = sys.modules.get("tests.support")
    if support is not None:
        support.finish_session()
    shutil.rmtree(_session_dir, ignore_errors=True)
