"""
Tests for L{letsencrypt_resource.ratedcount}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.ratedcount import RatedCount


class RatedCountTests(SynchronousTestCase):
    """
    L{RatedCount} tells occurrences at most once a period, and loses none.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.rated = RatedCount(self.clock, 60.0)
        self.told: list[tuple[str, int]] = []

    def add(self, name: str) -> None:
        """
        One occurrence, told as C{name}.
        """
        self.rated.add(lambda count: self.told.append((name, count)))

    def test_burst(self) -> None:
        """
        The first occurrence is told at once; those that come within the
        period are told when it ends, by the last one's teller, with their
        count; nothing is left scheduled after.
        """
        for name in "abc":
            self.add(name)
        self.assertEqual(self.told, [("a", 1)])
        self.clock.advance(59)
        self.assertEqual(self.told, [("a", 1)])
        self.clock.advance(1)
        self.assertEqual(self.told, [("a", 1), ("c", 2)])
        self.clock.advance(120)
        self.add("d")
        self.assertEqual(self.told, [("a", 1), ("c", 2), ("d", 1)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flush(self) -> None:
        """
        L{RatedCount.flush} tells what is not told yet at once and cancels
        the call that would have; with nothing to tell, it tells nothing.
        """
        self.add("a")
        self.add("b")
        self.rated.flush()
        self.assertEqual((self.told, self.clock.getDelayedCalls()), ([("a", 1), ("b", 1)], []))
        self.rated.flush()
        self.assertEqual(len(self.told), 2)

    def test_clockSetBack(self) -> None:
        """
        A clock set back holds the count for one period at most.
        """
        self.add("a")
        self.clock.rightNow -= 3600
        self.add("b")
        self.clock.advance(60)
        self.assertEqual(self.told, [("a", 1), ("b", 1)])
