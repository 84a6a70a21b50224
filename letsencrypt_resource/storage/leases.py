"""
The bookkeeping of leases that a store keeps in memory: who holds each
name until when, and the newest fencing token of each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import events
from .interface import ILease, StaleFence


@implementer(ILease)
@attrs.frozen
class Lease:
    """
    An L{ILease} that its store renews and releases.

    @ivar seconds: How long each renewal keeps it.
    """

    name: str
    token: int
    seconds: float
    _renew: Callable[[Lease], Deferred[None]] = attrs.field(repr=False)
    _release: Callable[[Lease], Deferred[None]] = attrs.field(repr=False)

    def renew(self) -> Deferred[None]:
        return self._renew(self)

    def release(self) -> Deferred[None]:
        return self._release(self)


@attrs.define
class _Held:
    token: int
    expires: float
    holder: object


class LeaseTable:
    """
    The live leases of one place and their newest tokens, timed by a
    clock.  It does no locking: its user calls it from one thread at a
    time.
    """

    def __init__(self, clock: IReactorTime):
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._newest: dict[str, int] = {}

    def newest(self, name: str) -> int:
        """
        The newest token given for C{name}, 0 if none.
        """
        return self._newest.get(name, 0)

    def take(self, name: str, seconds: float, holder: object, newest: int = 0) -> int | None:
        """
        Give C{name} to C{holder} for C{seconds}, unless it is held and has
        not expired.

        @param newest: The newest token given before, as persisted.
        @return: The new token, larger than C{newest} and any given before;
            or C{None}.
        """
        now = self._clock.seconds()
        held = self._held.get(name)
        if held is not None and held.expires > now:
            return None
        token = max(newest, self.newest(name)) + 1
        self._newest[name] = token
        self._held[name] = _Held(token, now + seconds, holder)
        return token

    def renew(self, lease: Lease) -> bool:
        """
        Keep C{lease} for its seconds from now.

        @return: Whether it was still the newest holder's: one that expired
            is kept while nobody took it over.
        """
        held = self._held.get(lease.name)
        if held is None or held.token != lease.token:
            return False
        held.expires = self._clock.seconds() + lease.seconds
        return True

    def release(self, lease: Lease) -> None:
        """
        Let C{lease} go, if it is still held.
        """
        held = self._held.get(lease.name)
        if held is not None and held.token == lease.token:
            del self._held[lease.name]

    def releaseAll(self, holder: object) -> None:
        """
        Let every lease of C{holder} go.
        """
        for name, held in list(self._held.items()):
            if held.holder is holder:
                del self._held[name]


def checkFence(key: str, fence: Any, newest: int) -> None:
    """
    Check a write of C{key} under C{fence} (an L{ILease} or C{None})
    against C{newest}, that lease's newest token.

    @raise StaleFence: when the fence is older.
    """
    if fence is not None and fence.token < newest:
        raise StaleFence(key, fence.name, fence.token, newest)


_log = Logger(namespace=__name__)


def reportStale(failure: Failure) -> Failure:
    """
    Log a refused write (event 20189), an errback that passes the failure
    on.
    """
    error = failure.value
    if isinstance(error, StaleFence):
        events.STALE_WRITE_REFUSED.emit(_log, key=error.key, token=error.token, newest=error.newest)
    return failure
