"""
A challenge token asked of a node that still counts its database lost,
though the database is back: the node tries the database at once, rather
than answer 404 until its next probe (up to five seconds), which failed the
validations of the orders placed as soon as the database returned.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.storage.availability import LOST, PROBE_INTERVAL, RECHECK_GAP, UP
from letsencrypt_resource.storage.cluster import ClusterStorage
from letsencrypt_resource.storage.interface import StorageUnavailable
from letsencrypt_resource.storage.memory import MemoryStorage, SharedMemory
from letsencrypt_resource.storage.sealing import Sealer, deriveKey
from tests.helpers.outage import SwitchedStorage

TOKEN = "challenges/abc"


class RecheckTests(SynchronousTestCase):
    """
    Reads of challenge tokens while the database counts as lost.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        database = SharedMemory(self.clock)
        self.switch = SwitchedStorage(MemoryStorage(database))
        self.storage = ClusterStorage(
            self.switch,
            MemoryStorage(SharedMemory(self.clock)),
            Sealer(deriveKey(b"k" * 32), "node-1"),
            self.clock,
            "/etc/cluster.key",
            lambda: None,
        )
        self.other = ClusterStorage(
            SwitchedStorage(MemoryStorage(database)),
            MemoryStorage(SharedMemory(self.clock)),
            Sealer(deriveKey(b"k" * 32), "node-2"),
            self.clock,
            "/etc/cluster.key",
            lambda: None,
        )
        self.switch.down = True
        self.failureResultOf(self.storage.lease("orders/a", 60), StorageUnavailable)
        self.assertEqual(self.storage.availability.state, LOST)
        self.switch.down = False
        self.successResultOf(self.other.store(TOKEN, b"key authorization"))

    def test_tokenReadAtOnce(self) -> None:
        """
        A token is read from the database that is back before the next
        probe, and the node counts the database back then.
        """
        self.assertEqual(self.successResultOf(self.storage.load(TOKEN)), b"key authorization")
        self.assertEqual(self.storage.availability.state, UP)

    def test_otherKeysWait(self) -> None:
        """
        Other calls keep failing at once until the next probe finds the
        database back.
        """
        self.failureResultOf(self.storage.lease("orders/a", 60), StorageUnavailable)
        self.clock.advance(PROBE_INTERVAL)
        self.assertIsNotNone(self.successResultOf(self.storage.lease("orders/a", 60)))

    def test_boundedDuringOutage(self) -> None:
        """
        While the database stays away, token reads try it at most once
        every L{RECHECK_GAP} seconds, and the regular probe goes on.
        """
        self.switch.down = True
        self.failureResultOf(self.storage.load(TOKEN), StorageUnavailable)
        calls = self.switch.calls
        for _ in range(5):
            self.failureResultOf(self.storage.load(TOKEN), StorageUnavailable)
        self.assertEqual(self.switch.calls, calls)
        self.clock.advance(RECHECK_GAP)
        self.failureResultOf(self.storage.load(TOKEN), StorageUnavailable)
        self.assertGreater(self.switch.calls, calls)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.switch.down = False
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(self.storage.availability.state, UP)
