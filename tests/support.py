"""Shared test fixtures: real stores on temporary storage, cleaned up after each test."""

from __future__ import annotations

import os
import secrets
import tempfile
import unittest

from twisted.internet import defer, reactor

from haitatsu.storage import open_sqlite_store


async def make_store(testcase, root: str | None = None):
    """A real ``MailStore`` on a temporary SQLite file and blob directory.

    The store is closed when the test ends. ``root`` defaults to a fresh directory under the
    test's temporary path.
    """
    root = root or testcase.mktemp()
    os.makedirs(root, exist_ok=True)
    store = await open_sqlite_store(
        reactor, os.path.join(root, "haitatsu.db"), os.path.join(root, "blobs")
    )
    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
    return store


async def deliver_bytes(
    store,
    data: bytes,
    mailbox_id: str,
    folder: str = "INBOX",
    flags=(),
    testcase=None,
    trace_id: str = "TRACE",
):
    """Deliver ``data`` to one mailbox folder through the store's real delivery path."""
    from haitatsu.storage.records import Delivery

    fd, path = tempfile.mkstemp(suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        placed = await store.deliver(
            path,
            [Delivery(mailbox_id=mailbox_id, folder=folder, flags=tuple(flags))],
            trace_id=trace_id,
        )
    finally:
        os.unlink(path)
    return placed


# -- PostgreSQL -------------------------------------------------------------------------------

#: Why the PostgreSQL tests are skipped, or None when ``HAITATSU_TEST_POSTGRES_DSN`` is set.
PG_SKIP = (
    None
    if os.environ.get("HAITATSU_TEST_POSTGRES_DSN")
    else "HAITATSU_TEST_POSTGRES_DSN is not set: PostgreSQL tests skipped"
)

_PG_PREFIX = "haitatsu_t_"
_pg_template: str | None = None


def _pg_admin():
    """An autocommit psycopg2 connection to the configured (shared) database, for CREATE and
    DROP DATABASE and pg_terminate_backend only: tests never touch tables there."""
    import psycopg2

    conn = psycopg2.connect(os.environ["HAITATSU_TEST_POSTGRES_DSN"], connect_timeout=10)
    conn.autocommit = True
    return conn


def pg_dsn_for(dbname: str) -> str:
    from psycopg2.extensions import make_dsn, parse_dsn

    params = parse_dsn(os.environ["HAITATSU_TEST_POSTGRES_DSN"])
    params["dbname"] = dbname
    return make_dsn(**params)


def _drop_stale_databases(admin):
    """Databases of test processes that died before cleaning up (same host, pid gone)."""
    with admin.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (_PG_PREFIX + "%",))
        for (name,) in cur.fetchall():
            try:
                pid = int(name[len(_PG_PREFIX) :].split("_")[0])
            except ValueError:
                continue
            try:
                os.kill(pid, 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_database(name: str):
    admin = _pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


class _DatabaseSpooler:
    """This process's CREATE and DROP DATABASE work, done by one thread of its own.

    Copying the template (CREATE DATABASE ... TEMPLATE) and dropping a database each take from a
    tenth of a second to a second and more on a busy machine (a DROP waits for a checkpoint).
    Tests used to wait for both. Here the next test's database is copied while the current test
    runs (one spare, always a fresh copy of the migrated template: nothing differs from copying
    it on demand), and a finished test's database is dropped after the test (its connections
    are closed with FORCE, as before). ``finish`` drops the spare and waits for every drop.
    """

    def __init__(self, template: str):
        import queue
        import threading

        self.template = template
        self.jobs: queue.Queue = queue.Queue()
        self.spare = None  # a concurrent.futures.Future of a database name
        self.finished = False
        self.thread = threading.Thread(target=self._run, name="pg-databases", daemon=True)
        self.thread.start()

    def _run(self):
        admin = None
        while True:
            job = self.jobs.get()
            if job is None:
                break
            action, name, future = job
            try:
                if admin is None or admin.closed:
                    admin = _pg_admin()
                with admin.cursor() as cur:
                    if action == "create":
                        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                    else:
                        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except BaseException as e:
                if admin is not None:
                    admin.close()
                    admin = None
                if future is not None:
                    future.set_exception(e)
                continue
            if future is not None:
                future.set_result(name)
        if admin is not None:
            admin.close()

    def _create(self):
        import concurrent.futures

        future = concurrent.futures.Future()
        name = f"{_PG_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
        self.jobs.put(("create", name, future))
        return future

    async def take(self) -> str:
        """A fresh copy of the template, the spare when there is one; a new spare is started."""
        if self.finished:
            raise RuntimeError("the test session's PostgreSQL databases are already dropped")
        future, self.spare = self.spare or self._create(), self._create()
        if not future.done():
            waiting = defer.Deferred()
            future.add_done_callback(lambda _: reactor.callFromThread(waiting.callback, None))
            await waiting
        return future.result()

    def drop(self, name: str):
        self.jobs.put(("drop", name, None))

    def finish(self, seconds: float = 300):
        """Drop the spare, wait for every queued drop, stop the thread."""
        if self.finished:
            return
        self.finished = True
        self.jobs.put(None)
        self.thread.join(seconds)
        spare, self.spare = self.spare, None
        if spare is not None and spare.done() and spare.exception() is None:
            _drop_database(spare.result())


_pg_spooler: _DatabaseSpooler | None = None


async def _migrated_template() -> str:
    """One migrated database per test process (so per pytest-xdist worker); each test copies it
    (CREATE DATABASE ... TEMPLATE), which is much faster than migrating every time. Database
    names carry the process id: a process drops only its own databases and those of processes
    that are gone (``_drop_stale_databases``), never those of a live worker or test run."""
    global _pg_template, _pg_spooler
    if _pg_template is not None:
        return _pg_template
    import atexit

    from haitatsu.storage.postgres import PostgresDatabase, PostgresEngine

    name = f"{_PG_PREFIX}{os.getpid()}_template_{secrets.token_hex(4)}"
    admin = _pg_admin()
    try:
        _drop_stale_databases(admin)
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    atexit.register(_drop_database, name)
    db = PostgresDatabase(PostgresEngine(pg_dsn_for(name), max_connections=1), reactor)
    await db.open()
    try:
        await db.migrate()
    finally:
        await db.close()
    _pg_template = name
    # Registered after the template's drop, so it runs before it (atexit is last in, first out).
    _pg_spooler = _DatabaseSpooler(name)
    atexit.register(_pg_spooler.finish)
    return name


def finish_session():
    """Called when the pytest session (or xdist worker) ends: drop this process's PostgreSQL
    databases and stop its moto_server. atexit does the same if this is not called."""
    global _pg_template, _shared_moto
    if _pg_spooler is not None:
        _pg_spooler.finish()
    if _pg_template is not None:
        _drop_database(_pg_template)
        _pg_template = "(dropped)"  # no new databases in this process from here on
    if _shared_moto is not None:
        _shared_moto.stop()
        _shared_moto = None


async def make_pg_database(testcase) -> str:
    """A fresh, migrated PostgreSQL database of this test's own; its DSN. Dropped (with any
    connections still open to it) after the test ends."""
    if PG_SKIP:
        raise unittest.SkipTest(PG_SKIP)
    await _migrated_template()
    name = await _pg_spooler.take()
    testcase.addCleanup(_pg_spooler.drop, name)
    return pg_dsn_for(name)


def pg_terminate(dsn: str) -> int:
    """Kill every connection to the database ``dsn`` names (from an admin connection); return
    how many were killed."""
    from psycopg2.extensions import parse_dsn

    dbname = parse_dsn(dsn)["dbname"]
    admin = _pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
            return len(cur.fetchall())
    finally:
        admin.close()


def pg_allow_connections(dsn: str, allowed: bool):
    """Refuse (or allow again) new connections to the database ``dsn`` names: an outage that
    ``pg_terminate`` alone would not make, since the engine reconnects at once."""
    from psycopg2.extensions import parse_dsn

    dbname = parse_dsn(dsn)["dbname"]
    admin = _pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(allowed).lower()}')
    finally:
        admin.close()


async def make_pg_store(testcase, root: str | None = None, max_connections: int = 4):
    """A real ``MailStore`` on a fresh PostgreSQL database (see ``make_pg_database``), the
    LISTEN/NOTIFY change bus and a temporary blob directory; closed when the test ends.
    ``store.db.engine.dsn`` names the database (for ``pg_terminate``)."""
    from haitatsu.storage import build_postgres_store

    dsn = await make_pg_database(testcase)
    root = root or testcase.mktemp()
    os.makedirs(root, exist_ok=True)
    store = build_postgres_store(reactor, dsn, os.path.join(root, "blobs"), max_connections)
    await store.open()
    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
    return store


class OnPostgres:
    """Put first in the bases of a test case whose ``open_store(root)`` makes its store: the
    store is on PostgreSQL instead (``make_pg_store``), and the case skipped without it."""

    skip = PG_SKIP
    timeout = 120

    async def open_store(self, root):
        return await make_pg_store(self, root)


async def changes_settled(store, timeout: float = 5.0):
    """Wait until every change committed so far has reached this node's subscribers.

    A marker is published through the store's bus and awaited: PostgreSQL delivers
    notifications in commit order, so once the marker is heard everything before it was too
    (the in-process bus delivers synchronously, so this returns at once there).
    """
    marker = "settle-" + secrets.token_hex(8)
    heard = defer.Deferred()
    unsubscribe = store.changes.subscribe(
        marker, lambda change: heard.called or heard.callback(None)
    )
    try:
        store.changes.publish(marker, {"type": "settle"})
        heard.addTimeout(timeout, reactor)
        await heard
    finally:
        unsubscribe()


# -- a real S3 endpoint ------------------------------------------------------------------------

MOTO_REGION = "us-east-1"


class MotoServer:
    """A real S3 endpoint: ``moto_server`` in a subprocess on a free 127.0.0.1 port, with
    signature checking on.

    moto checks SigV4 only once ``INITIAL_NO_AUTH_ACTION_COUNT`` requests have been served
    (unlimited by default), and it checks them against the access keys of its own IAM users: a
    key it does not know is ``InvalidAccessKeyId``, a wrong secret ``SignatureDoesNotMatch``, a
    user without a policy allowing the action ``AccessDenied``. So ``start`` creates an IAM user
    with an inline policy allowing ``s3:*`` and an access key for it while auth is still off, then
    switches auth on for every later request (``POST /moto-api/reset-auth`` with body ``0``).
    """

    def __init__(self):
        self.process = None
        self.port = None
        self.access_key_id = self.secret_access_key = None
        self._log = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self, wait_seconds: float = 60):
        import re
        import subprocess
        import sys
        import time

        script = os.path.join(os.path.dirname(sys.executable), "moto_server")
        command = [script] if os.path.exists(script) else [sys.executable, "-m", "moto.server"]
        self._log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command + ["-H", "127.0.0.1", "-p", "0"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + wait_seconds
        try:
            while self.port is None:
                with open(self._log.name, "rb") as f:
                    m = re.search(rb"Running on http://127\.0\.0\.1:(\d+)", f.read())
                if m:
                    self.port = int(m.group(1))
                elif self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {self.output()}")
                else:
                    time.sleep(0.05)
            while not self._answers():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server does not answer: {self.output()}")
                time.sleep(0.05)
            self._enable_auth()
        except BaseException:
            self.stop()
            raise
        return self

    def output(self) -> str:
        with open(self._log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def _answers(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + "/moto-api/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # an HTTP answer of any kind: the server is up
        except OSError:
            return False

    def _enable_auth(self):
        import json
        import urllib.request

        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.url,
            region_name=MOTO_REGION,
            aws_access_key_id="AKIASETUPSETUPSETUP0",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="haitatsu")
        iam.put_user_policy(
            UserName="haitatsu",
            PolicyName="blobs",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="haitatsu")["AccessKey"]
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
        # A form content type would make Flask swallow the body: send it as plain text.
        request = urllib.request.Request(
            self.url + "/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200, r.read()

    def s3(self):
        """A boto3 S3 client with the valid key: the test's independent view of the bucket."""
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=MOTO_REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def create_bucket(self) -> str:
        import uuid

        name = f"haitatsu-test-{uuid.uuid4().hex[:16]}"
        self.s3().create_bucket(Bucket=name)
        return name

    def object_names(self, bucket: str) -> list[str]:
        listing = self.s3().list_objects_v2(Bucket=bucket)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def stop(self):
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._log is not None:
            self._log.close()
            try:
                os.unlink(self._log.name)
            except OSError:
                pass
            self._log = None


_shared_moto: MotoServer | None = None


def shared_moto() -> MotoServer:
    """This process's ``MotoServer`` (so one per pytest-xdist worker), started on first use and
    stopped when the session ends (``finish_session``, or atexit); started again if it died.
    Tests share it the way S3 users share S3: each test makes buckets of its own
    (``create_bucket`` names are random) and touches no other."""
    global _shared_moto
    if _shared_moto is None or _shared_moto.process.poll() is not None:
        import atexit

        if _shared_moto is not None:
            _shared_moto.stop()
        _shared_moto = MotoServer().start()
        atexit.register(_shared_moto.stop)
    return _shared_moto


class MotoS3Mixin:
    """Gives the test class ``moto``: this process's shared ``MotoServer`` (``shared_moto``).

    Starting moto_server (and its IAM user) takes seconds; once per process instead of once per
    class is what keeps S3 test classes cheap when pytest-xdist spreads a class over workers."""

    moto: MotoServer

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.moto = shared_moto()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()


def s3_config(moto: MotoServer, bucket: str, **overrides):
    from haitatsu.config.model import S3Config

    values = dict(
        endpoint=moto.endpoint,
        bucket=bucket,
        access_key_id=moto.access_key_id,
        secret_access_key=moto.secret_access_key,
        region=MOTO_REGION,
        request_timeout_seconds=10.0,
    )
    values.update(overrides)
    return S3Config(**values)


def make_s3_blob_store(testcase, config, retry=None, clock=None):
    """An ``S3BlobStore`` on its own connection pool, closed when the test ends. Retries are
    fast by default: three attempts within a few hundredths of a second."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    from haitatsu.storage.s3 import RetryPolicy, S3BlobStore

    pool = HTTPConnectionPool(reactor, persistent=True)
    testcase.addCleanup(pool.closeCachedConnections)
    retry = retry or RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05)
    return S3BlobStore(
        config, HTTPClient(Agent(reactor, pool=pool)), reactor, clock=clock, retry=retry, pool=pool
    )


async def make_s3_store(
    testcase,
    moto: MotoServer,
    root: str | None = None,
    retry=None,
    postgres: bool = False,
    **overrides,
):
    """A real ``MailStore`` with blobs in a fresh bucket of ``moto`` and metadata in a temporary
    SQLite file, or with ``postgres`` in a fresh PostgreSQL database (``make_pg_database``).
    ``overrides`` change the S3 config, e.g. ``endpoint`` to go through an ``S3Proxy``."""
    from twisted.internet.threads import deferToThread

    from haitatsu.storage import build_postgres_store, build_sqlite_store

    root = root or testcase.mktemp()
    os.makedirs(root, exist_ok=True)
    bucket = overrides.pop("bucket", None) or await deferToThread(moto.create_bucket)
    blobs = make_s3_blob_store(testcase, s3_config(moto, bucket, **overrides), retry=retry)
    if postgres:
        dsn = await make_pg_database(testcase)
        store = build_postgres_store(reactor, dsn, "", max_connections=4, blobs=blobs)
    else:
        store = build_sqlite_store(reactor, os.path.join(root, "haitatsu.db"), "", blobs=blobs)
    await store.open()
    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
    return store


class S3Proxy:
    """A test peer between an S3 store and moto: a small HTTP proxy on a free 127.0.0.1 port.

    It records every request as ``(method, path?query)`` and passes it on unchanged (the Host
    header included, so the signature still verifies), except that it can answer the next
    ``fail_next`` requests with ``fail_status`` itself, leave the next ``hang_next`` requests
    unanswered, refuse requests matching ``refuse(method, uri)`` with a 400, or go down
    altogether (``down()``: stop listening and drop every connection) and come back on the same
    port (``up()``).
    """

    HOP_BY_HOP = {b"connection", b"keep-alive", b"content-length", b"transfer-encoding"}

    def __init__(self, target_url: str):
        self.target = target_url.encode("ascii")
        self.requests = []
        self.fail_next = 0
        self.fail_status = 503
        self.hang_next = 0
        self.refuse = None
        self.port = None
        self._listening = None
        self._hanging = []

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.requests if m == method)

    async def start(self, testcase):
        from twisted.protocols.policies import WrappingFactory
        from twisted.web.client import Agent, HTTPConnectionPool
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        proxy = self

        class Forward(Resource):
            isLeaf = True

            def render(self, request):
                return proxy._render(request)

        self._agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        self._factory = WrappingFactory(Site(Forward()))
        await self.up(port=0)
        testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(self.down()))

    async def up(self, port=None):
        self._listening = reactor.listenTCP(
            self.port if port is None else port, self._factory, interface="127.0.0.1"
        )
        self.port = self._listening.getHost().port

    async def down(self):
        """Stop listening and drop every open connection: new requests are refused."""
        from twisted.internet import task

        if self._listening is not None:
            await self._listening.stopListening()
            self._listening = None
        for request in self._hanging:
            if not request.finished and not request._disconnected:
                request.setResponseCode(503)
                request.finish()
        self._hanging = []
        for protocol in list(self._factory.protocols):
            protocol.transport.abortConnection()
        for _ in range(200):
            if not self._factory.protocols:
                break
            await task.deferLater(reactor, 0.01, lambda: None)

    def _render(self, request):
        from io import BytesIO

        import treq
        from twisted.web.client import FileBodyProducer
        from twisted.web.http_headers import Headers
        from twisted.web.server import NOT_DONE_YET

        method, uri = request.method, request.uri
        self.requests.append((method.decode(), uri.decode()))
        if self.hang_next > 0:
            self.hang_next -= 1
            self._hanging.append(request)
            return NOT_DONE_YET
        if self.fail_next > 0:
            self.fail_next -= 1
            request.setResponseCode(self.fail_status)
            request.setHeader(b"content-type", b"application/xml")
            return b"<Error><Code>SlowDown</Code><Message>injected by the test</Message></Error>"
        if self.refuse is not None and self.refuse(method.decode(), uri.decode()):
            request.setResponseCode(400)
            return (
                b"<Error><Code>InvalidRequest</Code><Message>refused by the test</Message></Error>"
            )
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in self.HOP_BY_HOP:
                headers.setRawHeaders(name, values)
        body = request.content.read()
        producer = FileBodyProducer(BytesIO(body)) if body else None
        d = self._agent.request(method, self.target + uri, headers, producer)

        async def relay(response):
            content = await treq.content(response) if method != b"HEAD" else b""
            if request._disconnected:
                return
            request.setResponseCode(response.code)
            for name, values in response.headers.getAllRawHeaders():
                if name.lower() not in self.HOP_BY_HOP or method == b"HEAD":
                    request.responseHeaders.setRawHeaders(name, values)
            if method != b"HEAD":
                request.setHeader(b"content-length", str(len(content)).encode())
                request.write(content)
            request.finish()

        def failed(failure):
            if not request._disconnected:
                request.setResponseCode(502)
                request.finish()

        d.addCallback(lambda response: defer.Deferred.fromCoroutine(relay(response)))
        d.addErrback(failed)
        return NOT_DONE_YET
