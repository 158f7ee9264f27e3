"""Named objects in both blob stores (``IBlobStore.put_object``, ``open_object``,
``delete_object``): what exports are stored as. They live beside the blobs, never among them:
garbage collection neither lists nor removes them."""

from __future__ import annotations

import os

from twisted.internet import threads
from twisted.trial import unittest

from haitatsu.storage.blobs import check_object_name
from tests.support import MotoS3Mixin, deliver_bytes, make_s3_store, make_store


class ObjectNameTests(unittest.SynchronousTestCase):
    def test_names(self):
        for good in ("exports/01J", "imports/a.zip", "x", "a/b/c-d_e.f"):
            self.assertEqual(check_object_name(good), good)
        for bad in (
            "",
            "/x",
            "x/",
            "a//b",
            "a/../b",
            "..",
            "./x",
            "blobs/x",
            "tmp/x",
            "ab/x",
            "0f",
            "a b",
            "é/x",
            "x" * 513,
            None,
        ):
            with self.assertRaises(ValueError, msg=repr(bad)):
                check_object_name(bad)


class NamedObjectContract:
    async def make(self):
        raise NotImplementedError

    def file(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def read(self, blobs, name) -> bytes:
        f = await blobs.open_object(name)
        try:
            return f.read()
        finally:
            f.close()

    async def test_put_open_replace_delete(self):
        store = await self.make()
        blobs = store.blobs
        data = bytes(range(256)) * 1000
        self.assertEqual(await blobs.put_object("exports/one", self.file(data)), len(data))
        self.assertEqual(await self.read(blobs, "exports/one"), data)
        self.assertEqual(await blobs.put_object("exports/one", self.file(b"new")), 3)
        self.assertEqual(await self.read(blobs, "exports/one"), b"new")
        await blobs.delete_object("exports/one")
        await blobs.delete_object("exports/one")  # missing: no error
        with self.assertRaises(KeyError):
            await blobs.open_object("exports/one")
        with self.assertRaises(KeyError):
            await blobs.open_object("exports/never")

    async def test_garbage_collection_leaves_them_alone(self):
        store = await self.make()
        mailbox = await store.create_mailbox("gc@example.com", quota_bytes=1)
        try:
            await deliver_bytes(store, b"Subject: x\r\n\r\nover quota\r\n", mailbox.id)
        except Exception:
            pass  # the blob stays, unreferenced
        await store.blobs.put_object("exports/keep", self.file(b"zip bytes"))
        keys = [k for k, _ in await store.blobs.list_keys()]
        self.assertEqual(len(keys), 1)
        await store.collect_garbage(grace_seconds=0)
        self.assertEqual(await store.blobs.list_keys(), [])
        self.assertEqual(await self.read(store.blobs, "exports/keep"), b"zip bytes")


class DirectoryNamedObjectTests(NamedObjectContract, unittest.TestCase):
    async def make(self):
        return await make_store(self)

    async def test_a_link_out_of_the_root_is_not_followed(self):
        store = await self.make()
        secret = self.file(b"secret")
        os.makedirs(os.path.join(store.blobs.root, "imports"), exist_ok=True)
        os.symlink(secret, os.path.join(store.blobs.root, "imports", "link"))
        with self.assertRaises(KeyError):
            await store.blobs.open_object("imports/link")


class S3NamedObjectTests(MotoS3Mixin, NamedObjectContract, unittest.TestCase):
    timeout = 60

    async def make(self):
        return await make_s3_store(self, self.moto, prefix="p1")

    async def test_object_name_in_the_bucket_and_multipart(self):
        store = await make_s3_store(
            self, self.moto, prefix="p1", multipart_threshold_bytes=5 * 1024 * 1024
        )
        # Larger than the multipart threshold: sent in parts, read back whole.
        data = os.urandom(5 * 1024 * 1024 + 12345)
        await store.blobs.put_object("exports/big", self.file(data))
        self.assertEqual(await self.read(store.blobs, "exports/big"), data)
        names = await threads.deferToThread(self.moto.object_names, store.blobs.config.bucket)
        self.assertIn("p1/exports/big", names)
