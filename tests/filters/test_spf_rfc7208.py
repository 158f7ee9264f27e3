"""The RFC 7208 test suite (``spf_suite/rfc7208-tests.yml``, from pyspf's source
distribution, BSD licence in ``spf_suite/rfc7208-tests.LICENSE``) run through our DNS glue: each
scenario's zone data is served by a twisted.names server on loopback, pyspf asks it through
``haitatsu.dns`` and ``haitatsu.mailauth.spf.check_host`` in a thread, and the result (and the
explanation, where the suite gives one) must be what the suite says.

The zone data follows the suite's conventions (pyspf's ``test/testspf.py``): an ``SPF`` record
is also served as TXT when the name has no TXT of its own, ``TXT: NONE`` means no TXT record,
``TIMEOUT`` makes the server never answer.
"""

from __future__ import annotations

import os
import sys

import yaml
from twisted.internet import threads
from twisted.trial import unittest

from haitatsu.mailauth.spf import check_host
from tests.filters.zones import TIMEOUT, zone_resolver

SUITE = os.path.join(os.path.dirname(__file__), "spf_suite", "rfc7208-tests.yml")


def zone_entries(name: str, records: list) -> list:
    """One name's records in ``zones`` form, converted as the suite's own runner does."""
    out, generated = [], []
    has_txt = False
    for record in records:
        if record == TIMEOUT:
            out.append(TIMEOUT)
            continue
        ((rtype, value),) = record.items()
        if rtype in ("TXT", "SPF") and isinstance(value, str):
            value = [value]
        if rtype == "TXT":
            has_txt = True
        elif rtype == "SPF":
            generated.append(("TXT", value))
        if value != ["NONE"]:
            out.append((rtype, tuple(value) if isinstance(value, list) else value))
    if not has_txt:
        out.extend(generated)
    return out


def load_scenarios(path: str = SUITE) -> list[dict]:
    with open(path, "rb") as f:
        return [s for s in yaml.safe_load_all(f) if s]


class RFC7208Case(unittest.TestCase):
    """One scenario's tests; a subclass per scenario is made below."""

    timeout = 60
    scenario: dict = {}

    async def run_case(self, case: dict):
        zone = {
            name: zone_entries(name, records) for name, records in self.scenario["zonedata"].items()
        }
        _, blocking, _ = zone_resolver(self, zone, timeout=0.4)
        outcome = await threads.deferToThread(
            check_host,
            blocking,
            case["host"],
            case["mailfrom"],
            case["helo"],
            receiver="receiver.test",
            strict=case.get("strict", True),
            default_explanation="DEFAULT",
        )
        expected = case["result"]
        expected = [expected] if isinstance(expected, str) else list(expected)
        self.assertIn(outcome.result, expected, f"{case.get('spec')}: {case.get('description')}")
        if "explanation" in case:
            self.assertEqual(outcome.explanation, case["explanation"])


def _make_test(case):
    async def test(self):
        await self.run_case(case)

    test.__doc__ = f"RFC 7208 {case.get('spec', '')}: {case.get('description', '')}"
    return test


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


_module = sys.modules[__name__]
for _scenario in load_scenarios():
    _name = "Test_" + _identifier(_scenario["description"])[:60]
    _body = {"scenario": _scenario, "__module__": __name__}
    for _test_id, _case in _scenario["tests"].items():
        _body[f"test_{_identifier(_test_id)}"] = _make_test(_case)
    setattr(_module, _name, type(_name, (RFC7208Case,), _body))
del _module, _scenario, _name, _body, _test_id, _case
