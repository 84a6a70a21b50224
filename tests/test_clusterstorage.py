"""
L{ClusterStorage} over stores in memory: the database's values sealed, the
cache kept, the database lost and back, the key check, and the cluster
events.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from letsencrypt_resource.clusterresume import resume, resumeWhenBack
from letsencrypt_resource.keys import keyToPEM
from letsencrypt_resource.nodestorage import stopReactor
from letsencrypt_resource.storage.availability import (
    CALL_DEADLINE,
    KEY_CHECK,
    KEY_CHECK_TEXT,
    LOST,
    PROBE_INTERVAL,
    REFUSED,
    UP,
    KeyMismatch,
)
from letsencrypt_resource.storage.cluster import ClusterLease, ClusterStorage
from letsencrypt_resource.storage.interface import (
    ILease,
    IStorage,
    LeaseLost,
    StaleFence,
    StorageError,
    StorageUnavailable,
    ValueTooLarge,
)
from letsencrypt_resource.storage.memory import MemoryStorage, SharedMemory
from letsencrypt_resource.storage.records import AccountRecord, Records
from letsencrypt_resource.storage.sealed import SealedValueRefused
from letsencrypt_resource.storage.sealing import Sealer, deriveKey
from tests.helpers import keyMarkers, selfSigned
from tests.helpers.outage import SwitchedStorage

CERTIFICATE = "certificates/example.com.pem"
KEY_FILE = "/etc/cluster.key"


class ClusterStorageCase(SynchronousTestCase):
    """
    Nodes on one database in memory, each with a cache of its own.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.database = SharedMemory(self.clock)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.refused: list[str] = []

    def node(
        self, name: str = "node-1", material: bytes = b"k" * 32, down: bool = False
    ) -> tuple[ClusterStorage, SwitchedStorage, SharedMemory]:
        """
        A node: its storage, the switch of its way to the database, and its
        cache.
        """
        switch = SwitchedStorage(MemoryStorage(self.database), down)
        cache = SharedMemory(self.clock)
        storage = ClusterStorage(
            switch,
            MemoryStorage(cache),
            Sealer(deriveKey(material), name),
            self.clock,
            KEY_FILE,
            lambda: self.refused.append(name),
        )
        return storage, switch, cache

    def result(self, d: Any) -> Any:
        """
        The result C{d} has now.
        """
        return self.successResultOf(d)

    def eventsOf(self, eventID: int) -> list[dict[str, Any]]:
        """
        The events logged with C{eventID}.
        """
        return [e for e in self.events if e.get("event_id") == eventID]


class SealedTests(ClusterStorageCase):
    """
    What the database holds is sealed.
    """

    def test_interface(self) -> None:
        """
        A L{ClusterStorage} is an L{IStorage}, shared by the nodes.
        """
        storage, _, _ = self.node()
        self.assertTrue(verifyObject(IStorage, storage))
        self.assertFalse(storage.exclusive)

    def test_dumpRevealsNoKey(self) -> None:
        """
        The database's values (as a dump would show them) hold none of the
        private keys stored, in PEM, DER or numbers, nor any PEM at all;
        read back through the node, they are whole.
        """
        storage, _, _ = self.node()
        records = Records(storage)
        certified = selfSigned()
        account = AccountRecord(selfSigned().key, "https://ca.example/acct/1")
        self.result(records.saveCertificate(("example.com",), certified))
        self.result(records.saveAccount("https://ca.example/dir", account))
        self.result(records.saveProvisionalSigner(certified.toPEM()))
        dump = repr(self.database.values)
        for marker in keyMarkers(certified.key) + keyMarkers(account.key):
            self.assertNotIn(marker, dump)
        self.assertNotIn("BEGIN", dump)
        loaded = self.result(records.loadCertificate(("example.com",)))
        self.assertEqual(keyToPEM(loaded.key), keyToPEM(certified.key))
        loadedAccount = self.result(records.loadAccount("https://ca.example/dir"))
        self.assertEqual(keyToPEM(loadedAccount.key), keyToPEM(account.key))

    def test_tamperedRefused(self) -> None:
        """
        A value changed in the database, or moved there from another key,
        is refused when read.
        """
        storage, _, _ = self.node()
        self.result(storage.store(CERTIFICATE, b"one"))
        self.result(storage.store("certificates/other.pem", b"two"))
        values = self.database.values
        values[CERTIFICATE] = values["certificates/other.pem"]
        self.failureResultOf(storage.load(CERTIFICATE), SealedValueRefused)
        values[CERTIFICATE] = b"plain text"
        self.failureResultOf(storage.load(CERTIFICATE), SealedValueRefused)


class CacheTests(ClusterStorageCase):
    """
    The state directory keeps the certificates, their renewal state and
    the signer, and serves them while the database cannot be reached.
    """

    def test_copied(self) -> None:
        """
        Certificates, renewal states and the signer stored go to the cache
        in clear; accounts and challenges do not.
        """
        storage, _, cache = self.node()
        for key in (CERTIFICATE, "renewal/example.com.json", "provisional-signer.pem"):
            self.result(storage.store(key, b"value of " + key.encode()))
        self.result(storage.store("accounts/a.json", b"account"))
        self.result(storage.store("challenges/token", b"answer"))
        self.assertEqual(
            sorted(cache.values),
            ["certificates/example.com.pem", "provisional-signer.pem", "renewal/example.com.json"],
        )
        self.assertEqual(cache.values[CERTIFICATE], b"value of " + CERTIFICATE.encode())

    def test_copiedWhenRead(self) -> None:
        """
        A certificate another node stored is copied to the cache when read,
        and its removal removes the copy.
        """
        first, _, _ = self.node("node-1")
        second, _, cache = self.node("node-2")
        self.result(first.store(CERTIFICATE, b"new"))
        self.assertEqual(self.result(second.load(CERTIFICATE)), b"new")
        self.assertEqual(cache.values[CERTIFICATE], b"new")
        self.result(first.delete(CERTIFICATE))
        self.assertIsNone(self.result(second.load(CERTIFICATE)))
        self.assertNotIn(CERTIFICATE, cache.values)

    def test_tooLargeInTheBatch(self) -> None:
        """
        A value the database has too large to read (L{ValueTooLarge}) is
        that key's value in a batch, the others opened; C{load} fails with
        it; the cache keeps its own copy.
        """
        storage, switch, cache = self.node()
        self.result(storage.store(CERTIFICATE, b"old"))
        self.result(storage.store("renewal/example.com.json", b"state"))
        inner = switch.loadMany

        def loadMany(keys: Any) -> Deferred[Any]:
            def damaged(found: dict[str, Any]) -> dict[str, Any]:
                if CERTIFICATE in found:
                    found[CERTIFICATE] = ValueTooLarge(CERTIFICATE)
                return found

            return inner(keys).addCallback(damaged)

        self.patch(switch, "loadMany", loadMany)
        found = self.result(storage.loadMany([CERTIFICATE, "renewal/example.com.json"]))
        self.assertIsInstance(found.pop(CERTIFICATE), ValueTooLarge)
        self.assertEqual(found, {"renewal/example.com.json": b"state"})
        self.failureResultOf(storage.load(CERTIFICATE), ValueTooLarge)
        self.assertEqual(cache.values[CERTIFICATE], b"old")

    def test_slowReadNotCopiedOverNewer(self) -> None:
        """
        A read whose answer arrives after a later write has been copied
        does not put its older value back in the cache.
        """
        storage, switch, cache = self.node()
        self.result(storage.store(CERTIFICATE, b"old"))
        switch.slow = True
        reading = storage.load(CERTIFICATE)
        switch.slow = False
        self.result(storage.store(CERTIFICATE, b"new"))
        [deliver] = switch.held
        deliver()
        self.assertEqual(self.result(reading), b"old")
        self.assertEqual(cache.values[CERTIFICATE], b"new")

    def test_startWithoutDatabase(self) -> None:
        """
        A node that starts while the database cannot be reached reads its
        certificates from the cache (event 20215, once), and fails every
        other call at once: no account read, no lease, no write.
        """
        storage, switch, _ = self.node()
        self.result(storage.store(CERTIFICATE, b"cached"))
        self.result(storage.close())
        storage, switch, cache = self.node(down=True)
        cache.values[CERTIFICATE] = b"cached"
        self.assertEqual(self.result(storage.load(CERTIFICATE)), b"cached")
        self.assertEqual(
            self.result(storage.loadMany([CERTIFICATE, "renewal/example.com.json"])),
            {CERTIFICATE: b"cached", "renewal/example.com.json": None},
        )
        self.assertEqual(self.result(storage.list("certificates/")), [CERTIFICATE])
        calls = switch.calls
        self.failureResultOf(storage.load("accounts/a.json"), StorageUnavailable)
        self.failureResultOf(storage.lease("orders/example.com", 60), StorageUnavailable)
        self.failureResultOf(storage.store(CERTIFICATE, b"x"), StorageUnavailable)
        self.assertEqual(switch.calls, calls)
        self.assertEqual(storage.availability.state, LOST)
        [lost] = self.eventsOf(20215)
        self.assertEqual(lost["node_name"], "node-1")
        self.assertIn("connection refused", lost["details"])


class OutageTests(ClusterStorageCase):
    """
    The database lost while running, and back.
    """

    def test_lostThenBack(self) -> None:
        """
        A call that fails for want of the database makes the node ask it
        again every L{PROBE_INTERVAL} seconds, one call each time; once it
        answers, event 20216 says for how long it was lost, and calls go
        through again.
        """
        storage, switch, _ = self.node()
        self.result(storage.store(CERTIFICATE, b"one"))
        switch.down = True
        self.failureResultOf(storage.lease("orders/example.com", 60), StorageUnavailable)
        self.assertEqual(len(self.eventsOf(20215)), 1)
        calls = switch.calls
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(switch.calls, calls + 1)
        switch.down = False
        self.clock.advance(PROBE_INTERVAL)
        [back] = self.eventsOf(20216)
        self.assertEqual((back["node_name"], back["seconds"]), ("node-1", 10))
        self.assertEqual(storage.availability.state, UP)
        self.assertIsNotNone(self.result(storage.lease("orders/example.com", 60)))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_watchSetUpWhenBack(self) -> None:
        """
        A watch asked for while the database cannot be reached is set up
        when it is back, and every key it covers is reported then, so that
        what other nodes stored meanwhile is taken; later changes are
        reported as they come.
        """
        other, _, _ = self.node("node-2")
        storage, switch, _ = self.node(down=True)
        seen: list[str] = []
        stop = self.result(storage.watch("certificates/", seen.append))
        self.result(other.store(CERTIFICATE, b"meanwhile"))
        self.assertEqual(seen, [])
        switch.down = False
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(seen, [CERTIFICATE])
        self.result(other.store("certificates/b.pem", b"later"))
        self.assertEqual(seen, [CERTIFICATE, "certificates/b.pem"])
        stop()
        self.result(other.store("certificates/c.pem", b"after the stop"))
        self.assertEqual(len(seen), 2)

    def test_closeStopsProbing(self) -> None:
        """
        Closing the storage stops asking for the database.
        """
        storage, _, _ = self.node(down=True)
        self.failureResultOf(storage.load("accounts/a.json"), StorageUnavailable)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.result(storage.close())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class KeyCheckTests(ClusterStorageCase):
    """
    A node whose key file is not the cluster's uses nothing of the
    database.
    """

    def test_firstNodeWrites(self) -> None:
        """
        The first node stores the key check record; a node with the same
        key file passes it.
        """
        first, _, _ = self.node("node-1")
        self.result(first.store(CERTIFICATE, b"one"))
        self.assertIn(KEY_CHECK, self.database.values)
        second, _, _ = self.node("node-2")
        self.assertEqual(self.result(second.load(CERTIFICATE)), b"one")
        self.assertEqual(self.refused, [])

    def test_otherKeyRefused(self) -> None:
        """
        A node with another key file is refused at its first call (event
        20220 naming the file, and the refusal callback); every call then
        fails naming C{cluster_key_file}, without reaching the database,
        and its cache still answers.
        """
        first, _, _ = self.node("node-1")
        self.result(first.store(CERTIFICATE, b"one"))
        other, switch, cache = self.node("node-2", material=b"j" * 32)
        cache.values[CERTIFICATE] = b"cached"
        self.assertEqual(self.result(other.load(CERTIFICATE)), b"cached")
        self.assertEqual(self.refused, ["node-2"])
        self.assertEqual(other.availability.state, REFUSED)
        [mismatch] = self.eventsOf(20220)
        self.assertEqual((mismatch["node_name"], mismatch["path"]), ("node-2", KEY_FILE))
        calls = switch.calls
        error = self.failureResultOf(other.store(CERTIFICATE, b"mine"), KeyMismatch).value
        self.assertIn("cluster_key_file /etc/cluster.key", str(error))
        self.failureResultOf(other.lease("orders/example.com", 60), KeyMismatch)
        self.assertEqual(switch.calls, calls)
        self.assertEqual(self.result(first.load(CERTIFICATE)), b"one")
        self.clock.advance(PROBE_INTERVAL * 10)
        self.assertEqual(switch.calls, calls)


class ClusterEventTests(ClusterStorageCase):
    """
    Leases taken and lost, and certificates received, are reported with
    the node's name.
    """

    def test_received(self) -> None:
        """
        A certificate another node stored, reported by the watch and then
        read, is event 20219 naming the node that stored it; this node's
        own reads and writes are not.
        """
        first, _, _ = self.node("node-1")
        second, _, _ = self.node("node-2")
        changed: list[str] = []
        self.result(second.watch("certificates/", changed.append))
        self.result(first.store(CERTIFICATE, b"new"))
        self.assertEqual(changed, [CERTIFICATE])
        self.assertEqual(self.eventsOf(20219), [])
        self.result(second.load(CERTIFICATE))
        self.result(second.load(CERTIFICATE))
        [received] = self.eventsOf(20219)
        self.assertEqual(
            (received["node_name"], received["key"], received["stored_by"]),
            ("node-2", CERTIFICATE, "node-1"),
        )

    def test_leaseTakenAndLost(self) -> None:
        """
        A lease taken is event 20217 with its token; renewing it once
        another node took it over fails and is event 20218.
        """
        first, _, _ = self.node("node-1")
        second, _, _ = self.node("node-2")
        lease = self.result(first.lease("orders/example.com", 60))
        self.assertTrue(verifyObject(ILease, lease))
        [taken] = self.eventsOf(20217)
        self.assertEqual((taken["name"], taken["token"]), ("orders/example.com", lease.token))
        self.clock.advance(61)
        newer = self.result(second.lease("orders/example.com", 60))
        self.assertGreater(newer.token, lease.token)
        self.failureResultOf(lease.renew(), LeaseLost)
        [lost] = self.eventsOf(20218)
        self.assertEqual((lost["node_name"], lost["name"]), ("node-1", "orders/example.com"))

    def test_fenced(self) -> None:
        """
        A write under a lease another node took over is refused.
        """
        first, _, _ = self.node("node-1")
        second, _, _ = self.node("node-2")
        lease = self.result(first.lease("orders/example.com", 60))
        assert isinstance(lease, ClusterLease)
        self.clock.advance(61)
        newer = self.result(second.lease("orders/example.com", 60))
        self.result(second.store(CERTIFICATE, b"newer", newer))
        self.failureResultOf(first.store(CERTIFICATE, b"late", lease), StaleFence)
        self.assertEqual(self.result(second.load(CERTIFICATE)), b"newer")

    def test_badKeyNotCached(self) -> None:
        """
        A key that no store accepts fails, without falling back to the
        cache.
        """
        storage, _, _ = self.node(down=True)
        self.failureResultOf(storage.load("../escape"), StorageError)


class StopReactorTests(SynchronousTestCase):
    """
    L{stopReactor}, what a server does when the cluster refuses its node.
    """

    def test_stops(self) -> None:
        """
        A running reactor is stopped; one that is not is left alone.
        """
        reactor = MemoryReactorClock()
        reactor.running = True
        stopReactor(reactor)()
        self.assertTrue(reactor.hasStopped)
        idle = MemoryReactorClock()
        stopReactor(idle)()
        self.assertFalse(idle.hasStopped)


class _Set:
    """
    What L{resume} reads of a domain set.
    """

    def __init__(self, failures: int, lastFailure: float, holdUntil: float = 0.0):
        self.attempt = None
        self.failures = failures
        self.lastFailure = lastFailure
        self.holdUntil = holdUntil
        self.nextAttempt = lastFailure + 600.0


class _Resource:
    """
    What L{resume} uses of a resource: its sets, and the checks asked.
    """

    def __init__(self, sets: list[_Set]):
        self.managed = {frozenset({str(i)}): s for i, s in enumerate(sets)}
        self.checked: list[list[_Set]] = []

    def check(self, only: list[_Set]) -> Any:
        self.checked.append(only)
        return succeed(None)


class ResumeTests(ClusterStorageCase):
    """
    When the database is back, the sets whose attempt failed during the
    outage are tried again at once.
    """

    def test_resume(self) -> None:
        """
        Only the sets that failed since the database was lost, and that no
        CA's Retry-After holds, are made due now and checked.
        """
        self.clock.advance(1000)
        during = _Set(failures=1, lastFailure=950)
        before = _Set(failures=2, lastFailure=800)
        held = _Set(failures=1, lastFailure=960, holdUntil=2000)
        healthy = _Set(failures=0, lastFailure=0)
        resource = _Resource([during, before, held, healthy])
        self.result(resume(resource, self.clock, lostSince=900))
        self.assertEqual(resource.checked, [[during]])
        self.assertEqual(during.nextAttempt, 1000)
        self.assertEqual(before.nextAttempt, 1400)
        self.result(resume(_Resource([before]), self.clock, lostSince=900))

    def test_whenBack(self) -> None:
        """
        L{resumeWhenBack} makes a cluster node's storage resume its
        resource's sets when the database is back, with the time it was
        lost; another storage is left alone.
        """
        storage, switch, _ = self.node(down=True)
        self.failureResultOf(storage.lease("orders/a", 60), StorageUnavailable)
        failed = _Set(failures=1, lastFailure=self.clock.seconds())
        resource = _Resource([failed])
        resumeWhenBack(resource, storage, self.clock)  # type: ignore[arg-type]
        resumeWhenBack(resource, MemoryStorage(self.database), self.clock)  # type: ignore[arg-type]
        switch.down = False
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(resource.checked, [[failed]])


class KeyCheckRaceTests(ClusterStorageCase):
    """
    Nodes with different key files that start together: the record is
    created only where none is, so one of them is refused.
    """

    def race(self, order: str) -> tuple[str, str]:
        """
        Start node-1 and node-2 (other key files) together, their calls to
        the database made in C{order}: C{"1"} or C{"2"} makes that node's
        next call held, C{"*"} makes every call held, node-1's first.

        @return: The nodes' states.
        """
        first, firstSwitch, _ = self.node("node-1")
        second, secondSwitch, _ = self.node("node-2", material=b"j" * 32)
        firstSwitch.gated = secondSwitch.gated = True
        first.load(CERTIFICATE)
        second.load(CERTIFICATE)
        for step in order:
            if step == "1":
                firstSwitch.release()
            elif step == "2":
                secondSwitch.release()
            else:
                firstSwitch.drain()
                secondSwitch.drain()
            self.clock.advance(1)
        return first.availability.state, second.availability.state

    def test_bothReadNothingFirst(self) -> None:
        """
        Both nodes find no record, then the first stores and reads its own
        before the second goes on: the second is refused, not accepted
        with its own record over the first's.
        """
        self.assertEqual(self.race("12*"), (UP, REFUSED))
        self.assertEqual(self.refused, ["node-2"])

    def test_interleaved(self) -> None:
        """
        Calls taken in turns, the second node's lease attempt made while
        the first holds it: the second waits, reads the first's record,
        and is refused.
        """
        self.assertEqual(self.race("1212121212*"), (UP, REFUSED))
        self.assertEqual(len(self.eventsOf(20220)), 1)


class LaterMismatchTests(ClusterStorageCase):
    """
    A key check record that no longer opens, found after the start, keeps
    the node serving from its cache.
    """

    def test_keepsServing(self) -> None:
        """
        A probe that finds the record sealed with another key is one
        critical event 20220, however many probes find it; the node is not
        stopped, stays lost and reads its cache, and is back once the
        record opens again.
        """
        storage, switch, cache = self.node()
        self.result(storage.store(CERTIFICATE, b"cached"))
        own = self.database.values[KEY_CHECK]
        foreign = Sealer(deriveKey(b"j" * 32), "intruder").seal(KEY_CHECK, KEY_CHECK_TEXT)
        self.database.values[KEY_CHECK] = foreign
        switch.down = True
        self.failureResultOf(storage.lease("orders/example.com", 60), StorageUnavailable)
        switch.down = False
        self.clock.advance(PROBE_INTERVAL * 3)
        self.assertEqual(self.refused, [])
        self.assertEqual(storage.availability.state, LOST)
        self.assertEqual(len(self.eventsOf(20220)), 1)
        self.assertEqual(self.result(storage.load(CERTIFICATE)), b"cached")
        self.failureResultOf(storage.store(CERTIFICATE, b"x"), StorageUnavailable)
        self.database.values[KEY_CHECK] = own
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(storage.availability.state, UP)
        self.assertEqual(len(self.eventsOf(20216)), 1)


class CheckFailureTests(ClusterStorageCase):
    """
    A key check that fails with an error no store should raise.
    """

    def test_unexpectedError(self) -> None:
        """
        The call waiting for it fails as if the database were lost, without
        reaching the database; the node probes again, and once the check
        passes, later calls go through (none waits for ever).
        """
        storage, switch, _ = self.node()
        database = switch.load
        switch.load = lambda key: fail(RuntimeError("a bug"))  # type: ignore[method-assign]
        calls = switch.calls
        self.failureResultOf(storage.load("accounts/a.json"), StorageUnavailable)
        self.assertEqual(switch.calls, calls)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(storage.availability.state, LOST)
        switch.load = database  # type: ignore[method-assign]
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(storage.availability.state, UP)
        self.assertIsNone(self.result(storage.load("accounts/a.json")))


class CacheOrderTests(ClusterStorageCase):
    """
    The cache is never left older than what the node read or wrote last.
    """

    def test_readRacingWrite(self) -> None:
        """
        A read sent after a write but answered from before its commit (two
        connections) does not put the older value back: the write, taken
        by the database after the read was sent, wins.
        """
        storage, switch, cache = self.node()
        self.result(storage.store(CERTIFICATE, b"old"))
        switch.gated = True
        writing = storage.store(CERTIFICATE, b"new")
        reading = storage.load(CERTIFICATE)
        switch.waiting.pop(1)()  # the read runs first
        switch.waiting.pop(0)()  # then the write commits
        self.assertEqual(self.result(reading), b"old")
        self.result(writing)
        self.assertEqual(cache.values[CERTIFICATE], b"new")

    def test_copiesInOrder(self) -> None:
        """
        A read of many keys whose copies wait for the cache does not write
        one of them after a later write's copy of it.
        """
        other, _, _ = self.node("node-2")
        self.result(other.store(CERTIFICATE, b"a"))
        self.result(other.store("certificates/b.pem", b"b-old"))
        memory = SharedMemory(self.clock)
        cache = SwitchedStorage(MemoryStorage(memory))
        cache.gated = True
        storage = ClusterStorage(
            MemoryStorage(self.database),
            cache,
            Sealer(deriveKey(b"k" * 32), "node-1"),
            self.clock,
            KEY_FILE,
        )
        reading = storage.loadMany([CERTIFICATE, "certificates/b.pem"])
        writing = storage.store("certificates/b.pem", b"b-new")
        cache.drain()
        self.result(reading)
        self.result(writing)
        self.assertEqual(memory.values["certificates/b.pem"], b"b-new")
        self.assertEqual(memory.values[CERTIFICATE], b"a")

    def test_failureReportedOncePerKey(self) -> None:
        """
        A cache that cannot be written is event 20221 once for each key,
        however often the key is copied, until a copy of it works.
        """
        memory = SharedMemory(self.clock)
        cache = SwitchedStorage(MemoryStorage(memory), down=True)
        storage = ClusterStorage(
            MemoryStorage(self.database),
            cache,
            Sealer(deriveKey(b"k" * 32), "node-1"),
            self.clock,
            KEY_FILE,
        )
        for value in (b"one", b"two", b"three"):
            self.result(storage.store(CERTIFICATE, value))
            self.result(storage.load(CERTIFICATE))
        self.result(storage.store("renewal/example.com.json", b"{}"))
        self.assertEqual(
            [e["key"] for e in self.eventsOf(20221)], [CERTIFICATE, "renewal/example.com.json"]
        )
        cache.down = False
        self.result(storage.store(CERTIFICATE, b"four"))
        cache.down = True
        self.result(storage.store(CERTIFICATE, b"five"))
        self.assertEqual(len(self.eventsOf(20221)), 3)


class DeadlineTests(ClusterStorageCase):
    """
    A database call that never answers.
    """

    def test_lostAfterDeadline(self) -> None:
        """
        It fails with L{StorageUnavailable} after L{CALL_DEADLINE} seconds,
        the node is lost (event 20215), and a cached key is read from the
        cache at once.
        """
        storage, switch, cache = self.node()
        self.result(storage.store(CERTIFICATE, b"cached"))
        switch.gated = True
        hung = storage.load("accounts/a.json")
        self.clock.advance(CALL_DEADLINE - 1)
        self.assertNoResult(hung)
        self.clock.advance(1)
        error = self.failureResultOf(hung, StorageUnavailable).value
        self.assertIn("no answer", str(error))
        self.assertEqual(storage.availability.state, LOST)
        self.assertEqual(len(self.eventsOf(20215)), 1)
        self.assertEqual(self.result(storage.load(CERTIFICATE)), b"cached")


class CatchUpTests(ClusterStorageCase):
    """
    What a node takes when the database is back.
    """

    def test_reportedWhileLost(self) -> None:
        """
        A change reported while the node was lost (its listener back
        before its probe), read then from the cache, is reported again
        once the database is back, and read from it.
        """
        other, _, _ = self.node("node-2")
        storage, switch, _ = self.node()
        seen: list[str] = []
        self.result(storage.watch("certificates/", seen.append))
        self.result(other.store(CERTIFICATE, b"one"))
        self.assertEqual(self.result(storage.load(CERTIFICATE)), b"one")
        switch.down = True
        self.failureResultOf(storage.lease("orders/example.com", 60), StorageUnavailable)
        self.result(other.store(CERTIFICATE, b"two"))
        self.assertEqual(self.result(storage.load(CERTIFICATE)), b"one")
        switch.down = False
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(seen, [CERTIFICATE, CERTIFICATE, CERTIFICATE])
        self.assertEqual(self.result(storage.load(CERTIFICATE)), b"two")
        self.clock.advance(PROBE_INTERVAL)
        switch.down = True
        self.failureResultOf(storage.lease("orders/example.com", 60), StorageUnavailable)
        switch.down = False
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(len(seen), 3)

    def test_watchSetUpOnce(self) -> None:
        """
        A watch whose set-up is still under way when the database comes
        back is not set up a second time: each change is reported once.
        """
        other, _, _ = self.node("node-2")
        storage, switch, _ = self.node()
        self.result(storage.load(CERTIFICATE))
        seen: list[str] = []
        switch.gated = True
        watching = storage.watch("certificates/", seen.append)
        [setUp] = switch.waiting
        switch.waiting.clear()
        switch.gated = False
        switch.down = True
        self.failureResultOf(storage.lease("orders/example.com", 60), StorageUnavailable)
        switch.down = False
        self.clock.advance(PROBE_INTERVAL)
        setUp()
        self.result(watching)
        self.result(other.store(CERTIFICATE, b"one"))
        self.assertEqual(seen, [CERTIFICATE])

    def test_secondOutageDuringCatchUp(self) -> None:
        """
        When the database is lost again while a node catches up, the sets
        are resumed, once it is back, from the start of the first outage.
        """
        other, _, _ = self.node("node-2")
        self.result(other.load(CERTIFICATE))
        storage, switch, _ = self.node(down=True)
        self.result(storage.watch("certificates/", lambda key: None))
        backs: list[float] = []
        storage.backListeners.append(backs.append)
        switch.down = False
        switch.gated = True
        self.clock.advance(PROBE_INTERVAL)
        switch.release()  # the probe: back
        switch.gated = False
        switch.down = True
        switch.release()  # the watch's set-up fails: lost again
        self.assertEqual(backs, [])
        self.assertEqual(storage.availability.state, LOST)
        switch.down = False
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(backs, [0.0])
