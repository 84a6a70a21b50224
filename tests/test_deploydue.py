"""
Tests for the deploy command of a node that was down, or still loading,
when another node stored a new certificate: the storing node records the
run as due for every other known node first (L{markOthersDue}), and each
node reads its due runs once its sets are loaded (L{DueAtStart}).
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import deployflags
from letsencrypt_resource.deployflags import (
    DUE,
    FORGET_WITHIN,
    MARK_WITHIN,
    DeployFlags,
    DueAtStart,
    deployKey,
    markOthersDue,
    otherNodes,
)
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.noderecord import seenJSON, seenKey, servingKey
from letsencrypt_resource.storage.interface import ILease, StorageError
from letsencrypt_resource.storage.memory import MemoryStorage
from letsencrypt_resource.storage.records import Records, certificateKey
from letsencrypt_resource.testing import FakeACMEServer, MemoryStore
from letsencrypt_resource.writequeue import WriteQueue
from tests.helpers import selfSigned
from tests.helpers.deployhooks import startedHooks
from tests.helpers.fakeprocess import ProcessReactor
from tests.helpers.resourcecase import FILES, REPORTS, ResourceTestCase
from tests.helpers.statedir import StateDirectory

#: A program found on C{PATH}: the fake reactor spawns nothing.
PROGRAM = sys.executable
#: The domain set of the unit tests.
SET = ("a.example",)


#: When the unit tests' nodes were last seen, and store certificates.
NOW = 1_800_000_000.0


def knownNodes(store: MemoryStore, *nodes: str, seen: float = NOW) -> None:
    """
    Make C{nodes} known to the cluster on C{store}: their C{seen} records,
    written at C{seen}.
    """
    for node in nodes:
        store.values[seenKey(node)] = seenJSON(node, seen)


def marking(storage: Any, node: str) -> Any:
    """
    L{markOthersDue} for C{node} on C{storage}, as at L{NOW}.
    """
    return functools.partial(markOthersDue, storage, node, lambda: NOW)


class WriteLog(MemoryStorage):
    """
    A memory storage that records the keys it stores, in order.
    """

    def __init__(self, shared: Any) -> None:
        super().__init__(shared)
        self.stored: list[str] = []
        self.deleted: list[str] = []

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        self.stored.append(key)
        return super().store(key, value, fence)

    def delete(self, key: str, fence: ILease | None = None) -> Deferred[None]:
        self.deleted.append(key)
        return super().delete(key, fence)


class OtherNodesTests(SynchronousTestCase):
    """
    L{otherNodes} and L{markOthersDue}: the other nodes known, and their
    runs recorded as due before a certificate is stored.
    """

    def test_otherNodes(self) -> None:
        """
        The nodes known are those with a C{seen} record, under a name a
        node may have, but this node.
        """
        keys = [
            seenKey("node-3"),
            servingKey("node-3"),
            seenKey("node-1"),
            servingKey("node-4"),
            "nodes/-bad/seen",
            "nodes/node-5/seen/x",
            seenKey("node-2"),
        ]
        self.assertEqual(otherNodes(keys, "node-1"), ["node-2", "node-3"])

    def test_beforeCertificate(self) -> None:
        """
        With L{markOthersDue} as its hook, a certificate stored is stored
        after the records of its run due on every other known node, and
        none for the node that stores it.
        """
        store = MemoryStore()
        knownNodes(store, "node-1", "node-2", "node-3")
        storage = WriteLog(store.shared)
        records = Records(storage)
        records.beforeCertificate = marking(storage, "node-1")
        self.successResultOf(records.saveCertificate(SET, selfSigned(SET)))
        self.assertEqual(
            storage.stored,
            [deployKey("node-2", SET), deployKey("node-3", SET), certificateKey(SET)],
        )
        self.assertEqual(store.values[deployKey("node-2", SET)], DUE)
        self.assertNotIn(deployKey("node-1", SET), store.values)

    def test_failedMarkFailsStore(self) -> None:
        """
        When a record of another node's run cannot be written, the
        certificate is not stored: its write fails with the
        L{StorageError}, to be tried again.
        """
        store = MemoryStore()
        knownNodes(store, "node-1", "node-2", "node-3")
        store.failWrites = True
        records = Records(store)
        records.beforeCertificate = marking(store, "node-1")
        failure = self.failureResultOf(records.saveCertificate(SET, selfSigned(SET)), StorageError)
        self.assertIn("deploys/node-", str(failure.value))
        self.assertNotIn(certificateKey(SET), store.values)

    def test_alone(self) -> None:
        """
        With no other node known, only the certificate is stored.
        """
        store = MemoryStore()
        knownNodes(store, "node-1")
        storage = WriteLog(store.shared)
        records = Records(storage)
        records.beforeCertificate = marking(storage, "node-1")
        self.successResultOf(records.saveCertificate(SET, selfSigned(SET)))
        self.assertEqual(storage.stored, [certificateKey(SET)])

    def test_goneNodes(self) -> None:
        """
        Only a node seen within L{MARK_WITHIN} gets a record; the record
        of one gone longer is deleted, up to L{FORGET_WITHIN}; one gone
        longer still costs no write.
        """
        store = MemoryStore()
        knownNodes(store, "node-1", "node-2", seen=NOW - MARK_WITHIN)
        knownNodes(store, "node-3", seen=NOW - MARK_WITHIN - 1)
        knownNodes(store, "node-4", seen=NOW - FORGET_WITHIN - 1)
        store.values[deployKey("node-3", SET)] = DUE
        storage = WriteLog(store.shared)
        records = Records(storage)
        records.beforeCertificate = marking(storage, "node-1")
        self.successResultOf(records.saveCertificate(SET, selfSigned(SET)))
        self.assertEqual(storage.stored, [deployKey("node-2", SET), certificateKey(SET)])
        self.assertEqual(storage.deleted, [deployKey("node-3", SET)])
        self.assertEqual(store.keys("deploys/"), [deployKey("node-2", SET)])

    def test_weekOfDowntime(self) -> None:
        """
        L{MARK_WITHIN} is a week: a node down for maintenance still runs
        its command at its start.
        """
        self.assertEqual(MARK_WITHIN, 7 * 86400)


class HeldList(MemoryStorage):
    """
    A memory storage whose lists wait until released.
    """

    def __init__(self, shared: Any) -> None:
        super().__init__(shared)
        self.held: list[Deferred[None]] = []

    def list(self, prefix: str) -> Deferred[list[str]]:
        released: Deferred[None] = Deferred()
        self.held.append(released)
        return released.addCallback(lambda _: MemoryStorage.list(self, prefix))


class HeldDeletes(MemoryStorage):
    """
    A memory storage whose deletes wait until released.
    """

    def __init__(self, shared: Any) -> None:
        super().__init__(shared)
        self.held: list[Deferred[None]] = []

    def delete(self, key: str, fence: ILease | None = None) -> Deferred[None]:
        released: Deferred[None] = Deferred()
        self.held.append(released)
        return released.addCallback(lambda _: MemoryStorage.delete(self, key, fence))


class LoadTests(SynchronousTestCase):
    """
    L{DeployFlags.load} and L{DeployFlags.dropLeft}.
    """

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_ownWriteDuringList(self) -> None:
        """
        A record this node writes while its records are listed (its own
        run for a certificate it put in service as it heard of it) is not
        due again once the list comes: that run clears it.
        """
        self.store.values[deployKey("node-1", SET)] = DUE
        storage = HeldList(self.store.shared)
        flags = DeployFlags(storage, "node-1", Logger())
        loading = flags.load()
        certificate = ManagedCertificate(SET)
        certificate.deployPending = True
        self.successResultOf(flags.save(certificate))
        storage.held.pop().callback(None)
        self.successResultOf(loading)
        self.assertFalse(flags.wasDue(certificate))

    def test_writeUnderWayDuringList(self) -> None:
        """
        A record whose delete, by this node's own run, was asked before
        the list and is not done when it is made, is not due again.
        """
        self.store.values[deployKey("node-1", SET)] = DUE
        storage = HeldDeletes(self.store.shared)
        flags = DeployFlags(storage, "node-1", Logger())
        certificate = ManagedCertificate(SET)
        clearing = flags.save(certificate)
        self.successResultOf(flags.load())
        storage.held.pop().callback(None)
        self.successResultOf(clearing)
        self.assertFalse(flags.wasDue(certificate))
        self.assertFalse(flags.waiting)

    def test_dropLeftOneAtATime(self) -> None:
        """
        The records left are deleted one at a time, each once the one
        before it is.
        """
        keys = [deployKey("node-1", (f"s{i}.example",)) for i in range(3)]
        for key in keys:
            self.store.values[key] = DUE
        storage = HeldDeletes(self.store.shared)
        flags = DeployFlags(storage, "node-1", Logger())
        self.successResultOf(flags.load())
        flags.dropLeft()
        for left in range(3, 0, -1):
            self.assertEqual(len(storage.held), 1)
            self.assertEqual(len(self.store.keys("deploys/")), left)
            storage.held.pop().callback(None)
        self.assertEqual(storage.held, [])
        self.assertEqual(self.store.keys("deploys/"), [])

    def test_dropLeft(self) -> None:
        """
        The records read that no set asked for (sets this node does not
        manage) are deleted; those of sets asked for stay until their
        runs clear them; another node's are left alone.
        """
        gone = ("gone.example",)
        for key in (deployKey("node-1", SET), deployKey("node-1", gone), deployKey("node-2", gone)):
            self.store.values[key] = DUE
        flags = DeployFlags(self.store, "node-1", Logger())
        self.successResultOf(flags.load())
        self.assertTrue(flags.wasDue(ManagedCertificate(SET)))
        flags.dropLeft()
        self.assertEqual(
            self.store.keys("deploys/"), [deployKey("node-1", SET), deployKey("node-2", gone)]
        )

    def test_dropLeftFails(self) -> None:
        """
        A record left that cannot be deleted is event 20229.
        Those after it are not tried: they are read again at the next
        start (when the storage was closed, one event, not one each).
        """
        self.store.values[deployKey("node-1", SET)] = DUE
        self.store.values[deployKey("node-1", ("b.example",))] = DUE
        flags = DeployFlags(self.store, "node-1", Logger())
        self.successResultOf(flags.load())
        tried: list[str] = []
        self.patch(self.store, "delete", lambda key, fence=None: _failed(key, tried))
        flags.dropLeft()
        [text] = [formatEvent(e) for e in self.events if e.get("event_id") == 20229]
        self.assertIn(deployKey("node-1", SET), text)
        self.assertEqual(tried, [deployKey("node-1", SET)])


def _failed(key: str, tried: list[str]) -> Deferred[None]:
    """
    A delete of C{key}, noted in C{tried}, that failed.
    """
    tried.append(key)
    failing: Deferred[None] = Deferred()
    failing.errback(StorageError(key, "cannot be written: disk full"))
    return failing


class RetryCostTests(SynchronousTestCase):
    """
    L{DeployHooks.retry}, at each check, with no run read as due.
    """

    def test_noKeyPerSet(self) -> None:
        """
        Once every run read as due was asked for, a check makes no key for
        each set in service (at 10,000 sets that was 12 ms a check); a run
        read as due is still asked for.
        """
        made: list[tuple[str, ...]] = []
        real = deployflags.deployKey

        def counted(node: str, domains: tuple[str, ...]) -> str:
            made.append(domains)
            return real(node, domains)

        store = MemoryStore()
        store.values[deployKey("node-1", SET)] = DUE
        flags = DeployFlags(store, "node-1", Logger())
        certificates = [ManagedCertificate((f"s{i}.example",)) for i in range(3)]
        certificates.append(ManagedCertificate(SET))
        hooks, asked = startedHooks(flags, certificates)
        self.successResultOf(hooks.readRecorded())
        self.assertTrue(certificates[-1].deployPending)
        self.patch(deployflags, "deployKey", counted)
        hooks.retry()
        self.assertEqual(made, [])


class DueAtStartTests(SynchronousTestCase):
    """
    L{DueAtStart}: the runs due are read once the sets are loaded.
    """

    def test_afterLoad(self) -> None:
        """
        The runs due are read once the sets are loaded, not before.
        """
        loaded: Deferred[None] = Deferred()
        reads: list[None] = []
        service = DueAtStart(lambda: loaded, lambda: reads.append(None), Logger())
        service.startService()
        self.assertEqual(reads, [])
        loaded.callback(None)
        self.assertEqual(reads, [None])

    def test_stopped(self) -> None:
        """
        Stopped before the sets are loaded, it reads nothing and logs no
        error.
        """
        loaded: Deferred[None] = Deferred()
        reads: list[None] = []
        service = DueAtStart(lambda: loaded, lambda: reads.append(None), Logger())
        service.startService()
        service.stopService()
        self.assertEqual(reads, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_each(self) -> None:
        """
        Each start reads them again, after that start's load.
        """
        reads: list[None] = []
        service = DueAtStart(lambda: succeed(None), lambda: reads.append(None), Logger())
        service.startService()
        service.stopService()
        service.startService()
        self.assertEqual(reads, [None, None])


class DownNodeTests(ResourceTestCase):
    """
    Two nodes on one memory storage, one down while the other stores new
    certificates; no store directory (the command runs once stored).
    """

    def setUp(self) -> None:
        super().setUp()
        self.reactor = ProcessReactor()
        self.reactor.advance(1_800_000_000)
        self.reactor.exitAtOnce = 0
        self.server = FakeACMEServer(self.reactor)

    def ran(self) -> list[tuple[str, str]]:
        """
        The runs of the command so far: the node and the domains of each.
        """
        return [(p.args[-1], p.env["LETSENCRYPT_DOMAINS"]) for p in self.reactor.processes]

    def test_downNodeRunsAtStart(self) -> None:
        """
        A node known to the cluster but down when another stores new
        certificates runs its command once for each at its start; the
        node that stored them runs it once for each, not again; no record
        of a run due is left.
        """
        self.server = FakeACMEServer(self.reactor)
        knownNodes(self.store, "node-2", seen=self.reactor.seconds())
        first = self.start(deployCommand=(PROGRAM, "node-1"), nodeName="node-1")
        sets = sorted(" ".join(s) for s in (FILES, REPORTS))
        self.assertEqual(sorted(self.ran()), [("node-1", s) for s in sets])
        self.assertEqual(
            self.store.keys("deploys/"), [deployKey("node-2", FILES), deployKey("node-2", REPORTS)]
        )
        first.stopService()
        before = len(self.ran())
        self.start(deployCommand=(PROGRAM, "node-2"), nodeName="node-2")
        self.assertEqual(sorted(self.ran()[before:]), [("node-2", s) for s in sets])
        self.assertEqual(self.store.keys("deploys/"), [])

    def renewedForNode2(self) -> list[tuple[str, ...]]:
        """
        node-1, with a command, stores new certificates while node-2, known
        to the cluster, is down.

        @return: The sets whose runs are due on node-2.
        """
        knownNodes(self.store, "node-2", seen=self.reactor.seconds())
        self.start(deployCommand=(PROGRAM, "node-1"), nodeName="node-1").stopService()
        due = [deployKey("node-2", FILES), deployKey("node-2", REPORTS)]
        self.assertEqual(self.store.keys("deploys/"), due)
        return [FILES, REPORTS]

    def test_noCommandExported(self) -> None:
        """
        On a node with no command and a store directory, a run another node
        recorded as due is settled once the certificate is exported: its
        record is deleted, and neither a check nor the next start exports
        it again (a start exports each set once, as always).
        """
        sets = self.renewedForNode2()
        exports: list[tuple[str, ...]] = []
        real = WriteQueue.export

        def export(queue: WriteQueue, directory: str, certificate: Any, *args: Any) -> Any:
            exports.append(certificate.domains)
            return real(queue, directory, certificate, *args)

        self.patch(WriteQueue, "export", export)
        folder = self.mktemp()
        node2 = self.start(nodeName="node-2", storeDirectory=folder)
        self.assertEqual(self.store.keys("deploys/"), [])
        self.assertFalse(any(node2.managed[frozenset(s)].deployPending for s in sets))
        exported = len(exports)
        self.reactor.advance(86400)
        self.assertEqual(len(exports), exported)
        node2.stopService()
        self.start(nodeName="node-2", storeDirectory=folder)
        # Only the export of each set that every start makes.
        self.assertEqual(sorted(exports[exported:]), sorted(sets))
        self.assertEqual(self.store.keys("deploys/"), [])

    def test_noCommandNoExport(self) -> None:
        """
        On a node with no command and no store directory, a run another
        node recorded as due has nothing to do: its record is deleted at
        the start.
        """
        sets = self.renewedForNode2()
        node2 = self.start(nodeName="node-2")
        self.assertEqual(self.store.keys("deploys/"), [])
        self.assertFalse(any(node2.managed[frozenset(s)].deployPending for s in sets))

    def test_singleNode(self) -> None:
        """
        On a state directory of its own, a server records no run for
        other nodes, whatever node records its directory holds.
        """
        self.server = FakeACMEServer(self.reactor)
        state = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(state, "nodes", "node-2"))
        with open(os.path.join(state, "nodes", "node-2", "seen"), "wb") as stream:
            stream.write(seenJSON("node-2", 1.0))
        self.store = StateDirectory(state)
        resource = self.start(deployCommand=(PROGRAM, "node-1"), nodeName="node-1")
        self.assertIsNone(resource.records.beforeCertificate)
        self.assertEqual(len(self.ran()), 2)
        self.assertFalse(os.path.exists(os.path.join(state, "deploys", "node-2")))
