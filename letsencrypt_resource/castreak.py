"""
A domain set's failed attempts at the CA it orders from: how many of them
count against that CA, and since when, as its renewal state saves them.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

#: The most failed attempts a saved state is taken to count: a larger
#: number, like a count that is not finite, comes from a damaged file.
MOST_FAILURES = 1_000_000


def savedCount(value: Any) -> int:
    """
    The count of failed attempts a saved state gives as C{value}, brought
    within 0 to L{MOST_FAILURES}.

    @raise ValueError: when it is not a finite number.
    @raise TypeError: when it is not a number or text.
    """
    if type(value) is int and 0 <= value <= MOST_FAILURES:
        # What a state is saved with: already within bounds.
        return value
    try:
        return min(max(int(value), 0), MOST_FAILURES)
    except OverflowError:
        raise ValueError(f"{value!r} is not a finite count") from None


def savedText(value: Any) -> bool:
    """
    Whether C{value}, read from a saved state, is text that can be written
    again: a string without a lone surrogate (which JSON may hold, and
    which no URL or file name can).
    """
    if not isinstance(value, str):
        return False
    if value.isascii():
        # No surrogate is ASCII: told without encoding it (every set's
        # URLs at start-up).
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@attrs.frozen
class CAStreak:
    """
    The CA a domain set orders from, and the failed attempts there that
    count against it, since the set last got a certificate or moved to it.

    @ivar url: The directory URL of that CA; C{None}: the resource's own.
    @ivar failures: How many failed attempts counted against it.
    @ivar since: When the first of them ended (0 when none did).
    """

    url: str | None = None
    failures: int = 0
    since: float = 0.0

    def failed(self, now: float) -> CAStreak:
        """
        The streak after one more failed attempt, ended at C{now}, that
        counts against the CA.
        """
        since = self.since if self.failures else now
        return attrs.evolve(self, failures=self.failures + 1, since=since)

    def capped(self, now: float) -> CAStreak:
        """
        The streak with its first failure no later than C{now}: a clock that
        ran ahead, or a damaged file, may have put it in the future, which
        would stop the time of C{fallback_after_time} from running.  The
        streak itself when it is so (as every set's is at start-up): it
        is frozen, and a copy costs each set its time.
        """
        if self.since <= now:
            return self
        return attrs.evolve(self, since=now)

    def toJSON(self) -> dict[str, Any]:
        """
        The streak as JSON-ready data.
        """
        return {"url": self.url, "failures": self.failures, "since": self.since}

    @classmethod
    def fromJSON(cls, value: Any) -> CAStreak:
        """
        The streak L{toJSON} saved; a new one when C{value} does not parse,
        its time is not finite or its URL is not L{savedText}.  The streak
        of no failures at the resource's own CA, every set's at start-up,
        is one object for all (it is frozen).
        """
        if value == _NONE_JSON:
            return _NONE
        try:
            url = value["url"]
            failures = savedCount(value["failures"])
            since = float(value["since"])
        except (TypeError, ValueError, KeyError):
            return cls()
        if (url is not None and not savedText(url)) or not math.isfinite(since):
            return cls()
        return cls(url, failures, max(since, 0.0))


_NONE = CAStreak()
_NONE_JSON = _NONE.toJSON()
