"""What the tests of real mail clients share: a loopback listener, fetchmail run once with its
own rcfile (IMAP and POP3), and the near side of a Maildir synchronizer (offlineimap, mbsync).

The clients are Debian's (``./dev test`` installs them); each test is skipped with a reason
when its client is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

from twisted.internet import reactor

FETCHMAIL = shutil.which("fetchmail")
FETCHMAIL_SKIP = None if FETCHMAIL else "fetchmail is not installed (apt-get install -y fetchmail)"

#: The MDA fetchmail runs per message: stdin to the next numbered file in a directory.
SAVE_MDA = textwrap.dedent(
    """
    import os, sys
    directory = sys.argv[1]
    n = len(os.listdir(directory))
    with open(os.path.join(directory, "%04d.eml" % n), "wb") as f:
        f.write(sys.stdin.buffer.read())
    """
)


def listen(testcase, factory) -> int:
    """Serve ``factory`` on a free loopback port until the test ends; return the port. The
    sessions' idle timers run on the test's clock: nothing is left on the reactor."""
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


def client_env(home: str, **extra: str) -> dict:
    """A small, fixed environment for a client process: PATH, HOME and a UTF-8 C locale."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "LANG": "C.UTF-8",
    } | extra


def run_fetchmail(
    work: str, poll: str, user: str, options: str, args: tuple[str, ...] = ()
) -> tuple[int, list[bytes], str]:
    """Run fetchmail once in the new directory ``work`` with an rcfile of its own: the
    ``poll`` line (server, port, protocol), the ``user`` line, and ``options`` (``keep``,
    ``fetchall nokeep``, ...); every message goes to an MDA that saves it byte for byte.
    Return its exit code, the saved messages in order, and its output (``-v``)."""
    out = os.path.join(work, "out")
    os.makedirs(out)
    mda = os.path.join(work, "save.py")
    with open(mda, "w") as f:
        f.write(SAVE_MDA)
    rcfile = os.path.join(work, "fetchmailrc")
    with open(rcfile, "w") as f:
        f.write(
            f"set invisible\nset no bouncemail\npoll {poll}\n  {user}\n"
            f'  mda "{sys.executable} {mda} {out}"\n'
            f"  sslproto '' no rewrite no stripcr {options}\n"
        )
    os.chmod(rcfile, 0o600)
    command = [FETCHMAIL, "-f", rcfile, "--nodetach", "--nosyslog", *args]
    result = subprocess.run(
        [*command, "--pidfile", os.path.join(work, "pid"), "-v"],
        env=client_env(work, FETCHMAILHOME=work),
        capture_output=True,
        timeout=60,
    )
    messages = []
    for name in sorted(os.listdir(out)):
        with open(os.path.join(out, name), "rb") as f:
            messages.append(f.read())
    return result.returncode, messages, (result.stdout + result.stderr).decode("utf-8", "replace")


class NearMaildir:
    """The local Maildir tree of a two-way synchronizer, read and changed by Subject."""

    def __init__(self, root: str):
        self.root = root

    def messages(self, folder: str) -> dict[str, str]:
        """Subject -> Maildir flags (the letters after ``:2,``) of the folder's messages."""
        found = {}
        for sub in ("cur", "new"):
            base = os.path.join(self.root, folder, sub)
            for name in os.listdir(base):
                with open(os.path.join(base, name), "rb") as f:
                    subject = re.search(rb"^Subject: (.*?)\r?$", f.read(), re.M).group(1)
                found[subject.decode()] = name.split(":2,", 1)[1] if ":2," in name else ""
        return found

    def set_flags(self, folder: str, subject: str, flags: str) -> None:
        """Give the message with this Subject these flags (moving it to ``cur``)."""
        for sub in ("cur", "new"):
            base = os.path.join(self.root, folder, sub)
            for name in os.listdir(base):
                with open(os.path.join(base, name), "rb") as f:
                    if b"Subject: " + subject.encode() not in f.read():
                        continue
                new = name.split(":2,", 1)[0] + ":2," + flags
                os.rename(os.path.join(base, name), os.path.join(self.root, folder, "cur", new))
                return
        raise AssertionError(f"{subject} not in {folder}")

    def add_folder(self, folder: str) -> str:
        """Create an empty Maildir folder; return its path."""
        path = os.path.join(self.root, folder)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(path, sub))
        return path
