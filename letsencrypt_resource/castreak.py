"""
A domain set's failed attempts at the CA it orders from: how many of them
count against that CA, and since when, as its renewal state saves them.
"""

from __future__ import annotations

import math
from typing import Any

import attrs


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

    def toJSON(self) -> dict[str, Any]:
        """
        The streak as JSON-ready data.
        """
        return {"url": self.url, "failures": self.failures, "since": self.since}

    @classmethod
    def fromJSON(cls, value: Any) -> CAStreak:
        """
        The streak L{toJSON} saved; a new one when C{value} does not parse.
        """
        try:
            url = value["url"]
            failures = int(value["failures"])
            since = float(value["since"])
        except (TypeError, ValueError, KeyError):
            return cls()
        if (url is not None and not isinstance(url, str)) or not math.isfinite(since):
            return cls()
        return cls(url, max(failures, 0), max(since, 0.0))
