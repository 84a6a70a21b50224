"""
Tests for L{letsencrypt_resource.deployflags}: whether the deploy command
is due is each node's own record, not the shared renewal state, and for
the runs of the command on a node that did not order the certificate.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.deployflags import DUE, SINGLE_NODE, DeployFlags, deployKey, recordsNode
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.renewer import ORDER_LEASE, orderLease
from letsencrypt_resource.storage.memory import MemoryStorage
from letsencrypt_resource.storage.records import Records
from letsencrypt_resource.testing import FakeACMEServer, MemoryStore, advanceThrough
from tests.helpers import selfSigned
from tests.helpers.deployhooks import startedHooks
from tests.helpers.fakeprocess import ProcessReactor
from tests.helpers.resourcecase import REPORTS, ResourceTestCase

#: A program found on C{PATH}: the fake reactor spawns nothing.
PROGRAM = sys.executable


def pending(domains: tuple[str, ...], due: bool) -> ManagedCertificate:
    """
    A set of C{domains} whose run is due or not.
    """
    certificate = ManagedCertificate(domains)
    certificate.deployPending = due
    return certificate


class DeployFlagsTests(SynchronousTestCase):
    """
    L{DeployFlags} on a memory storage two nodes share.
    """

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def flags(self, node: str) -> DeployFlags:
        return DeployFlags(MemoryStorage(self.store.shared), node, Logger())

    def test_perNode(self) -> None:
        """
        A run due on one node is recorded under that node's name: the node
        finds it at its next start, once; another node does not.
        """
        self.successResultOf(self.flags("node-1").save(pending(("a.example",), True)))
        self.assertEqual(self.store.values[deployKey("node-1", ("a.example",))], DUE)
        self.assertEqual(deployKey("node-1", ("a.example",)), "deploys/node-1/a.example")
        restarted, other = self.flags("node-1"), self.flags("node-2")
        for flags in (restarted, other):
            self.successResultOf(flags.load())
        certificate = ManagedCertificate(("a.example",))
        self.assertEqual(
            [restarted.wasDue(certificate), restarted.wasDue(certificate)], [True, False]
        )
        self.assertFalse(other.wasDue(certificate))

    def test_clearedInOrder(self) -> None:
        """
        A run set as due and cleared at once leaves no record: the writes
        of a set are made in the order asked.
        """
        flags = self.flags("node-1")
        certificate = pending(("a.example",), True)
        first = flags.save(certificate)
        certificate.deployPending = False
        second = flags.save(certificate)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertNotIn(deployKey("node-1", ("a.example",)), self.store.values)

    def test_failedWriteRetried(self) -> None:
        """
        A record that cannot be written is event 20229, and is written at
        the next L{DeployFlags.retry}, as the set then says.
        """
        flags = DeployFlags(self.store, "node-1", Logger())
        self.store.failWrites = True
        self.successResultOf(flags.save(pending(("a.example",), True)))
        [text] = [formatEvent(e) for e in self.events if e.get("event_id") == 20229]
        self.assertIn("deploys/node-1/a.example", text)
        flags.retry()
        self.store.failWrites = False
        flags.retry()
        flags.retry()
        self.assertEqual(self.store.values[deployKey("node-1", ("a.example",))], DUE)

    def test_notInSharedState(self) -> None:
        """
        The shared renewal state no longer holds whether the run is due, and
        one saved by an earlier version, or by another node, never clears
        it; one saved as due by an earlier version makes it due.
        """
        certificate = pending(("a.example",), True)
        self.assertNotIn("deploy_pending", certificate.state())
        certificate.restore({"deploy_pending": False})
        self.assertTrue(certificate.deployPending)
        earlier = ManagedCertificate(("a.example",))
        earlier.restore({"deploy_pending": True})
        self.assertTrue(earlier.deployPending)


class RecordedAtStartTests(SynchronousTestCase):
    """
    L{DeployHooks} with the records of this node.
    """

    def test_dueAtStart(self) -> None:
        """
        A run this node recorded as due is asked for again once the
        records are read at the start (L{DeployHooks.readRecorded}) and
        its set is in service (not before its stored certificate is read),
        and not again while it runs.
        """
        store = MemoryStore()
        node = DeployFlags(store, "node-1", Logger())
        self.successResultOf(node.save(pending(("a.example",), True)))
        certificate = ManagedCertificate(("a.example",))
        flags = DeployFlags(store, "node-1", Logger())
        hooks, asked = startedHooks(flags, [certificate])
        self.successResultOf(hooks.readRecorded())
        self.assertEqual(asked, [])
        certificate.current = selfSigned(("a.example",))
        hooks.retry()
        hooks.retry()
        self.assertEqual(asked, [certificate])
        self.assertTrue(certificate.deployPending)


class OtherNodeTests(ResourceTestCase):
    """
    The deploy command on a node for a certificate another node stored.
    """

    def setUp(self) -> None:
        super().setUp()
        self.reactor = ProcessReactor()
        self.reactor.advance(1_800_000_000)
        self.server = FakeACMEServer(self.reactor)

    def test_withoutStoreDirectory(self) -> None:
        """
        Without a store directory, a certificate another node stored runs
        the command on this node too, once it is in service, and records
        the run as due under this node's name until it worked.
        """
        resource = self.start(deployCommand=(PROGRAM, "reload"), nodeName="node-1")
        for process in self.reactor.processes:
            process.exit(0)
        spawned = len(self.reactor.processes)
        other = MemoryStorage(self.store.shared)
        lease = self.successResultOf(other.lease(orderLease(REPORTS), ORDER_LEASE))
        key = generateKey("ecdsa-p256")
        stored = CertifiedKey.fromParts(key, self.server.issue(key.public_key(), REPORTS))
        self.successResultOf(Records(other).saveCertificate(REPORTS, stored, lease))
        advanceThrough(self.reactor, 5)
        managed = resource.managed[frozenset(REPORTS)]
        self.assertEqual(managed.issued.certificate.serial_number, stored.certificate.serial_number)
        [run] = self.reactor.processes[spawned:]
        self.assertEqual(run.env["LETSENCRYPT_DOMAINS"], " ".join(REPORTS))
        self.assertIn(deployKey("node-1", REPORTS), self.store.values)
        run.exit(0)
        self.assertNotIn(deployKey("node-1", REPORTS), self.store.values)


class HeldWrites(MemoryStorage):
    """
    A memory storage whose writes of records wait until released, one at a
    time, counting how many are under way at once.
    """

    def __init__(self, shared: Any) -> None:
        super().__init__(shared)
        self.held: list[Deferred[None]] = []
        self.busy = 0
        self.mostAtOnce = 0

    def _hold(self, write: Callable[[], Deferred[None]]) -> Deferred[None]:
        self.busy += 1
        self.mostAtOnce = max(self.mostAtOnce, self.busy)
        released: Deferred[None] = Deferred()
        self.held.append(released)

        def write_(_: object) -> Deferred[None]:
            self.busy -= 1
            return write()

        return released.addCallback(write_)

    def store(self, key: str, value: bytes, fence: Any = None) -> Deferred[None]:
        return self._hold(lambda: MemoryStorage.store(self, key, value, fence))

    def delete(self, key: str, fence: Any = None) -> Deferred[None]:
        return self._hold(lambda: MemoryStorage.delete(self, key, fence))


class WriteOrderTests(SynchronousTestCase):
    """
    The writes of one record are made one at a time, in the order asked,
    however many are asked while one is under way.
    """

    def test_oneAtATime(self) -> None:
        """
        Three saves of one record, the third while the second is written:
        the writes never overlap (the record could be left as an older save said),
        and the record ends as the set says at the last write.
        """
        store = MemoryStore()
        storage = HeldWrites(store.shared)
        flags = DeployFlags(storage, "node-1", Logger())
        certificate = pending(("a.example",), True)
        saves = [flags.save(certificate)]
        certificate.deployPending = False
        saves.append(flags.save(certificate))
        storage.held.pop(0).callback(None)
        # The second write is under way when the third save comes.
        certificate.deployPending = True
        saves.append(flags.save(certificate))
        while storage.held:
            storage.held.pop(0).callback(None)
        for saved in saves:
            self.successResultOf(saved)
        self.assertEqual(storage.mostAtOnce, 1)
        self.assertEqual(store.values[deployKey("node-1", ("a.example",))], DUE)

    def test_failureDoesNotStopLaterWrites(self) -> None:
        """
        A write that fails with an unexpected error fails its own save; the
        next save of the record is still written.
        """
        store = MemoryStore()
        storage = HeldWrites(store.shared)
        flags = DeployFlags(storage, "node-1", Logger())
        certificate = pending(("a.example",), True)
        first = flags.save(certificate)
        second = flags.save(certificate)
        storage.held.pop(0).errback(RuntimeError("boom"))
        self.failureResultOf(first, RuntimeError)
        storage.held.pop(0).callback(None)
        self.successResultOf(second)
        self.assertEqual(store.values[deployKey("node-1", ("a.example",))], DUE)


class RecordsNodeTests(SynchronousTestCase):
    """
    The node label of the records: the node's name in a cluster only.
    """

    def test_single(self) -> None:
        """
        Without a cluster the label does not follow C{node_name} (the host
        name by default, which changes when a container is made again), so
        a due run is found again after such a change.
        """
        self.assertEqual(recordsNode("host-a", False), SINGLE_NODE)
        self.assertEqual(recordsNode("host-b", False), SINGLE_NODE)

    def test_cluster(self) -> None:
        """
        In a cluster each node records under its own name.
        """
        self.assertEqual(recordsNode("node-1", True), "node-1")
