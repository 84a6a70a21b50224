"""
A cluster node's heartbeat (L{NodeHeartbeat}), its records (L{NodeRecord})
and what it hears of the other nodes (L{NodeWatch}), over stores in memory
with an injected clock.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.certificatefacts import CertificateFacts
from letsencrypt_resource.certificates import CertifiedKey, RecordedCertificate
from letsencrypt_resource.heartbeat import CHANGE_DELAY, NodeHeartbeat, served
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.noderecord import (
    BEAT_INTERVAL,
    NODES,
    STALE_AFTER,
    NodeRecord,
    readRecords,
    seenJSON,
    seenKey,
    serialHex,
    servingJSON,
    servingKey,
)
from letsencrypt_resource.nodewatch import NodeWatch
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
        number, is left out, as is a name that cannot name a node (status
        shows them to people: no terminal escapes); a C{serving} record
        that is not one of the node's is taken as serving nothing known,
        and what is neither a serial in upper-case hex nor C{provisional}
        is left out.
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
            seenKey("-j"): seenJSON("-j", 1),
            seenKey("k\x1b[31m"): seenJSON("k\x1b[31m", 1),
            seenKey("l"): seenJSON("l", 1),
            servingKey("l"): servingJSON("l", {"x": "\x1b[2J", "y": "0b", "z": "provisional"}),
        }
        self.assertEqual(
            readRecords(values),
            [
                NodeRecord("f", 1, {}),
                NodeRecord("h", 1, {"y": "0B"}),
                NodeRecord("i", 1, {}),
                NodeRecord("l", 1, {"z": "provisional"}),
            ],
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

    def test_unreadableLeftOut(self) -> None:
        """
        A set whose stored certificate, read unparsed with its recorded
        facts, cannot be read at its first use is left out, as it serves
        none; the others are recorded all the same.
        """
        facts = CertificateFacts("a" * 64, *ISSUED.validity, ISSUED.issuerText, frozenset())
        unreadable, issued = ManagedCertificate(("a.example",)), ManagedCertificate(("b.example",))
        unreadable.current = CertifiedKey(ISSUED.key, RecordedCertificate(b"damaged", facts))
        issued.current = ISSUED
        self.assertEqual(
            served([unreadable, issued]),
            {"b.example": serialHex(ISSUED.certificate.serial_number)},
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


class NodeWatchTests(SynchronousTestCase):
    """
    The other nodes heard from, and those not heard from lately.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.shared = SharedMemory(self.clock)
        self.mine = SwitchedStorage(MemoryStorage(self.shared))
        self.other = MemoryStorage(self.shared)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.watch = NodeWatch("node-1", self.clock)

    def eventsOf(self, eventID: int) -> list[dict[str, Any]]:
        """
        The events logged with C{eventID}.
        """
        return [e for e in self.events if e.get("event_id") == eventID]

    def beat(self, storage: MemoryStorage, node: str) -> None:
        """
        Write the C{seen} record of C{node} in C{storage}, now.
        """
        self.successResultOf(storage.store(seenKey(node), seenJSON(node, 0)))

    def test_staleOnceThenBack(self) -> None:
        """
        A node not heard from for L{STALE_AFTER} seconds, by this node's
        clock, is event 20224 once; heard again, event 20225.  Its
        C{serving} record and this node's own records count for nothing.
        """
        self.successResultOf(Deferred.fromCoroutine(self.watch.start(self.mine)))
        self.beat(self.other, "node-2")
        self.clock.advance(STALE_AFTER)
        self.successResultOf(self.other.store(servingKey("node-2"), servingJSON("node-2", {})))
        self.beat(self.mine.inner, "node-1")
        self.watch.check()
        self.assertEqual(self.eventsOf(20224), [])
        self.clock.advance(1)
        self.watch.check()
        self.watch.check()
        [stale] = self.eventsOf(20224)
        self.assertEqual(
            (stale["node_name"], stale["other"], stale["minutes"]), ("node-1", "node-2", 3)
        )
        self.beat(self.other, "node-2")
        [back] = self.eventsOf(20225)
        self.assertEqual((back["node_name"], back["other"]), ("node-1", "node-2"))
        self.watch.check()
        self.assertEqual(len(self.eventsOf(20224)), 1)

    def test_checkedAfterEachBeat(self) -> None:
        """
        The heartbeat checks after each beat, with no timer of the watch's
        own, and stops the watch when it stops.
        """
        heartbeat = NodeHeartbeat(self.mine, "node-1", lambda: [], self.clock, self.watch)
        heartbeat.startService()
        self.clock.advance(0)
        self.beat(self.other, "node-2")
        for _ in range(4):
            self.clock.advance(BEAT_INTERVAL)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(len(self.eventsOf(20224)), 1)
        self.successResultOf(heartbeat.stopService())
        self.beat(self.other, "node-2")
        self.assertEqual(self.eventsOf(20225), [])

    def test_stoppedBeforeSetUp(self) -> None:
        """
        A watch set up after it was stopped is stopped at once.
        """
        self.mine.slow = True
        starting = Deferred.fromCoroutine(self.watch.start(self.mine))
        self.watch.stop()
        self.mine.slow = False
        self.mine.held.pop()()
        self.successResultOf(starting)
        self.beat(self.other, "node-2")
        self.clock.advance(STALE_AFTER + 1)
        self.watch.check()
        self.assertEqual(self.eventsOf(20224), [])

    def test_watchFails(self) -> None:
        """
        A watch that cannot be set up hears nothing, and fails nothing.
        """
        self.mine.down = True
        self.successResultOf(Deferred.fromCoroutine(self.watch.start(self.mine)))
        self.beat(self.other, "node-2")
        self.clock.advance(STALE_AFTER + 1)
        self.watch.check()
        self.assertEqual(self.eventsOf(20224), [])
