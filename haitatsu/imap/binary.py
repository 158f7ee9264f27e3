"""BINARY (RFC 3516): ``FETCH BINARY[part]<partial>``, ``BINARY.PEEK``, ``BINARY.SIZE``.

A section is a byte range of the stored message (``MessageInfo.parts``) with the transfer
encoding the parser recorded. Its decoded size is not stored, and a literal announces its size
before the data, so each BINARY item costs one pass over the part before the response starts:
the pass decodes (``haitatsu.mime.decoding``), counts, notes whether a NUL octet occurs (then the
answer is a ``~{n}`` literal8, else a plain literal) and keeps the bytes of the requested window
in a spooled temporary file (memory up to ``SPOOL_MEMORY``, then disk). The response then copies
that file to the transport like any body section. Parts whose encoding is an identity one
(7bit, 8bit, binary, none) and that are not text go straight from the blob: the pass only looks
for NUL. Text parts have bare LF turned into CRLF (RFC 3516 section 6), unless the decoded text
holds NUL octets (UTF-16, UTF-32): that is not line-oriented text, and its LF bytes stay.

The pass runs through ``run_blocking`` (the reactor's thread pool in production), so decoding a
large attachment never stalls other sessions. An encoding we cannot decode (``x-uuencode``) is
``NO [UNKNOWN-CTE]``, checked from metadata before anything of the message is sent or flagged.
``BINARY[]`` is the whole message as stored (a message has no transfer encoding of its own).
"""

from __future__ import annotations

import contextlib
import tempfile

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

from haitatsu.imap.fetch import BinarySection, window
from haitatsu.mime.decoding import DECODED_ENCODINGS, IDENTITY_ENCODINGS, decoded_chunks
from haitatsu.streaming import FileRangeSender

#: Decoded bytes of a window kept in memory before the spool file goes to disk.
SPOOL_MEMORY = 1024 * 1024
_SCAN_CHUNK = 64 * 1024


class UnknownCTE(Exception):
    """A section's Content-Transfer-Encoding is not one we can decode (RFC 3516 4.3)."""


def run_inline(fn, *args):
    """``run_blocking`` without threads: a test clock as the reactor."""
    return defer.maybeDeferred(fn, *args)


def blocking_runner(reactor):
    """``run_blocking(fn, *args) -> Deferred`` for ``reactor``: its thread pool when it has one
    (the real reactor), else inline (``task.Clock`` in tests)."""
    if IReactorThreads.providedBy(reactor):
        return lambda fn, *args: deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
    return run_inline


@attrs.frozen
class PartSpan:
    """Where a section's encoded bytes are and how to decode them."""

    start: int
    end: int
    encoding: str
    textual: bool


def part_span(info, part: tuple[int, ...]) -> PartSpan | None:
    """The span of ``BINARY[part]``, None when the message has no such part.

    Raises ``UnknownCTE``."""
    if not part:
        return PartSpan(0, info.size_bytes, "", False)
    entry = (info.parts or {}).get(".".join(str(p) for p in part))
    if entry is None:
        if part == (1,) and not (info.bodystructure or "").startswith("(("):
            return PartSpan(info.header_size, info.size_bytes, "", False)
        return None
    encoding = (entry.get("encoding") or "").strip().lower()
    if encoding not in IDENTITY_ENCODINGS and encoding not in DECODED_ENCODINGS:
        raise UnknownCTE(encoding)
    textual = (entry.get("type") or "").lower().startswith("text/")
    return PartSpan(entry["body_start"], entry["end"], encoding, textual)


@attrs.define
class Prepared:
    """One BINARY item ready to send: the decoded size, the window, where its bytes are."""

    size: int
    offset: int = 0
    length: int = 0
    has_nul: bool = False
    spool: object = None  # the decoded window, positioned at 0; None: read the blob
    blob_start: int = 0  # with no spool: where the window starts in the message

    def close(self):
        if self.spool is not None:
            self.spool.close()
            self.spool = None


def prepare(fileobj, span: PartSpan, partial, size_only: bool, spool_dir=None) -> Prepared:
    """The measuring pass over one section (blocking: run it through ``run_blocking``)."""
    if span.encoding in IDENTITY_ENCODINGS and not span.textual:
        size = span.end - span.start
        if size_only:
            return Prepared(size=size)
        offset, length = window(size, partial)
        return Prepared(
            size=size,
            offset=offset,
            length=length,
            has_nul=_contains_nul(fileobj, span.start + offset, length),
            blob_start=span.start + offset,
        )
    prepared, nul_seen = _decode(fileobj, span, partial, size_only, spool_dir, span.textual)
    if span.textual and nul_seen:
        # Text with NUL octets (UTF-16, say) is not line-oriented: its LF bytes stay as they are.
        prepared.close()
        prepared, _ = _decode(fileobj, span, partial, size_only, spool_dir, False)
    return prepared


def _decode(fileobj, span, partial, size_only, spool_dir, textual) -> tuple[Prepared, bool]:
    """One decoding pass: the prepared item, and whether the section holds a NUL anywhere."""
    spool = None
    if not size_only:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, dir=spool_dir)
    origin, count = partial if partial is not None else (0, None)
    size = 0
    has_nul = nul_seen = False
    try:
        for chunk in decoded_chunks(fileobj, span.start, span.end, span.encoding, textual):
            if not chunk:
                continue
            nul_seen = nul_seen or b"\x00" in chunk
            if spool is not None:
                low = max(origin - size, 0)
                high = len(chunk) if count is None else min(origin + count - size, len(chunk))
                if low < high:
                    piece = chunk[low:high]
                    spool.write(piece)
                    has_nul = has_nul or b"\x00" in piece
            size += len(chunk)
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    if size_only:
        return Prepared(size=size), nul_seen
    offset, length = window(size, partial)
    spool.seek(0)
    return Prepared(size=size, offset=offset, length=length, has_nul=has_nul, spool=spool), nul_seen


def _contains_nul(fileobj, start: int, length: int) -> bool:
    fileobj.seek(start)
    while length > 0:
        chunk = fileobj.read(min(_SCAN_CHUNK, length))
        if not chunk:
            break
        if b"\x00" in chunk:
            return True
        length -= len(chunk)
    return False


@attrs.define
class BinaryPlan:
    """The BINARY items of one message's FETCH response, prepared, and the open message."""

    file: object
    items: dict

    def close(self):
        for prepared in self.items.values():
            if prepared is not None:
                prepared.close()
        self.items = {}
        if self.file is not None:
            with contextlib.suppress(Exception):
                self.file.close()
            self.file = None


def binary_items(items) -> list[BinarySection]:
    return [item for item in items if isinstance(item, BinarySection)]


class BinaryMixin:
    """FETCH BINARY for ``IMAPServer``; the factory sets ``run_blocking``."""

    run_blocking = staticmethod(run_inline)

    @staticmethod
    def _check_binary(items, infos) -> None:
        """Raise ``UnknownCTE`` when any requested section of these messages has a transfer
        encoding we cannot decode: before the batch is flagged ``\\Seen`` or sent."""
        wanted = binary_items(items)
        if not wanted:
            return
        for info in infos:
            if info is not None:
                for item in wanted:
                    part_span(info, item.part)

    async def _prepare_binary(self, items, info) -> BinaryPlan | None:
        """Run the measuring pass of every BINARY item of one message."""
        wanted = binary_items(items)
        if not wanted:
            return None
        spans = {item: part_span(info, item.part) for item in wanted}
        plan = BinaryPlan(file=None, items={})
        try:
            if any(span is not None for span in spans.values()):
                plan.file = await self.store.open_message(info)
            for item, span in spans.items():
                plan.items[item] = None
                if span is not None:
                    plan.items[item] = await self.run_blocking(
                        prepare, plan.file, span, item.partial, item.size_only, self.spool_dir
                    )
        except BaseException:
            plan.close()
            raise
        return plan

    async def _write_binary(self, out: list, item: BinarySection, plan: BinaryPlan) -> list:
        """Append ``BINARY[...] literal`` or ``BINARY.SIZE[...] n`` to ``out``; stream the
        literal's data. Returns what is left to write after it."""
        prepared = plan.items.get(item)
        if item.size_only:
            out.append(b"%s %d" % (item.label, prepared.size if prepared is not None else 0))
            return out
        label = item.label
        if item.partial is not None:
            label += b"<%d>" % item.partial[0]
        if prepared is None or not prepared.length:
            out.append(label + b" {0}\r\n")
            return out
        marker = b"~" if prepared.has_nul else b""
        out.append(b"%s %s{%d}\r\n" % (label, marker, prepared.length))
        self.transport.writeSequence(out)
        source = prepared.spool
        if source is None:
            source = plan.file
            source.seek(prepared.blob_start)
        await FileRangeSender(source, prepared.length, self.transport).start()
        return []
