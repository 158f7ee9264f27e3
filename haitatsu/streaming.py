"""Sending a stored message to a client one chunk at a time.

IMAP (a literal of ``BODY[]`` or ``BINARY[]``) and POP3 (``RETR``, ``TOP``) both copy a file to
the transport as a push producer: write a chunk, stop while the transport asks to pause, go on
when it resumes, so memory per session stays at one chunk however large the message is
(DESIGN.md invariant 2). ``ChunkSender`` is that loop; a subclass says what the next chunk is.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


class StreamBroken(Exception):
    """A response was cut off part way; the only safe answer is to close the connection."""


@implementer(IPushProducer)
class ChunkSender:
    """Writes ``next_chunk()`` to ``transport`` until it returns None; ``start()`` fires when it
    is done, or fails (``StreamBroken`` when the connection went away)."""

    CHUNK = 64 * 1024

    def __init__(self, transport):
        self._transport = transport
        self._paused = False
        self._producing = False
        self._done = False
        self.deferred = defer.Deferred()

    def next_chunk(self) -> bytes | None:
        """The bytes to write next, or None when everything was written."""
        raise NotImplementedError

    def start(self):
        self._transport.registerProducer(self, True)
        self._produce()
        return self.deferred

    def _produce(self):
        if self._producing or self._done:
            return
        self._producing = True
        try:
            while not self._paused and not self._done:
                data = self.next_chunk()
                if data is None:
                    self._finish(None)
                elif data:
                    self._transport.write(data)
        except Exception as e:
            self._finish(e)
        finally:
            self._producing = False

    def _finish(self, failure):
        if self._done:
            return
        self._done = True
        self._transport.unregisterProducer()
        if failure is None:
            self.deferred.callback(None)
        else:
            self.deferred.errback(failure)

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._produce()

    def stopProducing(self):
        self._finish(StreamBroken("connection lost while sending a message"))


class FileRangeSender(ChunkSender):
    """Copies ``length`` bytes of an open file, from where it is positioned, to the transport."""

    def __init__(self, fileobj, length, transport):
        super().__init__(transport)
        self._file = fileobj
        self._remaining = length

    def next_chunk(self):
        if self._remaining == 0:
            return None
        chunk = self._file.read(min(self.CHUNK, self._remaining))
        if not chunk:
            raise StreamBroken("file shorter than its recorded size")
        self._remaining -= len(chunk)
        return chunk
