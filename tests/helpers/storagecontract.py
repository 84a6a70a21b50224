"""
The contract every L{IStorage} keeps, as one suite of tests that runs
against every store: a store's test case mixes L{StorageContractMixin}
into a C{twisted.trial.unittest.TestCase} and implements C{makeStorage}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from letsencrypt_resource.storage.interface import (
    MAX_VALUE,
    TOO_LARGE,
    ILease,
    IStorage,
    LeaseLost,
    StaleFence,
    StorageError,
)

#: Keys that try to escape the store, or to reach what is not a value.
BAD_KEYS = [
    "",
    "/etc/passwd",
    "certificates//a.pem",
    "../outside",
    "certificates/../../outside",
    "./a",
    "certificates/.",
    "certificates/..",
    "nul\0byte",
    ".leases/name",
    "certificates/.a.pem.1.tmp",
    "lock",
    "control.sock",
    "certificates/",
    "x" * 256,
    "a\ud800",
]


if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase as _Base
else:
    _Base = object


class StorageContractMixin(_Base):
    """
    The contract tests.  C{makeStorage()} returns a new L{IStorage} on the
    test's one place (a directory, a database, a L{SharedMemory}): two
    calls give two nodes of it.  Leases are timed by C{self.clock}.
    """

    clock: Clock

    def makeStorage(self) -> Any:
        raise NotImplementedError()

    def setUp(self) -> None:
        self.clock = Clock()
        super().setUp()

    def storage(self) -> Any:
        """
        A new node, closed at the end of the test.
        """
        storage = self.makeStorage()
        self.addCleanup(storage.close)
        return storage

    async def test_interface(self) -> None:
        """
        The store, and its leases, provide their interfaces.
        """
        storage = self.storage()
        verifyObject(IStorage, storage)
        verifyObject(ILease, await storage.lease("name", 30))

    async def test_roundTrip(self) -> None:
        """
        What one node stores, it and another node load, byte for byte.
        """
        first, second = self.storage(), self.storage()
        value = bytes(range(256)) * 4
        await first.store("certificates/example.com.pem", value)
        self.assertEqual(await first.load("certificates/example.com.pem"), value)
        self.assertEqual(await second.load("certificates/example.com.pem"), value)

    async def test_missing(self) -> None:
        """
        A key never stored loads as C{None}; deleting it does nothing.
        """
        storage = self.storage()
        self.assertIsNone(await storage.load("accounts/none.json"))
        await storage.delete("accounts/none.json")
        self.assertEqual(await storage.list(""), [])

    async def test_replace(self) -> None:
        """
        A store replaces the whole value, a longer one with a shorter one.
        """
        storage = self.storage()
        await storage.store("renewal/a.json", b"a much longer first value")
        await storage.store("renewal/a.json", b"short")
        self.assertEqual(await storage.load("renewal/a.json"), b"short")

    async def test_delete(self) -> None:
        """
        A deleted key loads as C{None} on every node and is not listed.
        """
        first, second = self.storage(), self.storage()
        await first.store("challenges/token", b"authorization")
        await second.delete("challenges/token")
        self.assertIsNone(await first.load("challenges/token"))
        self.assertEqual(await first.list("challenges/"), [])

    async def test_list(self) -> None:
        """
        C{list} gives, sorted, every key that starts with the prefix, at
        any depth, and nothing else.
        """
        storage = self.storage()
        keys = [
            "provisional-signer.pem",
            "certificates/b.pem",
            "accounts/x.json",
            "certificates/a.pem",
            "certificates/deeper/c.pem",
        ]
        for key in keys:
            await storage.store(key, b"v")
        self.assertEqual(
            await storage.list("certificates/"),
            ["certificates/a.pem", "certificates/b.pem", "certificates/deeper/c.pem"],
        )
        self.assertEqual(await storage.list("certificates/b"), ["certificates/b.pem"])
        self.assertEqual(await storage.list(""), sorted(keys))
        self.assertEqual(await storage.list("renewal/"), [])

    async def test_badKeys(self) -> None:
        """
        Keys that are absolute, empty in a part, hidden, reserved, hold a
        NUL byte, go up with C{..} or are too long are refused by every
        call, and nothing is written.
        """
        storage = self.storage()
        for key in BAD_KEYS:
            await self.assertFailure(storage.load(key), StorageError)
            await self.assertFailure(storage.store(key, b"v"), StorageError)
            await self.assertFailure(storage.delete(key), StorageError)
            await self.assertFailure(storage.lease(key, 30), StorageError)
        for prefix in ("/", "../", "a/../", ".leases/", "\0"):
            await self.assertFailure(storage.list(prefix), StorageError)
            await self.assertFailure(storage.watch(prefix, print), StorageError)
        self.assertEqual(await storage.list(""), [])

    async def test_badValues(self) -> None:
        """
        Only bytes are stored: text, a number or C{None} fail (in the
        Deferred, not at the call), and nothing is written; C{bytearray}
        and C{memoryview} are stored as bytes.
        """
        storage = self.storage()
        for value in ("text", 5, None):
            await self.assertFailure(storage.store("a", value), StorageError)
        self.assertEqual(await storage.list(""), [])
        await storage.store("a", bytearray(b"array"))
        await storage.store("b", memoryview(b"view"))
        self.assertEqual((await storage.load("a"), await storage.load("b")), (b"array", b"view"))

    async def test_valueOrFolder(self) -> None:
        """
        A key is never both a value and a folder of other keys: storing,
        loading or deleting below a value, or at a folder, fails on every
        node, and the values stay.
        """
        first, second = self.storage(), self.storage()
        await first.store("a", b"value")
        await first.store("c/d", b"below")
        for storage in (first, second):
            for key in ("a/b", "c", "a/b/e"):
                await self.assertFailure(storage.store(key, b"v"), StorageError)
                await self.assertFailure(storage.load(key), StorageError)
                await self.assertFailure(storage.delete(key), StorageError)
        self.assertEqual(await second.list(""), ["a", "c/d"])
        await second.delete("c/d")
        await second.store("c", b"now a value")
        self.assertEqual(await first.load("c"), b"now a value")

    async def test_loadMany(self) -> None:
        """
        C{loadMany} gives each key asked for its value, as C{load} would on
        any node: C{None} for a key with none; nothing for no key.
        """
        first, second = self.storage(), self.storage()
        await first.store("certificates/a.pem", b"a")
        await first.store("renewal/a.json", b"state")
        keys = ["certificates/a.pem", "renewal/a.json", "renewal/b.json", "certificates/a.pem"]
        expected = {"certificates/a.pem": b"a", "renewal/a.json": b"state", "renewal/b.json": None}
        for storage in (first, second):
            self.assertEqual(await storage.loadMany(keys), expected)
            self.assertEqual(await storage.loadMany([]), {})

    async def test_storeOverBoundRefused(self) -> None:
        """
        A value over C{MAX_VALUE} bytes, which no load would give back, is
        refused with a clear error, and the old value is kept; one of
        C{MAX_VALUE} bytes is stored.
        """
        storage = self.storage()
        await storage.store("renewal/a.json", b"old")
        error = await self.assertFailure(
            storage.store("renewal/a.json", b"x" * (MAX_VALUE + 1)), StorageError
        )
        self.assertIn(TOO_LARGE, error.message)
        self.assertEqual(await storage.load("renewal/a.json"), b"old")
        await storage.store("renewal/a.json", b"x" * MAX_VALUE)
        self.assertEqual(len(await storage.load("renewal/a.json")), MAX_VALUE)

    async def test_loadManyRefuses(self) -> None:
        """
        C{loadMany} fails with L{StorageError} when any key asked for would
        fail C{load}: an invalid key, one below a value or at a folder of
        others; and once the node is closed.
        """
        storage = self.storage()
        await storage.store("a", b"value")
        await storage.store("c/d", b"below")
        for key in [*BAD_KEYS, "a/b", "c"]:
            await self.assertFailure(storage.loadMany(["c/d", key]), StorageError)
        await storage.close()
        await self.assertFailure(storage.loadMany(["a"]), StorageError)

    async def test_leaseNamesApart(self) -> None:
        """
        Leases are named apart from values and from each other: C{a} and
        C{a/b} are two leases, and neither touches the value at C{a}.
        """
        first, second = self.storage(), self.storage()
        await first.store("certificates", b"value")
        self.assertIsNotNone(await first.lease("certificates/x", 30))
        self.assertIsNotNone(await second.lease("certificates", 30))
        self.assertIsNotNone(await second.lease("certificates/x/y", 30))
        self.assertEqual(await second.list(""), ["certificates"])
        self.assertEqual(await second.load("certificates"), b"value")

    async def test_leaseExclusive(self) -> None:
        """
        While a lease is held, nobody else takes it: neither another node
        nor another caller on the same node; other names are free.
        """
        first, second = self.storage(), self.storage()
        lease = await first.lease("example.com", 30)
        self.assertEqual(lease.name, "example.com")
        self.assertIsInstance(lease.token, int)
        self.assertIsNone(await first.lease("example.com", 30))
        self.assertIsNone(await second.lease("example.com", 30))
        self.assertIsNotNone(await first.lease("account", 30))

    async def test_otherNameOtherNode(self) -> None:
        """
        While one node holds a lease, another node takes other names, and
        the first then cannot take those.
        """
        first, second = self.storage(), self.storage()
        self.assertIsNotNone(await first.lease("example.com", 30))
        self.assertIsNotNone(await second.lease("account", 30))
        self.assertIsNone(await first.lease("account", 30))

    async def test_releaseThenTaken(self) -> None:
        """
        A released lease can be taken at once by another node, with a
        larger token.
        """
        first, second = self.storage(), self.storage()
        lease = await first.lease("example.com", 30)
        await lease.release()
        await lease.release()
        taken = await second.lease("example.com", 30)
        self.assertGreater(taken.token, lease.token)

    async def test_closeReleases(self) -> None:
        """
        Closing a node gives its leases up, as a process that dies does.
        """
        first, second = self.storage(), self.storage()
        lease = await first.lease("example.com", 30)
        await first.close()
        taken = await second.lease("example.com", 30)
        self.assertGreater(taken.token, lease.token)
        await self.assertFailure(first.load("accounts/a.json"), StorageError)

    async def test_tokenAcrossRestart(self) -> None:
        """
        Tokens keep increasing across a restart: a storage made anew on the
        same place gives a larger token than the closed one gave.
        """
        first = self.storage()
        tokens = []
        for _ in range(3):
            lease = await first.lease("example.com", 30)
            tokens.append(lease.token)
            await lease.release()
        await first.close()
        again = await self.storage().lease("example.com", 30)
        tokens.append(again.token)
        self.assertEqual(tokens, sorted(set(tokens)))

    async def test_staleFence(self) -> None:
        """
        Once a lease has passed to another holder, a write or delete made
        under the older one is refused with L{StaleFence} (event 20189),
        and the newer holder's value stays.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        first, second = self.storage(), self.storage()
        old = await first.lease("example.com", 30)
        await first.store("certificates/example.com.pem", b"old", fence=old)
        await old.release()
        new = await second.lease("example.com", 30)
        await second.store("certificates/example.com.pem", b"new", fence=new)
        error = await self.assertFailure(
            first.store("certificates/example.com.pem", b"late", fence=old), StaleFence
        )
        self.assertEqual(
            (error.key, error.token, error.newest),
            ("certificates/example.com.pem", old.token, new.token),
        )
        await self.assertFailure(
            first.delete("certificates/example.com.pem", fence=old), StaleFence
        )
        self.assertEqual(await second.load("certificates/example.com.pem"), b"new")
        self.assertEqual([e["event_id"] for e in events if "event_id" in e], [20189, 20189])

    async def test_renew(self) -> None:
        """
        A renewed lease is kept for its seconds from the renewal, from
        every node.
        """
        first, second = self.storage(), self.storage()
        lease = await first.lease("example.com", 30)
        self.clock.advance(20)
        await lease.renew()
        self.clock.advance(20)
        self.assertIsNone(await second.lease("example.com", 30))
        self.assertIsNone(await first.lease("example.com", 30))

    async def test_expiry(self) -> None:
        """
        A lease not renewed expires: another node then takes it with a
        larger token, after which the old one can neither be renewed nor
        write, and the new one is exclusive in turn.
        """
        first, second = self.storage(), self.storage()
        old = await first.lease("example.com", 30)
        self.clock.advance(29)
        self.assertIsNone(await second.lease("example.com", 30))
        self.clock.advance(2)
        new = await second.lease("example.com", 30)
        self.assertGreater(new.token, old.token)
        await self.assertFailure(old.renew(), LeaseLost)
        await self.assertFailure(
            first.store("renewal/example.com.json", b"{}", fence=old), StaleFence
        )
        self.assertIsNone(await first.lease("example.com", 30))
        await second.store("renewal/example.com.json", b"{}", fence=new)

    async def test_closed(self) -> None:
        """
        Once a node is closed, its leases fail to renew with L{LeaseLost},
        and it refuses watches and every other call.
        """
        storage = self.storage()
        lease = await storage.lease("example.com", 30)
        await storage.close()
        await self.assertFailure(lease.renew(), LeaseLost)
        await self.assertFailure(storage.watch("", print), StorageError)
        await self.assertFailure(storage.store("a", b"v"), StorageError)
        await self.assertFailure(storage.list(""), StorageError)
        await self.assertFailure(storage.lease("account", 30), StorageError)

    async def test_watch(self) -> None:
        """
        A watch hears of every store and delete that another node makes
        under its prefix, after the change can be read; not of its own
        node's changes, nor of other prefixes; nothing once stopped.
        """
        first, second = self.storage(), self.storage()
        heard: list[str] = []
        read: list[Any] = []

        def changed(key: str) -> None:
            heard.append(key)
            read.append(first.load(key))

        stop = await first.watch("certificates/", changed)
        await second.store("certificates/a.pem", b"one")
        await second.store("accounts/x.json", b"account")
        await first.store("certificates/b.pem", b"own")
        await second.delete("certificates/a.pem")
        self.assertEqual(heard, ["certificates/a.pem", "certificates/a.pem"])
        self.assertEqual([await d for d in read], [b"one", None])
        stop()
        stop()
        await second.store("certificates/c.pem", b"later")
        self.assertEqual(len(heard), 2)

    async def test_watchFails(self) -> None:
        """
        A watch callback that raises is logged (event 20188) and keeps
        watching.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        first, second = self.storage(), self.storage()
        heard: list[str] = []

        def changed(key: str) -> None:
            heard.append(key)
            raise RuntimeError("broken watcher")

        await first.watch("", changed)
        await second.store("challenges/one", b"a")
        await second.store("challenges/two", b"b")
        self.assertEqual(heard, ["challenges/one", "challenges/two"])
        failed = [e for e in events if e.get("event_id") == 20188]
        self.assertEqual([e["key"] for e in failed], heard)
        self.assertIn("broken watcher", failed[0]["details"])
