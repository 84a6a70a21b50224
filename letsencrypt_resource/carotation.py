"""
Which CA a renewal attempt orders from: the resource's own (the first)
until a domain set's failed attempts reach C{fallback_after}, then each
fallback CA in turn for as many, then the first again; the first at the
next renewal after a success, which sets the count back to zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from . import events
from .acmeclient import ACMEClient
from .caoptions import CAOptions
from .config import ResourceOptions
from .connection import AccountConnection
from .managed import ManagedCertificate


def optionsFor(options: ResourceOptions, ca: CAOptions) -> ResourceOptions:
    """
    The resource C{options} with the CA and account settings of C{ca}:
    no C{account_key} (that names an account at the first CA), so the
    account used there is the one stored under its own URL, or a new one;
    the agreement to the terms of service given for C{ca} itself.
    """
    return attrs.evolve(
        options,
        acmeURL=ca.acmeURL,
        agreeTOS=ca.agreeTOS,
        acmeCAFile=ca.acmeCAFile,
        eabKid=ca.eabKid,
        eabHMACKey=ca.eabHMACKey,
        profile=ca.profile,
        accountKeyFile=None,
        upgradedFromURL=None,
        fallbackCANames=(),
        fallbackCAs=(),
    )


def issuingCA(certificate: ManagedCertificate, options: ResourceOptions) -> str:
    """
    The directory URL of the CA that issued the certificate of
    C{certificate}, as L{ManagedCertificate.orderedBy} records it: the
    resource's own, C{options.acmeURL}, when it records none (a
    certificate stored before the CAs were recorded).
    """
    return certificate.orderedBy[1] if certificate.orderedBy else options.acmeURL


@attrs.frozen
class CA:
    """
    One CA to order from: the section configuring it, the resource's
    options with its settings, and the connection to its account.
    """

    label: str
    options: ResourceOptions
    connection: AccountConnection


def chosenIndex(failures: int, after: int, count: int) -> int:
    """
    The position of the CA the next attempt uses, among C{count}, after
    C{failures} failed attempts since the last success, each CA having
    C{after} attempts in turn.
    """
    return (failures // after) % count


class CARotation:
    """
    The CAs of the resource, first its own, and the choice among them for
    each attempt.
    """

    def __init__(
        self,
        options: ResourceOptions,
        primary: AccountConnection,
        httpFor: Callable[[str | None], Any],
        log: Logger,
    ):
        """
        @param primary: The connection to the resource's own CA.
        @param httpFor: The C{twisted.web.iweb.IAgent} trusting the
            C{acme_ca_file} given (C{None}: the system's trust store), for
            the fallback CAs.
        @param log: Where events go.
        """
        self._after = options.fallbackAfter
        self._log = log
        self._cas = [CA(options.section, options, primary)]
        for ca in options.fallbackCAs:
            caOptions = optionsFor(options, ca)
            connection = primary.forCA(caOptions, httpFor(ca.acmeCAFile))
            self._cas.append(CA(ca.section, caOptions, connection))
        self._last: dict[tuple[str, ...], int] = {}

    @property
    def all(self) -> tuple[CA, ...]:
        """
        Every CA, the resource's own first.
        """
        return tuple(self._cas)

    @property
    def primary(self) -> CA:
        """
        The resource's own CA.
        """
        return self._cas[0]

    def choose(self, certificate: ManagedCertificate) -> CA:
        """
        The CA the next attempt for C{certificate} orders from; a change
        from the attempt before is event 20265 (to a fallback) or 20266
        (back to the first).
        """
        index = chosenIndex(certificate.failures, self._after, len(self._cas))
        chosen = self._cas[index]
        previous = self._previous(certificate)
        self._last[certificate.domains] = index
        if previous is not chosen:
            if index:
                events.CA_FALLBACK.emit(
                    self._log,
                    domains=certificate.label,
                    failures=certificate.failures,
                    acme_url=chosen.options.acmeURL,
                    section=chosen.label,
                )
            elif previous is not None:
                events.CA_PRIMARY_AGAIN.emit(
                    self._log,
                    domains=certificate.label,
                    acme_url=chosen.options.acmeURL,
                    previous=previous.options.acmeURL,
                )
        return chosen

    def clientFor(self, certificate: ManagedCertificate) -> Deferred[ACMEClient]:
        """
        The ACME client of the CA that issued the certificate of
        C{certificate} (see L{issuingCA}), or of the resource's own CA when
        that one is no longer configured.
        """
        ca = self.issuerOf(certificate) or self.primary
        return ca.connection.acmeClient()

    def _previous(self, certificate: ManagedCertificate) -> CA | None:
        """
        The CA the attempt before used; before any, the one that issued
        the certificate in service.
        """
        index = self._last.get(certificate.domains)
        if index is not None:
            return self._cas[index]
        return self.issuerOf(certificate)

    def issuerOf(self, certificate: ManagedCertificate) -> CA | None:
        """
        The CA that issued the certificate of C{certificate} (see
        L{issuingCA}); C{None} when it is a CA no longer configured.
        """
        url = issuingCA(certificate, self.primary.options)
        for ca in self._cas:
            if ca.options.acmeURL == url:
                return ca
        return None
