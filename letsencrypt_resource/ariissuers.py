"""
Which CA the renewal information checks of each domain set follow: the one
that issued its certificate in service, a fallback CA included, so that a
set gets its checks between renewals whenever that CA offers renewal
information, whether or not the resource's own CA does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from .connection import AccountConnection
from .coroutines import whenFired
from .managed import ManagedCertificate


class IssuerConnections:
    """
    The connection to the CA that issued each set's certificate.
    """

    def __init__(self, connectionOf: Callable[[ManagedCertificate], AccountConnection]):
        """
        @param connectionOf: The connection to the CA that issued a set's
            certificate (see
            L{letsencrypt_resource.carotation.CARotation.connectionOf}); it
            follows from the directory URL the set's order records.
        """
        self._connectionOf = connectionOf

    def nextEvent(self, certificate: ManagedCertificate) -> float:
        """
        When C{certificate} next needs attention, its ARI checks included
        when the CA that issued it is known to offer renewal information.
        """
        return certificate.nextEvent(self._connectionOf(certificate).checksARI)

    def unconnected(
        self, certificates: Iterable[ManagedCertificate]
    ) -> dict[AccountConnection, float]:
        """
        The connections, not connected yet, to the CAs that issued the
        CA-issued certificates of C{certificates}, each once (one look-up
        per directory URL recorded, not per set), with the earliest time one
        of those sets is to ask that CA for renewal information, if it
        offers it (L{ManagedCertificate.ariNextCheck}).
        """
        earliest: dict[str | None, tuple[float, ManagedCertificate]] = {}
        never = (float("inf"), None)
        for certificate in certificates:
            url = certificate.orderedBy[1] if certificate.orderedBy else None
            at = certificate.ariNextCheck
            if at < earliest.get(url, never)[0] and certificate.issued is not None:
                earliest[url] = (at, certificate)
        byConnection: dict[AccountConnection, float] = {}
        for at, certificate in earliest.values():
            connection = self._connectionOf(certificate)
            if not connection.connected:
                byConnection[connection] = min(at, byConnection.get(connection, at))
        return byConnection


class RenewalInfoLearning:
    """
    After a check, connects to each CA that issued CA-issued certificates
    in service, when no order did, to learn whether it offers renewal
    information; if one does, the next wake-up asks it about its
    certificates (found again then; not when none does, as when the CA
    cannot be reached: the wake-up found after the check stands, and a
    pass over every set is spared).

    Only when one of its sets is to ask for renewal information now
    (L{ManagedCertificate.ariNextCheck}, as its saved state says): else
    nothing is loaded or asked of the CA (the modules that speak ACME
    included), and the learning waits until the first such set's time, if
    it comes before the next regular check.

    Each CA is learnt about on its own: one whose connection is under way
    (a CA down or slow) holds back neither the learning planned for
    another nor that other's wake-up once it is learnt.
    """

    def __init__(
        self,
        unconnected: Callable[[], dict[AccountConnection, float]],
        clock: IReactorTime,
        checkInterval: float,
        learnt: Callable[[], object],
    ):
        """
        @param unconnected: The connections not made yet, with when each is
            first needed (see L{IssuerConnections.unconnected}).
        @param checkInterval: Seconds between two regular checks.
        @param learnt: Called once a CA is found to offer renewal
            information (the scheduler looks for its next wake-up again).
        """
        self._unconnected = unconnected
        self._clock = clock
        self._checkInterval = checkInterval
        self._learnt = learnt
        self._pending: dict[AccountConnection, Deferred[Any]] = {}
        self._later: IDelayedCall | None = None

    def learn(self, since: float = float("-inf")) -> None:
        """
        Connect to the CAs whose sets are to ask now, and plan the learning
        for the others (see above); a connection under way is left to end.

        @param since: Connect only to the CAs first needed after this time:
            the learning planned for one CA does not connect again to
            another that was needed already (its connection failed; the
            next check tries it again).
        """
        now = self._clock.seconds()
        unconnected = {
            connection: at
            for connection, at in self._unconnected().items()
            if connection not in self._pending
        }
        later = min((at for at in unconnected.values() if at > now), default=None)
        self._cancelLater()
        if later is not None and later - now < self._checkInterval:
            self._later = self._clock.callLater(later - now, self.learn, now)
        for connection, at in unconnected.items():
            if since < at <= now:
                self._connect(connection)

    def _connect(self, connection: AccountConnection) -> None:
        """
        Connect to one CA, and tell the scheduler if it offers renewal
        information.
        """
        connecting = self._pending[connection] = connection.acmeClient()

        def learnt(result: object) -> None:
            del self._pending[connection]
            if connection.checksARI:
                self._learnt()

        connecting.addCallbacks(learnt, learnt)

    @property
    def connecting(self) -> bool:
        """
        Whether a connection is under way.
        """
        return bool(self._pending)

    def whenLearnt(self) -> Deferred[None]:
        """
        A Deferred that fires once every connection under way (one per CA)
        has ended, whatever it learnt: at once when none is.
        """
        ended = [whenFired(connecting) for connecting in self._pending.values()]
        return gatherResults(ended).addCallback(lambda _: None)

    def _cancelLater(self) -> None:
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None

    def stop(self) -> None:
        """
        Cancel the connections under way and the learning planned.
        """
        for connecting in list(self._pending.values()):
            connecting.cancel()
        self._cancelLater()
