"""Sieve (RFC 5228) for haitatsu: scripts per mailbox, run per recipient at delivery.

``grammar`` parses (sievelib, extended) and checks a script; ``interpreter`` runs it on a
message and says what to do; ``message`` is the message as a script sees it; ``responses``
decides and builds vacation answers (RFC 5230) and rejection notices (RFC 5429); ``delivery``
is what the ``sieve`` and ``vacation`` filters share (running scripts in a thread, sending
through the outbound queue); ``managesieve`` is the ManageSieve server (RFC 5804).
docs/sieve.md is the user's guide.
"""

from haitatsu.sieve.grammar import EXTENSIONS, Script, SieveSyntaxError, compile_script
from haitatsu.sieve.interpreter import (
    Discard,
    Envelope,
    FileInto,
    Keep,
    Limits,
    Outcome,
    Redirect,
    Reject,
    Vacation,
    run,
)
from haitatsu.sieve.message import SieveMessage

__all__ = [
    "EXTENSIONS",
    "Discard",
    "Envelope",
    "FileInto",
    "Keep",
    "Limits",
    "Outcome",
    "Redirect",
    "Reject",
    "Script",
    "SieveMessage",
    "SieveSyntaxError",
    "Vacation",
    "compile_script",
    "run",
]
