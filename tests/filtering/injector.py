"""A test plugin, dropped into a plugin directory like any operator's: ``inject`` puts the
results another filter would have found (SPF, DKIM, DMARC, ...) into the chain, read from the
message's ``X-Test-Results`` header (a JSON object), so one chain serves many cases.

``X-Test-Results: {"fields": {"spf": "fail"}, "method": "spf", "score": 2}`` adds one result;
a JSON list adds several. ``X-Test-Delivery: tempfail`` makes its DELIVERY check tempfail;
``X-Test-Refile: Archive`` moves a copy that is in Junk by then to Archive.
"""

from __future__ import annotations

import os

from haitatsu.config.model import PluginsConfig

SOURCE = '''
"""inject: results from the X-Test-Results header (tests only)."""

import json

from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import (
    FilterResult, IFilter, IFilterFactory, Options, Stage, continue_, tempfail,
)


@implementer(IFilter)
class Inject:
    name = "inject"
    stages = (Stage.DATA, Stage.DELIVERY)

    def check(self, stage, context):
        if stage is Stage.DELIVERY:
            delivery, refile = context.notes["inject"]
            if delivery == ["tempfail"]:
                return tempfail("try later", reason="inject")
            # Refile a copy an earlier filter put in Junk, as a user's Sieve script may.
            if refile and context.target.folder == "Junk":
                context.target.folder = refile[0]
            return None
        context.notes["inject"] = (
            context.message.header("X-Test-Delivery"),
            context.message.header("X-Test-Refile"),
        )
        values = context.message.header("X-Test-Results")
        if not values:
            return None
        found = json.loads(values[0])
        if isinstance(found, dict):
            found = [found]
        return continue_(
            results=[
                FilterResult(
                    method=r.get("method", ""),
                    result=r.get("result", ""),
                    fields=r.get("fields", {}),
                    score=r.get("score", 0),
                    spam_reasons=r.get("spam_reasons", ()),
                )
                for r in found
            ]
        )


@implementer(IPlugin, IFilterFactory)
class InjectFactory:
    name = "inject"
    description = "results from the X-Test-Results header (tests only)"

    def build(self, options, environment):
        Options(self.name, options).done()
        return Inject()


inject = InjectFactory()
'''


def plugin_directory(testcase) -> PluginsConfig:
    """A fresh plugin directory holding ``inject.py``; the ``plugins`` config naming it."""
    path = os.path.abspath(testcase.mktemp())
    os.makedirs(path, mode=0o755)
    os.chmod(path, 0o755)
    with open(os.path.join(path, "inject.py"), "w") as f:
        f.write(SOURCE)
    os.chmod(os.path.join(path, "inject.py"), 0o644)
    return PluginsConfig(directory=path)
