"""Differential test: every script of the corpus on every message, through our interpreter and
through Pigeonhole's ``sieve-test`` (Debian ``dovecot-sieve``); the actions must agree.

``sieve-test`` prints the actions it would perform; we compare the stores (folder and flags),
redirects, discards, rejects and vacation responses (subject and period), and the implicit keep
a runtime error falls back to. Vacation's own decision whether to answer (RFC 5230 section 4)
is not part of the script's result and is tested in test_vacation.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from twisted.trial import unittest

from haitatsu.sieve import (
    Discard,
    Envelope,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveMessage,
    Vacation,
    compile_script,
    run,
)
from tests.sieve.corpus import MESSAGES, SCRIPTS, script_text

SIEVE_TEST = shutil.which("sieve-test")

_CONFIG = """\
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{root}/mail
"""


def parse_sieve_test(stdout: str, stderr: str) -> set:
    """The actions ``sieve-test`` printed, as comparable tuples."""
    if "resolved with successful implicit keep" in stderr:
        return {("store", "INBOX", frozenset())}
    actions = set()
    current = None
    in_message = False
    for line in stdout.splitlines():
        if line.startswith("START MESSAGE"):
            in_message = True
            continue
        if line.startswith("END MESSAGE"):
            in_message = False
            continue
        if in_message:
            continue
        stripped = line.strip()
        if stripped.startswith("* "):
            if current is not None:
                actions.add(_freeze(current))
            text = stripped[2:]
            if text.startswith("store message in folder: "):
                current = ["store", text.split(": ", 1)[1], set()]
            elif text.startswith("redirect message to: "):
                current = ["redirect", text.split(": ", 1)[1].strip("<>").lower()]
            elif text == "discard":
                current = ["discard"]
            elif text.startswith("reject message with reason: "):
                current = ["reject", text.split(": ", 1)[1].rstrip("?")]
            elif text.startswith("send vacation message"):
                current = ["vacation", "", 0]
            else:
                current = ["unknown", text]
        elif stripped.startswith("+ add IMAP flags:") and current and current[0] == "store":
            current[2].update(f.lower() for f in stripped.split(":", 1)[1].split())
        elif stripped.startswith("=> subject") and current and current[0] == "vacation":
            current[1] = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("=> seconds") and current and current[0] == "vacation":
            current[2] = int(stripped.split(":", 1)[1])
    if current is not None:
        actions.add(_freeze(current))
    return actions


def _freeze(action):
    return tuple(frozenset(x) if isinstance(x, set) else x for x in action)


def ours(outcome) -> set:
    out = set()
    for action in outcome.actions:
        if isinstance(action, Keep):
            out.add(("store", "INBOX", frozenset(f.lower() for f in action.flags)))
        elif isinstance(action, FileInto):
            out.add(("store", action.folder, frozenset(f.lower() for f in action.flags)))
        elif isinstance(action, Redirect):
            out.add(("redirect", action.address.lower()))
        elif isinstance(action, Discard):
            out.add(("discard",))
        elif isinstance(action, Reject):
            # sieve-test prints the line ends of a multi-line reason as "??".
            out.add(("reject", action.text.rstrip("\r\n")))
        elif isinstance(action, Vacation):
            out.add(("vacation", action.subject, action.period))
    return out


class DifferentialTests(unittest.SynchronousTestCase):
    skip = None if SIEVE_TEST else "sieve-test (Debian dovecot-sieve) is not installed"

    def setUp(self):
        # sieve-test refuses to run as root: it runs as nobody, in a directory nobody can write
        # (it saves compiled scripts beside them).
        self.root = tempfile.mkdtemp(prefix="sieve-diff-")
        self.addCleanup(shutil.rmtree, self.root, True)
        os.chmod(self.root, 0o777)
        # As root: nobody (sieve-test will not run as root); otherwise whoever we are.
        uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
        text = _CONFIG.format(root=self.root, uid=uid, gid=gid)
        self.config = self.write("dovecot.conf", text.encode())

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.root, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
        return path

    def pigeonhole(self, script_path, message_path, sender, recipient) -> set:
        command = [SIEVE_TEST, "-c", self.config, "-x", "+vacation-seconds"]
        command += ["-f", sender, "-a", recipient, "-r", recipient]
        done = subprocess.run(
            [*command, script_path, message_path],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if "Fatal" in done.stderr:
            raise AssertionError(f"sieve-test failed: {done.stderr}")
        return parse_sieve_test(done.stdout, done.stderr)

    def test_corpus(self):
        messages = []
        for name, sender, recipient, data in MESSAGES:
            path = self.write(f"{name}.eml", data)
            messages.append((name, sender, recipient, path))
        mismatches = []
        compared = 0
        for script_name, body in SCRIPTS:
            text = script_text(body)
            script = compile_script(text)
            script_path = self.write(f"{script_name}.sieve", text.encode())
            for message_name, sender, recipient, path in messages:
                expected = self.pigeonhole(script_path, path, sender, recipient)
                got = ours(run(script, SieveMessage(path), Envelope(sender, recipient)))
                compared += 1
                if got != expected:
                    mismatches.append(
                        f"{script_name} on {message_name}:\n  sieve-test {sorted(expected)}\n"
                        f"  ours       {sorted(got)}"
                    )
        self.assertEqual(mismatches, [], "\n".join(mismatches))
        self.assertEqual(compared, len(SCRIPTS) * len(MESSAGES))

    def test_parser_agrees_on_errors(self):
        """Scripts both implementations refuse (and one both accept)."""
        cases = [
            ('require "fileinto";\nif true {\n fileinto "x" \n}\n', False),
            ('fileinto "x";\n', False),
            ('require "nonsense";\nkeep;\n', False),
            ('if header :contains "subject" "x" { keep; }\n', True),
            ("keep", False),
            ('require ["relational"];\nif header :count "xx" "a" "1" { keep; }\n', False),
        ]
        for text, valid in cases:
            path = self.write("case.sieve", text.encode())
            done = subprocess.run(
                [SIEVE_TEST, "-c", self.config, path, self.write("m.eml", MESSAGES[0][3])],
                capture_output=True,
                text=True,
                timeout=30,
            )
            theirs = "failed to compile" not in done.stderr
            try:
                compile_script(text)
                mine = True
            except Exception:
                mine = False
            self.assertEqual((theirs, mine), (valid, valid), text)
