"""
Which CA a renewal attempt orders from: the resource's own (the first)
until the failed attempts of a domain set held against it (see
L{letsencrypt_resource.cafaults.blamesCA}) reach C{fallback_after}, or
C{fallback_after_time} has passed since the first of them (the next
attempt is set no later than then, see L{switchTime}); then each
fallback CA in turn by the same rule, then the first again; the first at
the next renewal after a success, which forgets those failures.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from . import events
from .cafaults import blamesCA
from .caoptions import CAOptions
from .castreak import CAStreak
from .config import ResourceOptions, canonicalURL
from .connection import AccountConnection
from .managed import ManagedCertificate, issuingCA

if TYPE_CHECKING:
    from .acmeclient import ACMEClient

#: How many directory URLs a L{CARotation} keeps the CA of (as many as
#: L{canonicalURL} keeps the form of).
URLS_KEPT = 256


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


@attrs.frozen
class CA:
    """
    One CA to order from: the section configuring it, the resource's
    options with its settings, and the connection to its account.
    """

    label: str
    options: ResourceOptions
    connection: AccountConnection


def movesOn(streak: CAStreak, now: float, after: int, afterTime: float) -> bool:
    """
    Whether an attempt at C{now} orders from the CA after the one of
    C{streak}: the failed attempts held against it reached C{after}, or
    C{afterTime} seconds (unless 0) passed since the first of them ended.
    """
    if not streak.failures:
        return False
    return streak.failures >= after or (0 < afterTime <= now - streak.since)


def switchTime(streak: CAStreak, after: int, afterTime: float) -> float | None:
    """
    From when an attempt orders from the CA after the one of C{streak}
    (see L{movesOn}): the time of its first failure once the count reached
    C{after}, that time and C{afterTime} otherwise; C{None} when no failure
    is held against it, or the count alone decides (C{afterTime} 0).
    """
    if not streak.failures:
        return None
    if streak.failures >= after:
        return streak.since
    return streak.since + afterTime if afterTime > 0 else None


def _why(streak: CAStreak, after: int) -> str:
    """
    Why an attempt moved on from the CA of C{streak}, for event 20265.
    """
    if streak.failures >= after:
        return f"after {streak.failures} failed attempts held against the CA before it"
    return (
        f"fallback_after_time passed since the first of {streak.failures} failed "
        "attempts held against the CA before it"
    )


class CARotation:
    """
    The CAs of the resource, first its own, and the choice among them for
    each attempt.
    """

    def __init__(
        self,
        options: ResourceOptions,
        primary: AccountConnection,
        httpFor: Callable[[str | None, str], Any],
        log: Logger,
    ):
        """
        @param primary: The connection to the resource's own CA.
        @param httpFor: The C{twisted.web.iweb.IAgent} trusting the
            C{acme_ca_file} given (C{None}: the system's trust store), for
            the fallback CA at the directory URL given.
        @param log: Where events go.
        """
        self._after = options.fallbackAfter
        self._afterTime = options.fallbackAfterTime
        self._log = log
        self._cas = [CA(options.section, options, primary)]
        for ca in options.fallbackCAs:
            caOptions = optionsFor(options, ca)
            connection = primary.forCA(caOptions, httpFor(ca.acmeCAFile, ca.acmeURL))
            self._cas.append(CA(ca.section, caOptions, connection))
        self._last: dict[tuple[str, ...], int] = {}
        # The CA of each canonical directory URL configured (the first).
        self._byURL: dict[str, int] = {}
        for index, configured in enumerate(self._cas):
            self._byURL.setdefault(canonicalURL(configured.options.acmeURL), index)
        # The position of the CA at each directory URL asked about, kept
        # for the last URLS_KEPT: a check asks for every set, and the sets
        # share a few URLs, which the stored state (any node of a cluster)
        # writes.
        self._indexAt = functools.lru_cache(maxsize=URLS_KEPT)(self._findIndex)

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

    def choose(self, certificate: ManagedCertificate, now: float) -> CA:
        """
        The CA the next attempt for C{certificate}, at C{now}, orders
        from, recorded in its L{ManagedCertificate.caStreak} (see
        L{movesOn}); a change from the attempt before is event 20265 (to a
        fallback) or 20266 (back to the first).
        """
        streak = certificate.caStreak
        index = self._indexOf(streak.url)
        if index is None:
            # A CA no longer configured: start again from the first.
            index, streak = 0, CAStreak()
        why = "as chosen before a restart"
        if movesOn(streak, now, self._after, self._afterTime):
            why = _why(streak, self._after)
            index = (index + 1) % len(self._cas)
            streak = CAStreak(self._cas[index].options.acmeURL if index else None)
        certificate.caStreak = streak
        chosen = self._cas[index]
        previous = self._previous(certificate)
        self._last[certificate.domains] = index
        if previous is not chosen:
            if index:
                events.CA_FALLBACK.emit(
                    self._log,
                    domains=certificate.label,
                    why=why,
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

    def failed(self, certificate: ManagedCertificate, error: Exception, now: float) -> float | None:
        """
        An attempt for C{certificate} with the CA L{choose} chose failed
        with C{error} at C{now}: held against that CA when L{blamesCA}
        says so, the set being urgent when its CA-issued certificate is
        past its emergency threshold (a set still on a provisional one,
        whose validations may fail until its names point here, is not).

        @return: From when the next attempt orders from another CA (see
            L{switchTime}), if it will; never without fallback CAs.
        """
        urgent = certificate.issued is not None and certificate.emergencyPace(now) is not None
        if blamesCA(error, urgent):
            certificate.caStreak = certificate.caStreak.failed(now)
        if len(self._cas) == 1:
            return None
        return switchTime(certificate.caStreak, self._after, self._afterTime)

    def clientFor(self, certificate: ManagedCertificate) -> Deferred[ACMEClient]:
        """
        The ACME client of the CA that issued the certificate of
        C{certificate} (see L{letsencrypt_resource.managed.issuingCA}), or
        of the resource's own CA when that one is no longer configured.
        """
        ca = self.issuerOf(certificate) or self.primary
        return ca.connection.acmeClient()

    def connectionOf(self, certificate: ManagedCertificate) -> AccountConnection:
        """
        The connection to the CA whose renewal information the certificate
        of C{certificate} follows: the one that issued it (see
        L{issuerOf}), or the resource's own when that one is no longer
        configured: always the resource's own when it has no fallback CA
        (a check asks for every set).
        """
        if len(self._cas) == 1:
            return self._cas[0].connection
        return (self.issuerOf(certificate) or self.primary).connection

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
        L{letsencrypt_resource.managed.issuingCA}); C{None} when it is a CA no longer configured.
        """
        index = self._indexOf(issuingCA(certificate, self.primary.options))
        return None if index is None else self._cas[index]

    def _indexOf(self, url: str | None) -> int | None:
        """
        The position of the CA at the directory URL C{url} (C{None}: the
        first); C{None} when no CA configured has it.
        """
        return 0 if url is None else self._indexAt(url)

    def _findIndex(self, url: str) -> int | None:
        """
        The position of the CA at the directory URL C{url}, compared in its
        L{canonicalURL} form; C{None} when no CA configured has it.
        """
        return self._byURL.get(canonicalURL(url))
