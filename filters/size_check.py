"""``size_check``: refuse messages over a size, at MAIL FROM (its ``SIZE=``) and after DATA.

The server's own limit (``limits.max_message_size_bytes``) is advertised in EHLO and enforced
while the message streams in; this filter is for a lower limit in the chain's order (before a
costly filter, say) or one that answers differently.

Options: ``max_bytes`` (Int > 0, default ``limits.max_message_size_bytes``), ``action``
(``reject``, the default: ``552 5.3.4``; or ``tempfail``: ``452 4.3.1``).
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import (
    FilterResult,
    IFilter,
    IFilterFactory,
    Options,
    Stage,
    reject,
    tempfail,
)

TEXT = "message size exceeds fixed maximum message size"


@implementer(IFilter)
class SizeCheckFilter:
    name = "size_check"
    stages = (Stage.MAIL, Stage.DATA)

    def __init__(self, max_bytes: int, action: str):
        self.max_bytes = max_bytes
        self.action = action

    def check(self, stage, context):
        if stage is Stage.MAIL:
            declared = context.envelope.mail_params.get("SIZE")
            size = int(declared) if declared and declared.isdigit() else 0
        else:
            size = context.message.size
        if size <= self.max_bytes:
            return None
        result = FilterResult(fields={"size_limit": self.max_bytes})
        if self.action == "tempfail":
            return tempfail(TEXT, code=452, enhanced="4.3.1", reason="size_limit", results=result)
        return reject(TEXT, code=552, enhanced="5.3.4", reason="size_limit", results=result)


@implementer(IPlugin, IFilterFactory)
class SizeCheckFactory:
    name = "size_check"
    description = "refuse messages over max_bytes"

    def build(self, options, environment):
        opts = Options(self.name, options)
        max_bytes = opts.integer(
            "max_bytes", default=environment.config.max_message_size, minimum=1
        )
        action = opts.choice("action", ["reject", "tempfail"], default="reject")
        opts.done()
        return SizeCheckFilter(max_bytes, action)


size_check = SizeCheckFactory()
