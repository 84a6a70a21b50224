"""
Which CA the renewal information checks of each domain set follow: the one
that issued its certificate in service, a fallback CA included, so that a
set gets its checks between renewals whenever that CA offers renewal
information, whether or not the resource's own CA does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .connection import AccountConnection
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
