"""pytest glue for trial TestCases.

trial's ``TestCase.mktemp()`` makes directories relative to the working directory. Here they go
under one temporary directory of this pytest session instead, removed when the session ends, so
test runs neither litter the checkout nor remove each other's files.

``./dev test`` runs the suite on two pytest-xdist workers (``-n 2 --dist loadgroup``); each
worker is a process of its own with its own temporary directory, PostgreSQL template database
and moto_server (``tests/support.py``), removed when it ends. The tests in ``HEAVY_PEERS`` start
heavy peers (1,500 IMAP connections, pebble, Postfix, Pigeonhole's sieve-test, rspamd): they are
one xdist work unit, so they run one after another on one worker and never two at once.
"""

import os
import shutil
import sys
import tempfile

import pytest
from twisted.trial import _synctest

_session_dir = tempfile.mkdtemp(prefix="haitatsu-tests-")
_trial_mktemp = _synctest.SynchronousTestCase.mktemp

#: Test modules (paths from the checkout's root) whose tests form the xdist work unit "heavy-peers".
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


def _scope(nodeid: str) -> str:
    """The xdist work unit a test belongs to: ``heavy-peers`` for the tests of ``HEAVY_PEERS``,
    the test itself for every other test."""
    if nodeid.split("::", 1)[0] in HEAVY_PEERS:
        return "heavy-peers"
    return nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    # pytest-xdist's own loadgroup groups by xdist_group marks, which it encodes by rewriting
    # item._nodeid; pytest 9.2 no longer reads that attribute, so the marks group nothing. The
    # groups are made here instead, from the node ids the controller gets: for --dist loadgroup,
    # xdist's load-scope scheduler with HEAVY_PEERS as one unit (the biggest unit, so scheduled
    # first) and every other test a unit of its own.
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class HeavyPeersScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return _scope(nodeid)

    return HeavyPeersScheduling(config, log)


def pytest_sessionfinish(session, exitstatus):
    support = sys.modules.get("tests.support")
    if support is not None:
        support.finish_session()
    shutil.rmtree(_session_dir, ignore_errors=True)
