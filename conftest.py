"""pytest glue for trial TestCases.

trial's ``TestCase.mktemp()`` makes directories relative to the working directory. Here they go
under one temporary directory of this pytest session instead, removed when the session ends, so
test runs neither litter the checkout nor remove each other's files.
"""

import os
import shutil
import tempfile

from twisted.trial import _synctest

_session_dir = tempfile.mkdtemp(prefix="haitatsu-tests-")
_trial_mktemp = _synctest.SynchronousTestCase.mktemp


def _mktemp(self):
    cwd = os.getcwd()
    os.chdir(_session_dir)
    try:
        return os.path.join(_session_dir, _trial_mktemp(self))
    finally:
        os.chdir(cwd)


_synctest.SynchronousTestCase.mktemp = _mktemp


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_session_dir, ignore_errors=True)
