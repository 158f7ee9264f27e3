"""The S3 blob store against a real S3 endpoint (moto_server with signature checking on), and,
where a test needs to see or disturb the traffic, through ``S3Proxy``, a small HTTP proxy that
forwards to moto."""

from __future__ import annotations

import datetime
import hashlib
import tracemalloc

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from haitatsu.config.model import Config, S3Config, ServerConfig
from haitatsu.interfaces import IBlobStore, StorageUnavailable
from haitatsu.storage import DirectoryBlobStore, build_store
from haitatsu.storage.s3 import (
    RetryPolicy,
    S3BlobStore,
    _EndpointFactory,
    _KnownPayloadSigner,
    build_s3_blob_store,
    plan_upload,
)
from tests.support import MotoS3Mixin, S3Proxy, make_s3_blob_store, s3_config

MiB = 1024 * 1024
ACCESS_DENIED = "s3: access denied (check access_key_id/secret_access_key)"


def write_file(path: str, size: int, seed: bytes = b"haitatsu") -> str:
    """A file of ``size`` pseudo-random bytes, written in chunks (never whole in memory)."""
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    with open(path, "wb") as f:
        left = size
        counter = 0
        while left:
            chunk = (counter.to_bytes(8, "big") + block)[: min(left, len(block) + 8)]
            f.write(chunk)
            left -= len(chunk)
            counter += 1
    return path


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


class S3NamingTests(unittest.SynchronousTestCase):
    """Object names and URLs: no network."""

    def store(self, **kw) -> S3BlobStore:
        values = dict(endpoint="s3.local:9000", bucket="mail", access_key_id="k")
        values.update(secret_access_key="s", **kw)
        return S3BlobStore(S3Config(**values), http=None, reactor=reactor)

    def test_object_names_are_content_addressed(self):
        key = "ab" + "0" * 62
        self.assertEqual(self.store().object_name(key), f"blobs/ab/{key}")
        self.assertEqual(
            self.store(prefix="/tenant/a/").object_name(key), f"tenant/a/blobs/ab/{key}"
        )
        with self.assertRaises(ValueError):
            self.store().object_name("../../etc/passwd")

    def test_path_style_and_virtual_host_urls(self):
        self.assertEqual(self.store().url("blobs/x"), "http://s3.local:9000/mail/blobs/x")
        self.assertEqual(
            self.store(use_ssl=True, path_style=False).url("blobs/x", "uploads"),
            "https://mail.s3.local:9000/blobs/x?uploads",
        )
        aws = self.store(endpoint="s3.eu-west-1.amazonaws.com", use_ssl=True, region="eu-west-1")
        self.assertEqual(aws.url("k"), "https://mail.s3.eu-west-1.amazonaws.com/k")
        self.assertEqual(
            self.store(endpoint="https://garage.example:3900").url("k"),
            "https://garage.example:3900/mail/k",
        )

    def test_signing_region_defaults_to_us_east_1(self):
        self.assertEqual(self.store().config.signing_region, "us-east-1")
        self.assertEqual(self.store(region="garage").config.signing_region, "garage")

    def test_small_multipart_threshold_is_refused(self):
        with self.assertRaises(ValueError):
            self.store(multipart_threshold_bytes=MiB)


class BuildStoreTests(unittest.SynchronousTestCase):
    def test_an_s3_block_with_an_endpoint_puts_blobs_in_s3(self):
        config = Config(
            server=ServerConfig(data_dir=self.mktemp()),
            s3=S3Config(
                endpoint="127.0.0.1:9", bucket="b", access_key_id="k", secret_access_key="s"
            ),
        )
        store = build_store(config, reactor)
        self.assertIsInstance(store.blobs, S3BlobStore)
        self.assertEqual(store.blobs.config, config.s3)
        self.successResultOf(store.blobs.close())

    def test_without_an_endpoint_blobs_stay_in_the_directory(self):
        for s3 in (None, S3Config()):
            config = Config(server=ServerConfig(data_dir=self.mktemp()), s3=s3)
            self.assertIsInstance(build_store(config, reactor).blobs, DirectoryBlobStore)


class UploadPlanTests(unittest.SynchronousTestCase):
    def test_single_put_below_the_threshold(self):
        path = write_file(self.mktemp(), 5 * MiB)
        plan = plan_upload(path, 5 * MiB)
        self.assertEqual((plan.sha256, plan.size, plan.parts), (sha256_file(path), 5 * MiB, ()))

    def test_parts_above_the_threshold_with_their_hashes(self):
        path = write_file(self.mktemp(), 11 * MiB + 3)
        plan = plan_upload(path, 5 * MiB)
        self.assertEqual(plan.sha256, sha256_file(path))
        self.assertEqual(
            [(p.offset, p.length) for p in plan.parts],
            [(0, 5 * MiB), (5 * MiB, 5 * MiB), (10 * MiB, MiB + 3)],
        )
        with open(path, "rb") as f:
            for part in plan.parts:
                f.seek(part.offset)
                self.assertEqual(part.sha256, hashlib.sha256(f.read(part.length)).hexdigest())


class RetryPolicyTests(unittest.SynchronousTestCase):
    def test_exponential_with_cap_and_jitter(self):
        policy = RetryPolicy(attempts=6, base_seconds=0.2, cap_seconds=1.0, jitter=0.25)
        self.assertEqual(
            [policy.delay(n, rand=lambda: 0.0) for n in range(4)], [0.2, 0.4, 0.8, 1.0]
        )
        self.assertEqual(policy.delay(1, rand=lambda: 1.0), 0.4 * 0.75)


class SigningTests(unittest.SynchronousTestCase):
    """We sign with botocore; these pin down that our one change (telling it the payload hash
    instead of the body) signs exactly as botocore does, and that botocore meets AWS's vectors."""

    def fixed_time(self):
        self.patch(
            __import__("botocore.auth", fromlist=["x"]),
            "get_current_datetime",
            lambda: datetime.datetime(2015, 8, 30, 12, 36, 0),
        )

    def test_aws_sigv4_get_vanilla_vector(self):
        # aws-sig-v4-test-suite/get-vanilla
        self.fixed_time()
        request = AWSRequest(method="GET", url="https://example.amazonaws.com/", data=b"")
        credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        SigV4Auth(credentials, "service", "us-east-1").add_auth(request)
        self.assertEqual(
            request.headers["Authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )

    def test_known_payload_signs_like_the_body(self):
        self.fixed_time()
        body = b"a message body\r\n" * 100
        credentials = Credentials("AKIDEXAMPLE", "secret")
        url = "http://127.0.0.1:9000/mail/blobs/ab/cd"
        stock = AWSRequest(method="PUT", url=url, data=body)
        S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(stock)
        ours = AWSRequest(method="PUT", url=url, data=b"")
        ours.context["payload_sha256"] = hashlib.sha256(body).hexdigest()
        _KnownPayloadSigner(credentials, "s3", "us-east-1").add_auth(ours)
        self.assertEqual(ours.headers["Authorization"], stock.headers["Authorization"])
        self.assertEqual(ours.headers["X-Amz-Content-SHA256"], hashlib.sha256(body).hexdigest())


class S3BlobStoreTests(MotoS3Mixin, unittest.TestCase):
    """``S3BlobStore`` on moto_server, directly or through ``S3Proxy``."""

    timeout = 120

    async def setUp(self):
        self.bucket = await deferToThread(self.moto.create_bucket)
        self.proxy = S3Proxy(self.moto.url)
        await self.proxy.start(self)

    def make(self, via_proxy=True, retry=None, clock=None, **overrides):
        endpoint = self.proxy.endpoint if via_proxy else self.moto.endpoint
        overrides.setdefault("endpoint", endpoint)
        config = s3_config(self.moto, overrides.pop("bucket", self.bucket), **overrides)
        return make_s3_blob_store(self, config, retry=retry, clock=clock)

    def file(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def objects(self, bucket=None):
        return await deferToThread(self.moto.object_names, bucket or self.bucket)

    async def test_provides_interface_and_round_trips(self):
        blobs = self.make(via_proxy=False)
        self.assertTrue(verifyObject(IBlobStore, blobs))
        data = b"From: a@example.org\r\n\r\nbody\r\n"
        ref = await blobs.put_file(self.file(data))
        sha = hashlib.sha256(data).hexdigest()
        self.assertEqual((ref.key, ref.sha256, ref.size), (sha, sha, len(data)))
        self.assertIn(f"blobs/{sha[:2]}/{sha}", await self.objects())
        f = await blobs.open(ref.key)
        try:
            self.assertEqual(f.tell(), 0)
            self.assertEqual(f.read(), data)
        finally:
            f.close()
        await blobs.delete(ref.key)
        await blobs.delete(ref.key)  # missing is not an error
        with self.assertRaises(KeyError):
            await blobs.open(ref.key)
        with self.assertRaises(KeyError):
            await blobs.read(ref.key, 0, 4)
        self.assertNotIn(f"blobs/{sha[:2]}/{sha}", await self.objects())

    async def test_empty_blob(self):
        blobs = self.make(via_proxy=False)
        ref = await blobs.put_file(self.file(b""))
        self.assertEqual(ref.size, 0)
        f = await blobs.open(ref.key)
        self.assertEqual(f.read(), b"")
        f.close()

    async def test_prefix(self):
        blobs = self.make(via_proxy=False, prefix="node-a/")
        ref = await blobs.put_file(self.file(b"prefixed"))
        self.assertEqual(await self.objects(), [f"node-a/blobs/{ref.key[:2]}/{ref.key}"])
        self.assertEqual(await blobs.read(ref.key), b"prefixed")

    async def test_range_read(self):
        blobs = self.make()
        data = bytes(range(256)) * 40
        ref = await blobs.put_file(self.file(data))
        self.proxy.requests.clear()
        self.assertEqual(await blobs.read(ref.key, 100, 17), data[100:117])
        self.assertEqual(await blobs.read(ref.key, len(data) - 5), data[-5:])
        self.assertEqual(await blobs.read(ref.key, 0, len(data) + 100), data)
        self.assertEqual(await blobs.read(ref.key, len(data) + 10, 3), b"")
        self.assertEqual(await blobs.read(ref.key, 7, 0), b"")
        # Ranges go to the server; nothing asks for the whole object.
        self.assertEqual(self.proxy.count("GET"), 4)

    async def test_identical_large_content_is_uploaded_once(self):
        blobs = self.make()
        data = b"the same attachment, stored twice\r\n" * 2000
        self.assertGreaterEqual(len(data), blobs.probe_threshold_bytes)
        first = await blobs.put_file(self.file(data))
        second = await blobs.put_file(self.file(data))
        self.assertEqual(first, second)
        self.assertEqual((self.proxy.count("HEAD"), self.proxy.count("PUT")), (2, 1))
        self.assertEqual(len(await self.objects()), 1)

    async def test_small_blob_is_put_without_asking_first(self):
        blobs = self.make()
        data = b"a small message, delivered twice\r\n"
        first = await blobs.put_file(self.file(data))
        second = await blobs.put_file(self.file(data))
        self.assertEqual(first, second)
        self.assertEqual((self.proxy.count("HEAD"), self.proxy.count("PUT")), (0, 2))
        self.assertEqual(len(await self.objects()), 1)
        self.assertEqual(await blobs.read(first.key), data)

    async def test_known_hash_and_size_are_used(self):
        """The mail store hashed the file already: the put is one PUT under that key, signed
        with that payload hash (which S3 checks against the body it receives)."""
        blobs = self.make()
        data = b"hashed by the caller\r\n"
        sha = hashlib.sha256(data).hexdigest()
        ref = await blobs.put_file(self.file(data), sha256=sha, size=len(data))
        self.assertEqual((ref.key, ref.sha256, ref.size), (sha, sha, len(data)))
        self.assertEqual([m for m, _ in self.proxy.requests], ["PUT"])
        self.assertEqual(await blobs.read(sha), data)

    async def test_multipart_above_the_threshold(self):
        blobs = self.make(multipart_threshold_bytes=5 * MiB)
        path = write_file(self.mktemp(), 6 * MiB + 123)
        ref = await blobs.put_file(path)
        self.assertEqual((ref.key, ref.size), (sha256_file(path), 6 * MiB + 123))
        methods = [
            (m, uri.split("?", 1)[1] if "?" in uri else "") for m, uri in self.proxy.requests
        ]
        self.assertEqual(methods[0], ("HEAD", ""))
        self.assertEqual(methods[1], ("POST", "uploads"))
        self.assertRegex(methods[2][1], r"^partNumber=1&uploadId=.+")
        self.assertRegex(methods[3][1], r"^partNumber=2&uploadId=.+")
        self.assertEqual((methods[2][0], methods[3][0], methods[4][0]), ("PUT", "PUT", "POST"))
        self.assertRegex(methods[4][1], r"^uploadId=.+")
        self.assertEqual(len(methods), 5)
        head = await deferToThread(
            self.moto.s3().head_object, Bucket=self.bucket, Key=blobs.object_name(ref.key)
        )
        self.assertEqual(head["ContentLength"], ref.size)
        self.assertTrue(head["ETag"].strip('"').endswith("-2"), head["ETag"])  # two parts
        f = await blobs.open(ref.key)
        try:
            digest = hashlib.sha256()
            while chunk := f.read(MiB):
                digest.update(chunk)
        finally:
            f.close()
        self.assertEqual(digest.hexdigest(), ref.key)

    async def test_failed_multipart_upload_is_aborted(self):
        blobs = self.make(multipart_threshold_bytes=5 * MiB)
        self.proxy.refuse = lambda method, uri: method == "POST" and "?uploadId=" in uri
        with self.assertRaises(StorageUnavailable) as caught:
            await blobs.put_file(write_file(self.mktemp(), 6 * MiB))
        self.assertIn("InvalidRequest", str(caught.exception))
        self.assertEqual(self.proxy.requests[-1][0], "DELETE")
        self.assertIn("?uploadId=", self.proxy.requests[-1][1])
        uploads = await deferToThread(self.moto.s3().list_multipart_uploads, Bucket=self.bucket)
        self.assertEqual(uploads.get("Uploads", []), [])
        self.assertEqual(await self.objects(), [])

    async def test_large_blobs_stream_in_bounded_memory(self):
        blobs = self.make(via_proxy=False, multipart_threshold_bytes=64 * MiB)
        size = 24 * MiB
        path = write_file(self.mktemp(), size)
        tracemalloc.start()
        try:
            ref = await blobs.put_file(path)
            _, put_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            f = await blobs.open(ref.key)
            _, get_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        try:
            self.assertEqual(f.tell(), 0)
            digest = hashlib.sha256()
            while chunk := f.read(MiB):
                digest.update(chunk)
            self.assertEqual(digest.hexdigest(), ref.key)
        finally:
            f.close()
        # The whole blob is 24 MiB; neither direction may come anywhere near holding it.
        self.assertLess(put_peak, 4 * MiB)
        self.assertLess(get_peak, 4 * MiB)

    async def test_check_on_a_good_bucket(self):
        self.assertIsNone(await self.make().check())

    async def test_wrong_secret_is_access_denied_and_not_retried(self):
        blobs = self.make(secret_access_key="not-the-secret")
        with self.assertRaises(StorageUnavailable) as caught:
            await blobs.check()
        self.assertTrue(str(caught.exception).startswith(ACCESS_DENIED), caught.exception)
        self.assertIn("SignatureDoesNotMatch", str(caught.exception))
        self.assertEqual(len(self.proxy.requests), 1)
        with self.assertRaises(StorageUnavailable) as caught:
            await blobs.put_file(self.file(b"x"))
        self.assertTrue(str(caught.exception).startswith(ACCESS_DENIED), caught.exception)
        self.assertEqual(len(self.proxy.requests), 2)  # one PUT, refused, not retried
        self.assertEqual(await self.objects(), [])

    async def test_unknown_access_key_is_access_denied(self):
        blobs = self.make(access_key_id="AKIANOSUCHKEY0000000")
        with self.assertRaises(StorageUnavailable) as caught:
            await blobs.check()
        self.assertTrue(str(caught.exception).startswith(ACCESS_DENIED), caught.exception)
        self.assertIn("InvalidAccessKeyId", str(caught.exception))

    async def test_missing_bucket(self):
        blobs = self.make(bucket="haitatsu-no-such-bucket")
        for attempt in (blobs.check, lambda: blobs.put_file(self.file(b"x"))):
            with self.assertRaises(StorageUnavailable) as caught:
                await attempt()
            self.assertEqual(
                str(caught.exception), "s3: bucket haitatsu-no-such-bucket does not exist"
            )
        with self.assertRaises(StorageUnavailable):
            await blobs.open("ab" * 32)

    async def test_unreachable_endpoint(self):
        await self.proxy.down()
        blobs = self.make()
        with self.assertRaises(StorageUnavailable) as caught:
            await blobs.check()
        self.assertTrue(
            str(caught.exception).startswith(f"s3: cannot reach {self.proxy.endpoint}"),
            caught.exception,
        )
        with self.assertRaises(StorageUnavailable) as caught:
            await blobs.put_file(self.file(b"x"))
        self.assertIn("(after 3 attempts)", str(caught.exception))

    async def test_503_then_success(self):
        blobs = self.make()
        self.proxy.fail_next = 2
        ref = await blobs.put_file(self.file(b"after two 503s"))
        self.assertEqual([m for m, _ in self.proxy.requests], ["PUT", "PUT", "PUT"])
        self.assertEqual(await blobs.read(ref.key), b"after two 503s")

    async def test_429_and_5xx_until_the_attempts_run_out(self):
        blobs = self.make()
        self.proxy.fail_status = 429
        self.proxy.fail_next = 1
        await blobs.put_file(self.file(b"after a 429"))
        self.proxy.fail_status = 500
        self.proxy.fail_next = 100
        with self.assertRaises(StorageUnavailable) as caught:
            await blobs.put_file(self.file(b"never"))
        self.assertRegex(
            str(caught.exception), r"^s3: PUT blobs/.*: HTTP 500 .*\(after 3 attempts\)$"
        )

    async def test_backoff_waits_on_the_injected_clock(self):
        clock = task.Clock()
        policy = RetryPolicy(attempts=3, base_seconds=10, cap_seconds=60, jitter=0)
        blobs = self.make(retry=policy, clock=clock)
        self.proxy.fail_next = 1
        d = blobs.put_file(self.file(b"patience"))
        for _ in range(500):
            if self.proxy.requests:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        await task.deferLater(reactor, 0.2, lambda: None)
        # The 503 came back; the retry waits for 10 seconds of the injected clock.
        self.assertEqual(len(self.proxy.requests), 1)
        self.assertFalse(d.called)
        clock.advance(9.9)
        await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(self.proxy.requests), 1)
        clock.advance(0.1)
        ref = await d
        self.assertEqual(ref.size, len(b"patience"))
        self.assertEqual([m for m, _ in self.proxy.requests], ["PUT", "PUT"])

    async def test_a_request_that_gets_no_answer_times_out_and_is_retried(self):
        blobs = self.make(request_timeout_seconds=0.3)
        self.proxy.hang_next = 1
        ref = await blobs.put_file(self.file(b"slow start"))
        self.assertEqual([m for m, _ in self.proxy.requests], ["PUT", "PUT"])
        self.assertEqual(await blobs.read(ref.key), b"slow start")
        self.proxy.hang_next = 100
        with self.assertRaises(StorageUnavailable) as caught:
            await blobs.check()
        self.assertEqual(
            str(caught.exception), f"s3: {self.proxy.endpoint} did not answer within 0.3s"
        )


class EndpointFactoryTests(unittest.SynchronousTestCase):
    """The production agent connects to an IP address without a name lookup (HostnameEndpoint
    would call getaddrinfo in a thread for every new connection) and to a name as Agent does."""

    def endpoint(self, url):
        from twisted.web.client import URI, BrowserLikePolicyForHTTPS

        return _EndpointFactory(reactor, BrowserLikePolicyForHTTPS()).endpointForURI(
            URI.fromBytes(url)
        )

    def test_kinds(self):
        from twisted.internet.endpoints import (
            HostnameEndpoint,
            TCP4ClientEndpoint,
            TCP6ClientEndpoint,
        )
        from twisted.web.error import SchemeNotSupported

        self.assertIsInstance(self.endpoint(b"http://127.0.0.1:9000/b/k"), TCP4ClientEndpoint)
        self.assertIsInstance(self.endpoint(b"http://[::1]:9000/b/k"), TCP6ClientEndpoint)
        self.assertIsInstance(self.endpoint(b"http://s3.example.com/b/k"), HostnameEndpoint)
        tls = self.endpoint(b"https://10.0.0.1/b/k")
        self.assertNotIsInstance(tls, (TCP4ClientEndpoint, HostnameEndpoint))
        self.assertIsInstance(tls._wrappedEndpoint, TCP4ClientEndpoint)
        with self.assertRaises(SchemeNotSupported):
            self.endpoint(b"ftp://127.0.0.1/b/k")


class ProductionClientTests(MotoS3Mixin, unittest.TestCase):
    """``build_s3_blob_store`` (what the server runs) against moto on 127.0.0.1."""

    timeout = 60

    async def test_round_trip(self):
        bucket = await deferToThread(self.moto.create_bucket)
        blobs = build_s3_blob_store(s3_config(self.moto, bucket), reactor)
        self.addCleanup(blobs.close)
        path = self.mktemp()
        data = b"through the production agent\r\n"
        with open(path, "wb") as f:
            f.write(data)
        ref = await blobs.put_file(path)
        self.assertEqual(await blobs.read(ref.key), data)
