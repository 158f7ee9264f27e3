"""Blobs in S3-compatible object storage (AWS S3, MinIO, Garage, Ceph RGW), spoken through treq.

The store is content-addressed exactly like the blob directory: a blob's key is the hex SHA-256
of its content and its object name is derived from the key (``<prefix>/blobs/ab/<sha256>``), so
identical content is one object and ``put_file`` can skip the upload of a large blob after a
HEAD (a small one is sent without asking: the question costs what the upload does). Bodies are
never held in memory: uploads stream from the spool file (a multipart upload above
``multipart_threshold_bytes``), downloads stream into a spooled temporary file.

Requests are signed with AWS Signature Version 4 by botocore's signer; we only tell it the payload
hash we already computed while hashing the file, so it never reads the body. The payload hash is
the real one (never ``UNSIGNED-PAYLOAD``): the server checks the bytes it received against it.

Transient failures (5xx, 429, connection errors, timeouts) are retried with exponential backoff on
the injected clock; other 4xx answers are not. Whatever finally fails reaches the caller as
``StorageUnavailable`` whose text says why (``s3: access denied ...``, ``s3: bucket b does not
exist``, ``s3: cannot reach host:port``), which ``/ready`` shows as is.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import io
import os
import random
import tempfile
import urllib.parse
from xml.etree import ElementTree

import attrs
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.internet import defer, error, task
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.client import (
    FileBodyProducer,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from haitatsu.config.model import S3_MIN_PART_SIZE, S3Config
from haitatsu.interfaces import IBlobStore, StorageUnavailable
from haitatsu.storage.blobs import CHUNK, BlobRef, check_object_name

#: S3 allows at most this many parts in one multipart upload.
MAX_PARTS = 10_000

#: A download keeps this much in memory before it spills to a temporary file.
SPOOL_MEMORY_BYTES = 1024 * 1024

#: Error bodies are read up to this size (an S3 error is a few hundred bytes of XML).
ERROR_BODY_LIMIT = 64 * 1024

#: ``check()`` must answer well inside ``/ready``'s own timeout, so it never waits longer.
CHECK_TIMEOUT_SECONDS = 4.0

_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def build_s3_blob_store(config: S3Config, reactor) -> S3BlobStore:
    """The S3 store as production runs it: a treq client on a pool of persistent connections,
    so a burst of deliveries does not pay a TCP (and TLS) handshake per request, and an
    endpoint given as an IP address is connected to without a name lookup."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    agent = Agent.usingEndpointFactory(
        reactor, _EndpointFactory(reactor, BrowserLikePolicyForHTTPS()), pool=pool
    )
    return S3BlobStore(config, HTTPClient(agent), reactor, pool=pool)


@implementer(IAgentEndpointFactory)
class _EndpointFactory:
    """What ``Agent`` does by default (``HostnameEndpoint``, TLS for https), except that an IP
    address is connected to directly: ``HostnameEndpoint`` would send even an address literal
    through ``getaddrinfo`` in a thread for every new connection."""

    def __init__(self, reactor, policy):
        self._reactor = reactor
        self._policy = policy

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(self._reactor, host, uri.port)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(self._reactor, host, uri.port)
        else:
            endpoint = HostnameEndpoint(self._reactor, host, uri.port)
        if uri.scheme == b"http":
            return endpoint
        if uri.scheme == b"https":
            return wrapClientTLS(self._policy.creatorForNetloc(uri.host, uri.port), endpoint)
        raise SchemeNotSupported(f"unsupported scheme {uri.scheme!r}")


@attrs.frozen
class RetryPolicy:
    """Exponential backoff: attempt ``n`` (from 0) waits ``base * 2**n`` seconds, capped, with
    up to ``jitter`` of it taken off at random so several nodes do not retry in step."""

    attempts: int = 5
    base_seconds: float = 0.2
    cap_seconds: float = 5.0
    jitter: float = 0.25

    def delay(self, attempt: int, rand=random.random) -> float:
        delay = min(self.cap_seconds, self.base_seconds * 2**attempt)
        return delay * (1 - self.jitter * rand())


#: ``check()`` answers ``/ready``: one attempt, no waiting.
NO_RETRY = RetryPolicy(attempts=1)


class S3Error(Exception):
    """An answer from S3 that is not the one we wanted."""

    def __init__(self, status: int, code: str = "", message: str = "", method="", name=""):
        super().__init__(status, code, message)
        self.status, self.code, self.message = status, code, message
        self.method, self.name = method, name

    @property
    def retryable(self) -> bool:
        return (
            self.status >= 500
            or self.status == 429
            or self.code in ("RequestTimeout", "SlowDown", "InternalError")
        )


class _Transient(Exception):
    """A connection error or timeout: worth another attempt."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _KnownPayloadSigner(S3SigV4Auth):
    """botocore's S3 SigV4 signer, told the payload's SHA-256 instead of reading the body.

    We hash every file before uploading it (the hash is its key), so reading it again to sign
    would be waste; and the real hash, unlike ``UNSIGNED-PAYLOAD``, makes S3 verify the bytes.
    """

    def payload(self, request):
        known = request.context.get("payload_sha256")
        return known if known is not None else super().payload(request)


@attrs.frozen
class _Part:
    offset: int
    length: int
    sha256: str


@attrs.frozen
class _Upload:
    sha256: str
    size: int
    #: Empty for a single PUT.
    parts: tuple = ()


def plan_upload(path: str, threshold: int) -> _Upload:
    """Hash a file in one pass: its SHA-256, and when it is larger than ``threshold`` the
    SHA-256 of each part of a multipart upload. Runs in a thread."""
    size = os.path.getsize(path)
    part_size = 0
    if size > threshold:
        part_size = max(threshold, -(-size // MAX_PARTS))
    whole = hashlib.sha256()
    parts, part, offset, seen = [], hashlib.sha256(), 0, 0
    with open(path, "rb") as f:
        while True:
            want = CHUNK if not part_size else min(CHUNK, part_size - (seen - offset))
            chunk = f.read(want)
            if not chunk:
                break
            whole.update(chunk)
            seen += len(chunk)
            if part_size:
                part.update(chunk)
                if seen - offset == part_size:
                    parts.append(_Part(offset, part_size, part.hexdigest()))
                    part, offset = hashlib.sha256(), seen
    if part_size and seen > offset:
        parts.append(_Part(offset, seen - offset, part.hexdigest()))
    return _Upload(whole.hexdigest(), seen, tuple(parts))


class _FileSlice:
    """``length`` bytes of an open file from ``offset``, as a file object of its own, so that
    ``FileBodyProducer`` streams one part of a multipart upload."""

    def __init__(self, f, offset: int, length: int):
        self._f, self._start, self._length, self._pos = f, offset, length, 0

    def read(self, n: int = -1) -> bytes:
        left = self._length - self._pos
        if n is None or n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self):
        self._f.close()


class _Sink(Protocol):
    """Receives a response body into a file object, with an idle timeout and a size limit.

    ``done`` fires with the number of bytes received; cancelling it aborts the connection.
    """

    def __init__(self, out, clock, idle_timeout: float, limit: int | None = None):
        self.out, self.size, self.limit = out, 0, limit
        self.done = defer.Deferred(self._abort)
        self._clock, self._idle_timeout = clock, idle_timeout
        self._timer = clock.callLater(idle_timeout, self._timed_out)

    def dataReceived(self, data: bytes):
        if self.done.called:
            return
        self._timer.reset(self._idle_timeout)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            # Error bodies are for a reason only: keep what fits, stop reading the rest.
            data = data[: len(data) - (self.size - self.limit)]
            self.out.write(data)
            self._finish(None, self.limit)
            self.transport.stopProducing()
            return
        self.out.write(data)

    def connectionLost(self, reason):
        if reason.check(ResponseDone, PotentialDataLoss) and not reason.check(ResponseFailed):
            self._finish(None, self.size)
        else:
            self._finish(reason, None)

    def _timed_out(self):
        self._finish(_Transient(f"no data for {self._idle_timeout:g}s"), None)
        self.transport.stopProducing()

    def _abort(self, d):
        if self._timer.active():
            self._timer.cancel()
        self.transport.stopProducing()

    def _finish(self, failure, result):
        if self._timer.active():
            self._timer.cancel()
        if self.done.called:
            return
        if failure is not None:
            self.done.errback(failure)
        else:
            self.done.callback(result)


@implementer(IBlobStore)
class S3BlobStore:
    """``IBlobStore`` on an S3 bucket. ``http`` is a ``treq.client.HTTPClient`` (passed in so
    tests and the benchmark choose the connection pool); ``clock`` times backoff and timeouts
    (the reactor unless a test hands in a ``task.Clock``)."""

    _log = Logger()

    def __init__(
        self,
        config: S3Config,
        http,
        reactor,
        threadpool=None,
        clock=None,
        retry: RetryPolicy = RetryPolicy(),
        rand=random.random,
        pool=None,
    ):
        if config.multipart_threshold_bytes < S3_MIN_PART_SIZE:
            raise ValueError("multipart_threshold_bytes must be at least 5 MiB")
        self.config = config
        self._http = http
        self._connection_pool = pool
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._pool = threadpool if threadpool is not None else reactor.getThreadPool()
        self._retry = retry
        self._rand = rand
        self._signer = _KnownPayloadSigner(
            Credentials(config.access_key_id, config.secret_access_key),
            "s3",
            config.signing_region,
        )
        self._cooperator = task.Cooperator(
            scheduler=lambda work: self._reactor.callLater(0, work), started=True
        )
        prefix = config.prefix.strip("/")
        self._root = prefix + "/" if prefix else ""
        self._names = self._root + "blobs/"

    # -- names and URLs ---------------------------------------------------------------------

    def object_name(self, key: str) -> str:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a blob key: {key!r}")
        return f"{self._names}{key[:2]}/{key}"

    def url(self, name: str, query: str = "") -> str:
        """The request URL of object ``name`` (path style or virtual-host style)."""
        scheme, host = self.config.endpoint_url.split("://", 1)
        bucket = urllib.parse.quote(self.config.bucket, safe="")
        path = urllib.parse.quote(name, safe="/~")
        if self.config.uses_path_style:
            url = f"{scheme}://{host}/{bucket}/{path}"
        else:
            url = f"{scheme}://{bucket}.{host}/{path}"
        return url + ("?" + query if query else "")

    # -- requests ---------------------------------------------------------------------------

    def _signed_headers(self, method: str, url: str, headers: dict, payload_sha256: str) -> dict:
        request = AWSRequest(method=method, url=url, headers=dict(headers), data=b"")
        request.context["payload_sha256"] = payload_sha256
        self._signer.add_auth(request)
        return {k: v for k, v in request.headers.items()}

    async def _request(
        self,
        method: str,
        name: str,
        query: str = "",
        headers: dict | None = None,
        body=None,
        ok=(200,),
        consume=None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ):
        """Send one S3 request, retrying transient failures; return what ``consume(response)``
        returns (or the response, its body discarded).

        ``body`` is None, bytes, or a callable returning ``(file object, sha256)`` that opens a
        fresh file for each attempt. ``consume`` runs inside the attempt, so a body that breaks
        off mid-way is retried like any other transient failure.
        """
        retry = retry or self._retry
        timeout = timeout or self.config.request_timeout_seconds
        last = None
        for attempt in range(retry.attempts):
            if attempt:
                delay = retry.delay(attempt - 1, self._rand)
                self._log.info(
                    "s3 {method} {name}: {reason}; retrying in {delay:.2f}s",
                    method=method,
                    name=name,
                    reason=_describe(last, self.config),
                    delay=delay,
                )
                await task.deferLater(self._clock, delay)
            try:
                return await self._attempt(
                    method, name, query, headers or {}, body, ok, consume, timeout
                )
            except S3Error as e:
                if not e.retryable:
                    raise StorageUnavailable(_describe(e, self.config)) from None
                last = e
            except _Transient as e:
                last = e
        reason = _describe(last, self.config)
        if retry.attempts > 1:
            reason += f" (after {retry.attempts} attempts)"
        raise StorageUnavailable(reason)

    async def _attempt(self, method, name, query, headers, body, ok, consume, timeout):
        url = self.url(name, query)
        stream = None
        producer = None  # FileBodyProducer closes the file when it is done or stopped.
        if body is None:
            sha = hashlib.sha256(b"").hexdigest()
        elif isinstance(body, bytes):
            sha = hashlib.sha256(body).hexdigest()
            producer = FileBodyProducer(io.BytesIO(body), self._cooperator)
        else:
            stream, sha = body()
            producer = FileBodyProducer(stream, self._cooperator)
        try:
            signed = self._signed_headers(method, url, headers, sha)
            try:
                response = await self._http.request(
                    method,
                    url,
                    headers=signed,
                    data=producer,
                    allow_redirects=False,
                    unbuffered=True,
                    timeout=timeout,
                    reactor=self._clock,
                )
            except Exception as e:
                raise _transient(e, self.config, timeout) from None
        except BaseException:
            if stream is not None:
                stream.close()
            raise
        if response.code not in ok:
            raise await self._error(response, method, name, timeout)
        try:
            if consume is not None:
                return await consume(response, timeout)
            await self._receive(response, _Discard(), timeout)
            return response
        except (S3Error, _Transient, _Missing):
            raise
        except Exception as e:
            raise _transient(e, self.config, timeout) from None

    async def _receive(self, response, out, timeout, limit=None) -> int:
        if response.length == 0 or (response.request and response.request.method == b"HEAD"):
            # No body is coming; treq's response finishes on its own.
            return 0
        sink = _Sink(out, self._clock, timeout, limit)
        response.deliverBody(sink)
        try:
            return await sink.done
        except _Transient:
            raise
        except Exception as e:
            raise _transient(e, self.config, timeout) from None

    async def _error(self, response, method, name, timeout) -> S3Error:
        buf = io.BytesIO()
        try:
            await self._receive(response, buf, timeout, limit=ERROR_BODY_LIMIT)
        except Exception:
            pass
        code, message = _parse_error(buf.getvalue())
        return S3Error(response.code, code, message, method, name)

    # -- IBlobStore -------------------------------------------------------------------------

    #: Below this size a put does not ask (HEAD) whether the object exists first: sending a
    #: small body costs about what the question does, and the same bytes under the same key
    #: change nothing. Large blobs (attachments stored once across messages) are asked about.
    probe_threshold_bytes = 64 * 1024

    def put_file(self, path, sha256=None, size=None, link=False):
        return defer.Deferred.fromCoroutine(self._put_file(path, sha256, size))

    async def _put_file(self, path: str, sha256=None, size=None) -> BlobRef:
        if (
            sha256 is not None
            and size is not None
            and size <= self.config.multipart_threshold_bytes
        ):
            # The caller hashed the file already: no thread hop, no second read.
            upload = _Upload(sha256, size)
        else:
            try:
                upload = await deferToThreadPool(
                    self._reactor,
                    self._pool,
                    plan_upload,
                    path,
                    self.config.multipart_threshold_bytes,
                )
            except OSError as e:
                raise StorageUnavailable(f"blobs: {e}") from None
        name = self.object_name(upload.sha256)
        if upload.size >= self.probe_threshold_bytes and await self._size(name) == upload.size:
            return BlobRef(upload.sha256, upload.sha256, upload.size)
        await self._upload(name, path, upload)
        return BlobRef(upload.sha256, upload.sha256, upload.size)

    async def _upload(self, name: str, path: str, upload: _Upload):
        """PUT the file as object ``name``, in parts when ``upload`` has them."""
        if upload.parts:
            await self._put_multipart(name, path, upload)
        else:

            def body():
                return open(path, "rb"), upload.sha256

            await self._request("PUT", name, body=body)
        self._log.debug("s3 stored {name} ({size} bytes)", name=name, size=upload.size)

    async def _size(self, name: str) -> int | None:
        """The size of object ``name``, or None if it does not exist."""
        response = await self._request("HEAD", name, ok=(200, 404))
        if response.code == 404:
            return None
        length = response.headers.getRawHeaders(b"content-length")
        if length:
            return int(length[0])
        return response.length if isinstance(response.length, int) else None

    async def _put_multipart(self, name: str, path: str, upload: _Upload):
        async def read_upload_id(response, timeout):
            buf = io.BytesIO()
            await self._receive(response, buf, timeout, limit=ERROR_BODY_LIMIT)
            upload_id = _find_text(buf.getvalue(), "UploadId")
            if not upload_id:
                raise S3Error(500, "NoUploadId", "CreateMultipartUpload gave no UploadId")
            return upload_id

        upload_id = await self._request("POST", name, query="uploads", consume=read_upload_id)
        uid = urllib.parse.quote(upload_id, safe="")
        try:
            etags = []
            for number, part in enumerate(upload.parts, 1):

                def body(part=part):
                    return _FileSlice(open(path, "rb"), part.offset, part.length), part.sha256

                response = await self._request(
                    "PUT", name, query=f"partNumber={number}&uploadId={uid}", body=body
                )
                etags.append(response.headers.getRawHeaders(b"etag", [b""])[0].decode("ascii"))
            manifest = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{_xml_escape(etag)}</ETag></Part>"
                for n, etag in enumerate(etags, 1)
            )
            document = f"<CompleteMultipartUpload>{manifest}</CompleteMultipartUpload>".encode()

            async def check_complete(response, timeout):
                # CompleteMultipartUpload can answer 200 and still fail, in the body.
                buf = io.BytesIO()
                await self._receive(response, buf, timeout, limit=ERROR_BODY_LIMIT)
                code, message = _parse_error(buf.getvalue())
                if code:
                    raise S3Error(500, code, message, "POST", name)

            try:
                await self._request(
                    "POST", name, query=f"uploadId={uid}", body=document, consume=check_complete
                )
            except StorageUnavailable:
                # A completion whose answer was lost looks like a failure (and its retry like
                # NoSuchUpload); the object being there whole is what counts.
                if await self._size(name) != upload.size:
                    raise
        except BaseException:
            await self._abort_multipart(name, uid)
            raise

    async def _abort_multipart(self, name: str, uid: str):
        try:
            await self._request("DELETE", name, query=f"uploadId={uid}", ok=(200, 204, 404))
        except Exception as e:
            self._log.warn(
                "s3: could not abort multipart upload of {name}: {error} (a lifecycle rule "
                "AbortIncompleteMultipartUpload cleans these up)",
                name=name,
                error=e,
            )

    def open(self, key):
        return defer.Deferred.fromCoroutine(self._open(key))

    async def _open(self, key: str):
        return await self._download(self.object_name(key), key)

    async def _download(self, name: str, key: str):
        """Object ``name`` spooled into a temporary file (``KeyError(key)`` if missing)."""

        async def spool(response, timeout):
            out = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)
            try:
                await self._receive(response, out, timeout)
            except BaseException:
                out.close()
                raise
            out.seek(0)
            return out

        return await self._get(name, key, spool)

    async def _get(self, name, key, consume, headers=None, ok=(200,)):
        try:
            return await self._request(
                "GET", name, headers=headers, ok=ok + (404,), consume=self._or_404(consume)
            )
        except _Missing as missing:
            if missing.code == "NoSuchBucket":
                raise StorageUnavailable(
                    _describe(S3Error(404, "NoSuchBucket"), self.config)
                ) from None
            raise KeyError(key) from None

    def _or_404(self, consume):
        async def wrapped(response, timeout):
            if response.code == 404:
                buf = io.BytesIO()
                await self._receive(response, buf, timeout, limit=ERROR_BODY_LIMIT)
                raise _Missing(_parse_error(buf.getvalue())[0])
            return await consume(response, timeout)

        return wrapped

    def read(self, key, start=0, length=None):
        return defer.Deferred.fromCoroutine(self._read(key, start, length))

    async def _read(self, key: str, start: int, length: int | None) -> bytes:
        if length == 0:
            return b""
        name = self.object_name(key)
        end = "" if length is None else str(start + length - 1)

        async def collect(response, timeout):
            if response.code == 416:
                await self._receive(response, _Discard(), timeout)
                return b""
            buf = io.BytesIO()
            await self._receive(response, buf, timeout)
            data = buf.getvalue()
            if response.code == 200:
                # The server ignored the Range header and sent everything.
                data = data[start:] if length is None else data[start : start + length]
            return data

        return await self._get(
            name, key, collect, headers={"Range": f"bytes={start}-{end}"}, ok=(200, 206, 416)
        )

    def delete(self, key):
        return defer.Deferred.fromCoroutine(self._delete(key))

    async def _delete(self, key: str):
        await self._request("DELETE", self.object_name(key), ok=(200, 204, 404))

    def list_keys(self, start_after="", limit=1000):
        return defer.Deferred.fromCoroutine(self._list_keys(start_after, limit))

    async def _list_keys(self, start_after: str, limit: int) -> list[tuple[str, int]]:
        """ListObjectsV2 under ``<prefix>/blobs/`` from ``StartAfter``: object names sort like
        their keys (``ab/<key>`` starts with the key's first two characters). Names that are not
        blobs are skipped, and another page is asked for while the listing is truncated, so a
        short answer always means the end."""
        out: list[tuple[str, int]] = []
        after = self.object_name(start_after) if start_after else ""
        while len(out) < limit:
            params = {"list-type": "2", "prefix": self._names, "max-keys": str(limit - len(out))}
            if after:
                params["start-after"] = after
            query = urllib.parse.urlencode(sorted(params.items()), quote_via=urllib.parse.quote)

            async def collect(response, timeout):
                buf = io.BytesIO()
                await self._receive(response, buf, timeout)
                return buf.getvalue()

            page = _parse_listing(await self._request("GET", "", query=query, consume=collect))
            for name, modified in page.entries:
                after = name
                key = name[len(self._names) :].rpartition("/")[2]
                if name.startswith(self._names) and self.object_name_ok(key, name):
                    out.append((key, modified))
            if not page.truncated or not page.entries:
                break
        return out

    def object_name_ok(self, key: str, name: str) -> bool:
        try:
            return self.object_name(key) == name
        except ValueError:
            return False

    # -- named objects (exports) -------------------------------------------------------------

    def named_object(self, name: str) -> str:
        """The S3 object name of the named object ``name``: ``<prefix>/<name>``."""
        return self._root + check_object_name(name)

    def put_object(self, name, path):
        return defer.Deferred.fromCoroutine(self._put_object(name, path))

    async def _put_object(self, name: str, path: str) -> int:
        target = self.named_object(name)
        try:
            upload = await deferToThreadPool(
                self._reactor,
                self._pool,
                plan_upload,
                path,
                self.config.multipart_threshold_bytes,
            )
        except OSError as e:
            raise StorageUnavailable(f"blobs: {e}") from None
        await self._upload(target, path, upload)
        return upload.size

    def open_object(self, name):
        return defer.Deferred.fromCoroutine(self._open_named(name))

    async def _open_named(self, name: str):
        return await self._download(self.named_object(name), name)

    def delete_object(self, name):
        return defer.Deferred.fromCoroutine(self._delete_named(name))

    async def _delete_named(self, name: str):
        await self._request("DELETE", self.named_object(name), ok=(200, 204, 404))

    def check(self):
        return defer.Deferred.fromCoroutine(self._check())

    async def _check(self):
        """Write a tiny probe object: proves the endpoint answers, the credentials sign, the
        bucket exists and we may write to it, in one request."""
        timeout = min(self.config.request_timeout_seconds, CHECK_TIMEOUT_SECONDS)
        await self._request(
            "PUT", self._root + "ready-probe", body=b"ok", retry=NO_RETRY, timeout=timeout
        )

    def close(self):
        """Drop idle pooled connections (the hub's shutdown; tests' clean reactor). The store
        still works afterwards, on new connections."""
        if self._connection_pool is not None:
            return self._connection_pool.closeCachedConnections()
        return defer.succeed(None)


@attrs.frozen
class _Listing:
    entries: list  # (object name, last modified in ns since the epoch)
    truncated: bool


def _parse_listing(body: bytes) -> _Listing:
    """A ListObjectsV2 result: names and LastModified times (ISO 8601, UTC) of one page."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        raise StorageUnavailable(f"s3: unreadable object listing: {e}") from None
    entries = []
    for contents in root.iter(_S3_NS + "Contents"):
        name = contents.findtext(_S3_NS + "Key") or ""
        stamp = contents.findtext(_S3_NS + "LastModified") or ""
        try:
            when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            raise StorageUnavailable(f"s3: bad LastModified {stamp!r} in listing") from None
        seconds = calendar.timegm(when.utctimetuple())
        entries.append((name, seconds * 1_000_000_000 + when.microsecond * 1000))
    truncated = (root.findtext(_S3_NS + "IsTruncated") or "").strip().lower() == "true"
    return _Listing(entries, truncated)


class _Missing(Exception):
    def __init__(self, code: str):
        self.code = code


class _Discard:
    def write(self, data):
        pass


def _transient(e: BaseException, config: S3Config, timeout: float) -> _Transient:
    """Name a connection-level failure for the operator."""
    causes = [e]
    if isinstance(e, ResponseFailed) or hasattr(e, "reasons"):
        causes += [r.value for r in getattr(e, "reasons", [])]
    for cause in causes:
        if isinstance(cause, (defer.CancelledError, defer.TimeoutError, error.TimeoutError)):
            return _Transient(f"s3: {config.host} did not answer within {timeout:g}s")
        if isinstance(cause, _Transient):
            return _Transient(f"s3: {config.host}: {cause.reason}")
    for cause in causes:
        if isinstance(cause, (error.ConnectError, error.DNSLookupError)):
            return _Transient(f"s3: cannot reach {config.host} ({_short(cause)})")
    return _Transient(f"s3: connection to {config.host} failed ({_short(causes[-1])})")


def _short(e: BaseException) -> str:
    text = str(e).strip().rstrip(".")
    return text or type(e).__name__


def _describe(e, config: S3Config) -> str:
    """The operator-facing reason for a failure (``/ready`` shows it after ``blobs: ``)."""
    if isinstance(e, _Transient):
        return e.reason
    if not isinstance(e, S3Error):
        return f"s3: {e}"
    detail = f" [{e.code}]" if e.code else ""
    if e.status == 403:
        return f"s3: access denied (check access_key_id/secret_access_key){detail}"
    if e.code == "NoSuchBucket" or (e.status == 404 and e.method == "PUT"):
        return f"s3: bucket {config.bucket} does not exist"
    if e.status in (301, 307, 400) and e.code in (
        "PermanentRedirect",
        "TemporaryRedirect",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
    ):
        return f"s3: bucket {config.bucket} needs another region or endpoint{detail}"
    text = f"s3: {e.method} {e.name}: HTTP {e.status}{detail}"
    if e.message:
        text += f" {e.message}"
    return text


def _parse_error(body: bytes) -> tuple[str, str]:
    """``(Code, Message)`` of an S3 XML error document, or empty strings."""
    if not body.lstrip().startswith(b"<") or b"<Error" not in body[:512]:
        return "", ""
    return _find_text(body, "Code"), _find_text(body, "Message")


def _find_text(body: bytes, tag: str) -> str:
    if not body:
        return ""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return ""
    for element in root.iter():
        if element.tag in (tag, _S3_NS + tag):
            return (element.text or "").strip()
    return ""


def _xml_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )
