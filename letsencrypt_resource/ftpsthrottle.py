"""
What an FTPS service allows one client before slowing it down: failed
logins answered later and later from an address that keeps failing, and
warnings logged at a bounded rate whatever clients do.

Addresses are counted by L{addressKey}: an IPv6 client usually holds a
whole /64, so its addresses count as one.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from . import events
from .events import EventType

#: The delay, in seconds, of the answer to an address's first failed login;
#: it doubles with each failure.
FIRST_DELAY = 1.0
#: The longest delay of the answer to a failed login, in seconds.
LONGEST_DELAY = 30.0
#: How long, in seconds, an address's failed logins are remembered after
#: its last one.
FAILURES_KEPT = 600.0
#: The most addresses whose failures are remembered; beyond, those
#: remembered longest are forgotten first.
ADDRESSES_KEPT = 10_000
#: The most warnings of one kind logged in a L{WARNINGS_PERIOD}.
WARNINGS_PER_PERIOD = 10
#: The period, in seconds, of L{WARNINGS_PER_PERIOD}.
WARNINGS_PERIOD = 60.0


def addressKey(host: str) -> str:
    """
    What C{host} counts as: an IPv4 address itself (an IPv4-mapped IPv6
    address as its IPv4 address), an IPv6 address its /64 network.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


class LoginThrottle:
    """
    The delay before answering a failed login, by address: L{FIRST_DELAY}
    for the first, doubling with each failure from that address up to
    L{LONGEST_DELAY}, forgotten L{FAILURES_KEPT} seconds after the last.
    """

    def __init__(self, clock: IReactorTime):
        self._clock = clock
        # Address key: failures and the time of the last; in the order of
        # the last failure, oldest first.
        self._failures: dict[str, tuple[int, float]] = {}

    def failed(self, host: str) -> float:
        """
        Count a failed login from C{host}, and give how long to wait before
        answering it.
        """
        now = self._clock.seconds()
        key = addressKey(host)
        count, last = self._failures.pop(key, (0, now))
        if now - last > FAILURES_KEPT:
            count = 0
        count += 1
        self._failures[key] = (count, now)
        if len(self._failures) > ADDRESSES_KEPT:
            del self._failures[next(iter(self._failures))]
        return float(min(LONGEST_DELAY, FIRST_DELAY * 2 ** min(count - 1, 16)))


class WarningBudget:
    """
    Logs at most L{WARNINGS_PER_PERIOD} events of each kind in a period of
    L{WARNINGS_PERIOD} seconds for one service; the events left out are
    counted, and the count is logged (event 20236) with the next event of
    that kind after the period.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, service: str):
        self._clock = clock
        self._service = service
        # Event ID: the start of its period, events logged, events left out.
        self._periods: dict[int, tuple[float, int, int]] = {}

    def emit(self, event: EventType, **fields: object) -> None:
        """
        Log C{event} with C{fields} (and C{service}) unless its kind has
        used up its period's budget.
        """
        now = self._clock.seconds()
        start, logged, leftOut = self._periods.get(event.id, (now, 0, 0))
        if now - start >= WARNINGS_PERIOD:
            if leftOut:
                events.FTPS_WARNINGS_LEFT_OUT.emit(
                    self._log,
                    service=self._service,
                    count=leftOut,
                    event=event.id,
                    seconds=int(now - start),
                )
            start, logged, leftOut = now, 0, 0
        if logged >= WARNINGS_PER_PERIOD:
            self._periods[event.id] = (start, logged, leftOut + 1)
            return
        self._periods[event.id] = (start, logged + 1, leftOut)
        event.emit(self._log, service=self._service, **fields)
