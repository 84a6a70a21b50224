"""
A cluster node's heartbeat (L{NodeHeartbeat}) and its record
(L{NodeRecord}), over a store in memory with an injected clock.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.heartbeat import (
    BEAT_INTERVAL,
    CHANGE_DELAY,
    NodeHeartbeat,
    served,
)
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.noderecord import (
    NODES,
    NodeRecord,
    readRecords,
    seenJSON,
    seenKey,
    serialHex,
    servingJSON,
    servingKey,
)
from letsencrypt_resource.storage.memory import MemoryStorage, SharedMemory
from tests.helpers import selfSigned
from tests.helpers.outage import SwitchedStorage

#: Made once: keys are slow to make, and every set may serve the same.
ISSUED = selfSigned(("example.com",))


def managed(count: int) -> list[ManagedCertificate]:
    """
    C{count} domain sets, each serving L{ISSUED}.
    """
    sets = [ManagedCertificate((f"s{i}.example.com",)) for i in range(count)]
    for certificate in sets:
        certificate.current = ISSUED
    return sets


class NodeRecordTests(SynchronousTestCase):
    """
    The records' stored form.
    """

    def test_roundTrip(self) -> None:
        """
        A node's C{seen} and C{serving} records read back are its record.
        """
        serving = {"a.example": "0ABC", "b.example": "provisional"}
        values = {
            seenKey("node-1"): seenJSON("node-1", 1234.5),
            servingKey("node-1"): servingJSON("node-1", serving),
            seenKey("node-2"): seenJSON("node-2", 99),
        }
        self.assertEqual(
            readRecords(values),
            [NodeRecord("node-1", 1234.5, serving), NodeRecord("node-2", 99.0, {})],
        )

    def test_refused(self) -> None:
        """
        A node without a C{seen} record that names it, and holding a
        number, is left out; a C{serving} record that is not one of the
        node's is taken as serving nothing known, and a serial that is not
        text is left out.
        """
        values = {
            seenKey("a"): seenJSON("b", 1),
            seenKey("c"): b'{"node": "c", "seen": "1"}',
            seenKey("d"): b"{",
            servingKey("e"): servingJSON("e", {}),
            seenKey("f"): seenJSON("f", 1),
            servingKey("f"): servingJSON("g", {"x": "0A"}),
            seenKey("h"): seenJSON("h", 1),
            servingKey("h"): b'{"node": "h", "serving": {"x": 1, "y": "0B"}}',
            seenKey("i"): seenJSON("i", 1),
            servingKey("i"): b"[]",
        }
        self.assertEqual(
            readRecords(values),
            [NodeRecord("f", 1, {}), NodeRecord("h", 1, {"y": "0B"}), NodeRecord("i", 1, {})],
        )

    def test_served(self) -> None:
        """
        A set serving a CA-issued certificate is recorded with its serial,
        one on a provisional certificate as C{provisional}, and one with
        no certificate yet is left out.
        """
        issued, provisional, none = (
            ManagedCertificate(("a.example",)),
            ManagedCertificate(("b.example", "c.example")),
            ManagedCertificate(("d.example",)),
        )
        issued.current = ISSUED
        provisional.current = attrs.evolve(selfSigned(("b.example",)), provisional=True)
        self.assertEqual(
            served([issued, provisional, none]),
            {
                "a.example": serialHex(ISSUED.certificate.serial_number),
                "b.example, c.example": "provisional",
            },
        )


class HeartbeatTests(SynchronousTestCase):
    """
    When the record is written.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.memory = MemoryStorage(SharedMemory(self.clock))
        self.storage = SwitchedStorage(self.memory)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.sets = managed(3)
        self.heartbeat = NodeHeartbeat(self.storage, "node-1", lambda: self.sets, self.clock)

    def record(self) -> NodeRecord:
        """
        The node's record as stored now.
        """
        keys = self.successResultOf(self.memory.list(NODES))
        [record] = readRecords(self.successResultOf(self.memory.loadMany(keys)))
        return record

    def eventsOf(self, eventID: int) -> list[dict[str, Any]]:
        """
        The events logged with C{eventID}.
        """
        return [e for e in self.events if e.get("event_id") == eventID]

    def test_writtenAtStart(self) -> None:
        """
        The record is written as the heartbeat starts, with the time and
        what each set serves.
        """
        self.heartbeat.startService()
        self.clock.advance(0)
        record = self.record()
        self.assertEqual((record.node, record.seen), ("node-1", self.clock.seconds()))
        self.assertEqual(record.serving, served(self.sets))
        self.assertEqual(len(record.serving), 3)

    def test_oneWritePerMinute(self) -> None:
        """
        The C{serving} record is written at start; then, with nothing
        changing, only the C{seen} record, once a minute: one small write
        whatever the number of sets.
        """
        self.sets = managed(500)
        self.heartbeat.startService()
        self.clock.advance(0)
        self.assertEqual(self.storage.calls, 2)
        for _ in range(10):
            self.clock.advance(BEAT_INTERVAL)
        self.assertEqual(self.storage.calls, 12)
        seen = self.successResultOf(self.memory.load(seenKey("node-1")))
        self.assertLess(len(seen or b""), 100)
        self.assertEqual(len(self.record().serving), 500)
        self.assertEqual(self.record().seen, self.clock.seconds())

    def test_changeWrittenSoon(self) -> None:
        """
        A change of what the node serves is written L{CHANGE_DELAY} seconds
        after it, the changes that come together in one write; the next
        heartbeat is a minute after that write.
        """
        self.heartbeat.startService()
        self.clock.advance(0)
        self.clock.advance(10)
        self.sets = managed(5)
        for _ in range(100):
            self.heartbeat.changed()
        self.clock.advance(CHANGE_DELAY)
        self.assertEqual(self.storage.calls, 4)
        self.assertEqual(len(self.record().serving), 5)
        self.clock.advance(BEAT_INTERVAL - 1)
        self.assertEqual(self.storage.calls, 4)
        self.clock.advance(1)
        self.assertEqual(self.storage.calls, 5)

    def test_changeWhileWriting(self) -> None:
        """
        A change during a write is written by another write after it.
        """
        self.storage.slow = True
        self.heartbeat.startService()
        self.clock.advance(0)
        self.sets = managed(4)
        self.heartbeat.changed()
        self.clock.advance(CHANGE_DELAY)
        self.assertEqual(self.storage.calls, 1)
        self.storage.slow = False
        self.storage.held.pop()()
        self.assertEqual(self.storage.calls, 2)
        self.clock.advance(CHANGE_DELAY)
        self.assertEqual(self.storage.calls, 4)
        self.assertEqual(len(self.record().serving), 4)

    def test_failureReportedOnce(self) -> None:
        """
        Writes that fail are event 20222 once, until one succeeds (event
        20223); the heartbeat goes on meanwhile.
        """
        self.storage.down = True
        self.heartbeat.startService()
        self.clock.advance(0)
        self.clock.advance(BEAT_INTERVAL)
        self.clock.advance(BEAT_INTERVAL)
        self.assertEqual(self.storage.calls, 3)
        [failed] = self.eventsOf(20222)
        self.assertEqual((failed["node_name"], failed["stale_minutes"]), ("node-1", 3))
        self.assertIn("connection refused", failed["details"])
        self.assertEqual(self.eventsOf(20223), [])
        self.storage.down = False
        self.clock.advance(BEAT_INTERVAL)
        self.clock.advance(BEAT_INTERVAL)
        self.assertEqual(len(self.eventsOf(20223)), 1)
        self.assertEqual(len(self.eventsOf(20222)), 1)

    def test_stop(self) -> None:
        """
        Stopping waits for the write under way, then leaves no timer; a
        change after it writes nothing.
        """
        self.storage.slow = True
        self.heartbeat.startService()
        self.clock.advance(0)
        stopped = self.heartbeat.stopService()
        self.assertNoResult(stopped)
        self.storage.slow = False
        self.storage.held.pop()()
        self.successResultOf(stopped)
        self.heartbeat.changed()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.storage.calls, 2)
