"""The ceiling of our own stack: a minimal Twisted ESMTP server that accepts any envelope and
only writes each message to a file and fsyncs it (in a thread, as haitatsu does) before 250.

    .venv/bin/python bench/minimal_smtp.py PORT DIRECTORY

No recipient lookup, no trace headers, no database: whatever haitatsu's MX does beyond this is
what the ratio against it measures. ``bench/peers.py`` ``MinimalSMTP`` starts it.
"""

from __future__ import annotations

import itertools
import os
import sys

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.mail import smtp
from zope.interface import implementer

_counter = itertools.count()


@implementer(smtp.IMessage)
class FileMessage:
    def __init__(self, directory: str):
        self.path = os.path.join(directory, f"{os.getpid()}-{next(_counter)}.eml")
        self.file = open(self.path, "wb", buffering=64 * 1024)

    def lineReceived(self, line):
        self.file.write(line + b"\r\n")

    def eomReceived(self):
        self.file.flush()

        def sync():
            os.fsync(self.file.fileno())
            self.file.close()

        return deferToThread(sync).addCallback(lambda _: self.path)

    def connectionLost(self):
        self.file.close()
        os.unlink(self.path)


@implementer(smtp.IMessageDelivery)
class Delivery:
    def __init__(self, directory: str):
        self.directory = directory

    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        return lambda: FileMessage(self.directory)


class Factory(smtp.SMTPFactory):
    protocol = smtp.ESMTP

    def __init__(self, delivery):
        smtp.SMTPFactory.__init__(self)
        self.delivery = delivery

    def buildProtocol(self, addr):
        p = smtp.SMTPFactory.buildProtocol(self, addr)
        p.delivery = self.delivery
        return p


def main(argv) -> int:
    port, directory = int(argv[1]), argv[2]
    os.makedirs(directory, exist_ok=True)
    factory = Factory(Delivery(directory))
    reactor.suggestThreadPoolSize(10)
    reactor.listenTCP(port, factory, interface="127.0.0.1", backlog=128)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
