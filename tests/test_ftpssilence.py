"""
Tests for L{letsencrypt_resource.ftpssilence}: an upload's data
connection is cut once it brought nothing for too long.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from letsencrypt_resource.ftpssilence import UPLOAD_SILENCE, SilenceLimit


class _Producer:
    """
    A data connection: what was asked of it.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class _Consumer:
    """
    What writes the file: what it got.
    """

    def __init__(self) -> None:
        self.producer: Any = None
        self.written: list[bytes] = []

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)


class SilenceLimitTests(SynchronousTestCase):
    """
    Tests for L{SilenceLimit}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cuts: list[None] = []
        self.consumer = _Consumer()
        self.producer = _Producer()
        self.limit = SilenceLimit(self.consumer, self.clock, lambda: self.cuts.append(None))
        self.limit.registerProducer(self.producer, True)

    def test_interfaces(self) -> None:
        """
        It is a consumer for the data connection and a producer for what
        writes the file, which it stands between.
        """
        self.assertTrue(verifyObject(IConsumer, self.limit))
        self.assertTrue(verifyObject(IPushProducer, self.limit))
        self.assertIs(self.consumer.producer, self.limit)
        self.limit.write(b"data")
        self.assertEqual(self.consumer.written, [b"data"])
        self.limit.pauseProducing()
        self.limit.resumeProducing()
        self.limit.stopProducing()
        self.assertEqual(self.producer.calls, ["pause", "resume", "stop"])

    def test_cutWhenSilent(self) -> None:
        """
        The connection is cut L{UPLOAD_SILENCE} seconds after what came
        last, not before.
        """
        self.clock.advance(UPLOAD_SILENCE - 1)
        self.limit.write(b"data")
        self.clock.advance(UPLOAD_SILENCE - 1)
        self.assertEqual(self.cuts, [])
        self.clock.advance(1)
        self.assertEqual(self.cuts, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pausedNotCounted(self) -> None:
        """
        While what writes the file paused the connection (a slow disk),
        the silence is the server's: it does not count.
        """
        self.limit.pauseProducing()
        self.clock.advance(UPLOAD_SILENCE * 5)
        self.assertEqual(self.cuts, [])
        self.limit.resumeProducing()
        self.clock.advance(UPLOAD_SILENCE - 1)
        self.assertEqual(self.cuts, [])
        self.clock.advance(1)
        self.assertEqual(self.cuts, [None])

    def test_endStopsWatching(self) -> None:
        """
        Once the connection unregistered (the upload ended) or was
        stopped, nothing is cut any more and no call is left waiting.
        """
        self.limit.unregisterProducer()
        self.assertIsNone(self.consumer.producer)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        other = SilenceLimit(_Consumer(), self.clock, lambda: self.cuts.append(None), 5)
        other.registerProducer(_Producer(), True)
        other.stopProducing()
        self.clock.advance(UPLOAD_SILENCE * 2)
        self.assertEqual(self.cuts, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
