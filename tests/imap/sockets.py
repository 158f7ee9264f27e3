"""A blocking IMAP client on a real socket, for tests that run it in a thread while the reactor
serves: lines and literals read with a deadline, large literals hashed as they arrive."""

from __future__ import annotations

import hashlib
import re
import socket
import time

_LITERAL = re.compile(rb"\{(\d+)\}$")


class SocketClient:
    def __init__(self, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, deadline: float):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; buffered {self.buffer[:200]!r}")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(1024 * 1024)
        if not chunk:
            raise ConnectionError(f"connection closed; buffered {self.buffer[:200]!r}")
        self.buffer += chunk

    def line(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        while b"\r\n" not in self.buffer:
            self._fill(deadline)
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def read_exact(self, size: int, sink=None) -> bytes:
        """``size`` bytes; given ``sink`` (a callable), each piece goes there instead and
        nothing is kept."""
        deadline = time.monotonic() + self.timeout
        kept, need = [], size
        while need:
            if not self.buffer:
                self._fill(deadline)
            piece, self.buffer = self.buffer[:need], self.buffer[need:]
            need -= len(piece)
            if sink is None:
                kept.append(piece)
            else:
                sink(piece)
        return b"".join(kept)

    def tagged(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged answer; a literal is read and replaced by
        ``sha256:<hex> <size>``."""
        lines = []
        while True:
            line = self.line()
            while not line.startswith(b"+") and (m := _LITERAL.search(line)):
                digest = hashlib.sha256()
                size = int(m.group(1))
                self.read_exact(size, digest.update)
                line += b" sha256:%s %d" % (digest.hexdigest().encode(), size) + self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.tagged(tag)
