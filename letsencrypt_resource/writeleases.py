"""
The order leases the write queue keeps: an order's lease, handed over when
its attempt ends, is held until no write made under it is queued, running
or waiting for a retry, and then released.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from .leasing import releaseQuietly
from .managed import ManagedCertificate
from .storage.interface import ILease


class WriteLeases:
    """
    The order leases kept for the writes made under them.
    """

    def __init__(self, waitsForRetry: Callable[[ILease], bool], log: Logger):
        """
        @param waitsForRetry: Whether a failed write made under a lease
            waits to be tried again.
        @param log: Where events go.
        """
        self._waitsForRetry = waitsForRetry
        self._log = log
        # The order leases handed over by their attempts, with their sets,
        # and how many writes made under each have not ended.
        self._held: dict[ILease, ManagedCertificate] = {}
        self._fenced: Counter[ILease] = Counter()

    def writing(self, lease: ILease) -> None:
        """
        A write made under C{lease} is queued.
        """
        self._fenced[lease] += 1

    def written(self, lease: ILease) -> None:
        """
        A write made under C{lease} has ended (it may wait for a retry).
        """
        self._fenced[lease] -= 1
        self._releaseIfDone(lease)

    def releaseAfterWrites(self, certificate: ManagedCertificate) -> None:
        """
        Take over the lease of C{certificate}'s order, now that its attempt
        has ended: it is kept, and renewed before each retry, until no
        write made under it is queued, running or waiting for a retry;
        then it is released and C{certificate.lease} cleared.  A write
        tried again after its attempt keeps the fence it was made under,
        and no other user of the storage orders the set while its
        certificate waits to be stored.
        """
        lease = certificate.lease
        if lease is not None:
            self._held[lease] = certificate
            self._releaseIfDone(lease)

    def takeBack(self, certificate: ManagedCertificate) -> ILease | None:
        """
        The lease C{certificate}'s order still holds (an attempt going on
        once more, or one whose writes L{releaseAfterWrites} keeps it for),
        for a new order to run under: it is no longer released here.
        """
        lease = certificate.lease
        if lease is not None:
            self._held.pop(lease, None)
        return lease

    def letGo(self) -> Deferred[None]:
        """
        Release every lease kept, at stop: writes still waiting for a
        retry are not tried again.
        """
        held, self._held = self._held, {}
        releasing = []
        for lease, certificate in held.items():
            if certificate.lease is lease:
                certificate.lease = None
            releasing.append(releaseQuietly(lease, self._log))
        return gatherResults(releasing).addCallback(lambda _: None)

    def _releaseIfDone(self, lease: ILease) -> None:
        """
        Release C{lease} if it is kept and no write under it is left.
        """
        if lease not in self._held or self._fenced[lease]:
            return
        if self._waitsForRetry(lease):
            return
        certificate = self._held.pop(lease)
        del self._fenced[lease]
        if certificate.lease is lease:
            certificate.lease = None
        releaseQuietly(lease, self._log)
