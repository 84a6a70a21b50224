"""
Occurrences told at most once a period: events any peer can cause (a
connection closed for want of a certificate, a site that cannot be built)
are counted, and the count is told when the period ends, so that a burst
is neither logged line by line nor lost.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class RatedCount:
    """
    Counts occurrences and tells them (L{add}) at most once in C{period}
    seconds: the first at once, those that come sooner when the period
    ends, with how many they were, by the last one's teller.
    """

    def __init__(self, clock: IReactorTime, period: float):
        """
        @param clock: Spaces the tellings.
        @param period: The seconds between two of them.
        """
        self._clock = clock
        self._period = period
        self._count = 0
        self._tell: Callable[[int], object] | None = None
        self._toldAt: float | None = None
        self._later: IDelayedCall | None = None

    def add(self, tell: Callable[[int], object]) -> None:
        """
        One more occurrence, which C{tell} tells given the count of those
        not told yet (the last occurrence's teller is the one called).
        """
        self._count += 1
        self._tell = tell
        if self._later is not None:
            return
        now, toldAt = self._clock.seconds(), self._toldAt
        if toldAt is not None and now - toldAt < self._period:
            # min(): a clock set back does not hold the count for longer.
            self._later = self._clock.callLater(
                min(self._period, toldAt + self._period - now), self.flush
            )
        else:
            self.flush()

    def flush(self) -> None:
        """
        Tell the occurrences not told yet, if any, now: when the period
        ends, or when what they happen to stops.
        """
        later, self._later = self._later, None
        if later is not None and later.active():
            later.cancel()
        tell, self._tell = self._tell, None
        count, self._count = self._count, 0
        if tell is None:
            return
        self._toldAt = self._clock.seconds()
        tell(count)
