"""
Tests for L{letsencrypt_resource.ftpssilence}: an upload's data
connection is cut once it brought nothing for too long.
"""

from __future__ import annotations

from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from letsencrypt_resource.ftpssilence import UPLOAD_SILENCE, SilenceLimit
from tests.helpers.transferfakes import KeepingConsumer, RecordingProducer


class SilenceLimitTests(SynchronousTestCase):
    """
    Tests for L{SilenceLimit}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cuts: list[None] = []
        self.consumer = KeepingConsumer()
        self.producer = RecordingProducer()
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
        self.assertEqual(self.consumer.chunks, [b"data"])
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
        self.assertTrue(self.consumer.unregistered)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        other = SilenceLimit(KeepingConsumer(), self.clock, lambda: self.cuts.append(None), 5)
        other.registerProducer(RecordingProducer(), True)
        other.stopProducing()
        self.clock.advance(UPLOAD_SILENCE * 2)
        self.assertEqual(self.cuts, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
