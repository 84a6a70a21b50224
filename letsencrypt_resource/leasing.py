"""
Taking and letting go of storage leases: a lease that arrives after its
request was cancelled is let go, a release that fails is logged and never
fails the work done under the lease, and a write can run under a lease
taken for it alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .storage.interface import ILease, IStorage
from .storage.records import domainsFileName

T = TypeVar("T")

#: How long a lease taken for one write is held, at most.
WRITE_LEASE = 60.0


#: The prefix of the names of the order leases.
ORDER_LEASES = "orders/"


def orderLease(domains: tuple[str, ...]) -> str:
    """
    The name of the storage lease an order of C{domains} runs under, and
    every write of the set's renewal state and certificate.
    """
    return f"{ORDER_LEASES}{domainsFileName(domains)}"


def releaseQuietly(lease: ILease, log: Logger) -> Deferred[None]:
    """
    Let C{lease} go, as best it can: a failure is event 20202, never an
    error of the work done under it (the lease expires anyway).

    @return: A Deferred that fires once the release has ended; it never
        fails.
    """

    def failed(failure: Failure) -> None:
        events.LEASE_RELEASE_FAILED.emit(
            log, name=lease.name, details=str(failure.value) or type(failure.value).__name__
        )

    return maybeDeferred(lease.release).addErrback(failed)


def takeLease(storage: IStorage, name: str, seconds: float, log: Logger) -> Deferred[ILease | None]:
    """
    Ask C{storage} for the lease C{name} for C{seconds}, as L{IStorage.lease}
    does; cancelling the request does not cut it off: a lease granted after
    the cancel is let go as soon as it arrives, so that no other user of
    the storage waits for it to expire.
    """
    cancelled: list[bool] = []
    taking: Deferred[ILease | None] = Deferred(lambda _: cancelled.append(True))

    def arrived(lease: ILease | None) -> None:
        if not cancelled:
            taking.callback(lease)
        elif lease is not None:
            releaseQuietly(lease, log)

    def failed(failure: Failure) -> None:
        if not cancelled:
            taking.errback(failure)

    storage.lease(name, seconds).addCallbacks(arrived, failed)
    return taking


async def underOwnLease(
    storage: IStorage,
    name: str,
    log: Logger,
    write: Callable[[ILease], Awaitable[T]],
) -> tuple[bool, T | None]:
    """
    Run C{write} with the lease C{name}, taken for it alone and let go
    after it, unless another user of C{storage} holds that lease.

    @return: Whether the lease was free, and what C{write} returned.
    """
    lease = await takeLease(storage, name, WRITE_LEASE, log)
    if lease is None:
        return False, None
    try:
        return True, await write(lease)
    finally:
        await releaseQuietly(lease, log)
