"""pytest glue for trial TestCases.

trial's ``TestCase.mktemp()`` makes directories relative to the working directory, named after
the test module (``tests.storage.test_x/...``); they are removed when the session ends.
"""

import glob
import os
import shutil

ROOT = os.path.dirname(os.path.abspath(__file__))


def pytest_sessionfinish(session, exitstatus):
    for path in glob.glob(os.path.join(ROOT, "tests.*")):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
