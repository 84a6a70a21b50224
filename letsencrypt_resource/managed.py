"""
One managed domain set: its consumers, its certificate and its renewal
state (saved and taken back as L{letsencrypt_resource.renewalstate} says),
and the renewal, retry and warning times that follow from them (the waits
after a failure are set by L{letsencrypt_resource.retrywaits}).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from .castreak import CAStreak
from .certificates import CertifiedKey
from .domains import domainsLabel
from .interfaces import ICertificateConsumer
from .keys import PrivateKey, PublicKey, publicKeyDigest
from .pendingorder import PendingOrder
from .policy import (
    WARNING_REPEAT,
    RenewalPlan,
    emergencyRetryDelay,
    emergencyTime,
    planRenewal,
    warningLevel,
)
from .renewalstate import dumpState, restoreState
from .storage.interface import ILease

if TYPE_CHECKING:
    from .attempts import Attempt
    from .config import ResourceOptions

#: Why a set with no CA-issued certificate for its names is due at once.
NO_CERTIFICATE = "no CA-issued certificate yet"
NAMES_CHANGED = "its names changed"
#: Why a set whose certificate's key was revoked as compromised is due.
KEY_COMPROMISED = "its key was revoked as compromised"
#: Why a set whose certificate's key, read at its first use, cannot be
#: read is due.
KEY_UNREADABLE = "its stored key cannot be read"


class _Looks:
    """
    What follows from a set's certificate in service alone, worked out at
    the first look at it and kept for the checks, which look at every set:
    for a new certificate, worked out again.  It refers to the certificate
    weakly: a certificate replaced (and its private key) is not kept alive
    until the next look.  One object changed in place, so that the kept
    status rows, which compare the set's fields, see no change in it.

    @ivar at: The certificate looked at, if any.
    @ivar issued: Whether it is a CA-issued one for the set's names.
    @ivar urgent: Its emergency time, once asked for.
    @ivar window: The renewal window that L{planned} is for.
    @ivar pick: The pick in it that L{planned} is for.
    @ivar planned: Its renewal plan, once asked for.
    """

    __slots__ = ("at", "issued", "urgent", "window", "pick", "planned")

    def __init__(self) -> None:
        self.at: weakref.ref[CertifiedKey] | None = None
        self.issued = False
        self.urgent: float | None = None
        self.window: tuple[float, float] | None = None
        self.pick = 0.5
        self.planned: RenewalPlan | None = None

    def urgentOf(self, issued: CertifiedKey) -> float:
        """
        The emergency time of C{issued}, the certificate looked at.
        """
        if self.urgent is None:
            self.urgent = emergencyTime(*issued.validity)
        return self.urgent

    def planOf(
        self, issued: CertifiedKey, window: tuple[float, float] | None, pick: float
    ) -> RenewalPlan:
        """
        The renewal plan of C{issued}, the certificate looked at, for the
        renewal window C{window} and the C{pick} in it.
        """
        # A new window is a new tuple: the same one is the same window.
        if self.planned is None or self.window is not window or self.pick != pick:
            self.window, self.pick = window, pick
            self.planned = planRenewal(*issued.validity, window, pick)
        return self.planned


class ManagedCertificate:
    """
    One domain set: the consumers that share it and its certificate.

    @ivar domains: The names, as the first consumer listed them.
    @ivar consumers: The services that use it.
    @ivar current: The certificate in service, provisional or CA-issued.
    @ivar failures: Failed attempts since the last success.
    @ivar nextAttempt: The earliest time of the next attempt after a failure.
    @ivar lastFailure: When the last failed attempt ended.
    @ivar holdUntil: Until when the CA asked not to try again (Retry-After).
    @ivar lastError: What the last failed attempt said, until a success.
    @ivar ariWindow: The CA's suggested renewal window, if it gave one.
    @ivar ariPick: Where in that window to renew, from 0 to 1.
    @ivar ariNextCheck: When to ask the CA for renewal information again.
    @ivar attempt: The attempt queued or under way, if any.
    @ivar lease: The storage lease its order runs under, if one runs: the
        fence of the writes made for it meanwhile.
    @ivar announced: The last renewal plan announced.
    @ivar pendingOrder: The order under way or cut short, to resume.
    @ivar unstoredOrder: The order whose certificate is in service but not
        stored yet: the order to resume when none is under way, so that a
        restart downloads it again rather than ordering anew (not renewals).
    @ivar compromisedKeys: The L{publicKeyDigest} of each key revoked as
        compromised, never to be used again.
    @ivar orderedBy: The certificate ID, ACME URL and account URL of the
        order of the certificate in service, the one a renewal may replace.
    @ivar deployPending: Whether C{deploy_command} is due to run for it.
    @ivar caStreak: The CA it orders from, and the failures held against
        that CA (see L{letsencrypt_resource.carotation}).
    @ivar warned: The certificate last warned about, the warning level and
        the time of that warning.
    @ivar forcedReason: Why a forced renewal was asked that could not start
        yet (lease held elsewhere, database lost): the set stays due for it
        until renewed, until a new certificate is put in service, or until
        an attempt fails for another cause (as a forced renewal that
        failed, it is then dropped).
    """

    def __init__(self, domains: tuple[str, ...], settings: str = ""):
        """
        @param settings: A fingerprint of the settings that orders depend
            on; retry waits saved under other settings are not kept.
        """
        self.domains = domains
        self.settings = settings
        self.consumers: list[ICertificateConsumer] = []
        self.current: CertifiedKey | None = None
        self.failures = 0
        self.deployPending = False
        self.nextAttempt = 0.0
        self.lastFailure = 0.0
        self.holdUntil = 0.0
        self.lastError: str | None = None
        self.ariWindow: tuple[float, float] | None = None
        self.ariPick = 0.5
        self.ariNextCheck = 0.0
        self.attempt: Attempt | None = None
        self.lease: ILease | None = None
        self.announced: RenewalPlan | None = None
        self.pendingOrder: PendingOrder | None = None
        self.unstoredOrder: PendingOrder | None = None
        self.compromisedKeys: set[str] = set()
        self.orderedBy: tuple[str, str, str] | None = None
        self.caStreak = CAStreak()
        self.warned: tuple[Any, int, float] | None = None
        self.forcedReason: str | None = None
        self._looks = _Looks()

    @property
    def label(self) -> str:
        """
        The names, as events show them.
        """
        return domainsLabel(self.domains)

    @property
    def issued(self) -> CertifiedKey | None:
        """
        The CA-issued certificate in service for exactly these names, if any:
        found once per certificate put in service.
        """
        current = self.current
        if current is None:
            return None
        looks = self._looks
        if looks.at is None or looks.at() is not current:
            # Worked out first: when it raises, nothing of the old one is kept.
            issued = not current.provisional and current.carries(self.domains)
            looks.at, looks.issued = weakref.ref(current), issued
            looks.urgent = looks.planned = None
        return current if looks.issued else None

    def plan(self) -> RenewalPlan:
        """
        When this set needs a new certificate, and why: planned once per
        certificate in service, renewal window and pick in it.
        """
        return self._planFor(self.issued)

    def _planFor(self, issued: CertifiedKey | None) -> RenewalPlan:
        """
        L{plan}, for C{issued}, the L{issued} certificate.
        """
        if issued is None:
            replaced = self.current is not None and not self.current.provisional
            return RenewalPlan(0.0, NAMES_CHANGED if replaced else NO_CERTIFICATE)
        if self.compromisedKeys and not issued.keyMatches:  # read now, it may not parse
            return RenewalPlan(0.0, KEY_UNREADABLE)
        if self.compromisedKeys and self.isCompromised(issued.key):
            return RenewalPlan(0.0, KEY_COMPROMISED)
        if self.forcedReason is not None:
            return RenewalPlan(0.0, self.forcedReason)
        return self._looks.planOf(issued, self.ariWindow, self.ariPick)

    def nextEvent(self, checksARI: bool) -> float:
        """
        When this set next needs attention: its renewal, a retry, or, when
        C{checksARI}, an ARI check.
        """
        issued = self.issued
        retry = self._retryAfter(0.0 if issued is None else self._looks.urgentOf(issued))
        due = max(self._planFor(issued).at, retry)
        if checksARI and issued is not None:
            due = min(due, max(self.ariNextCheck, retry))
        return due

    def markCompromised(self, key: PrivateKey | PublicKey) -> None:
        """
        Record C{key} as compromised, for good.
        """
        self.compromisedKeys.add(publicKeyDigest(key))

    def unmarkCompromised(self, key: PrivateKey | PublicKey) -> None:
        """
        Take back a mark of C{key} as compromised that could not be saved.
        """
        self.compromisedKeys.discard(publicKeyDigest(key))

    def isCompromised(self, key: PrivateKey | PublicKey) -> bool:
        """
        Whether C{key} was recorded as compromised.
        """
        return bool(self.compromisedKeys) and publicKeyDigest(key) in self.compromisedKeys

    def urgentSince(self) -> float:
        """
        Since when clients should not be left on the certificate in
        service: its emergency time, or always (0) when it is not a
        CA-issued one for these names.
        """
        issued = self.issued
        return 0.0 if issued is None else self._looks.urgentOf(issued)

    def emergencyPace(self, now: float) -> float | None:
        """
        The longest wait allowed between attempts at C{now}, when the set is
        urgent then; C{None} when it is not.
        """
        if now < self.urgentSince():
            return None
        issued = self.issued
        if issued is None:
            return emergencyRetryDelay(None, None)
        return emergencyRetryDelay(*issued.validity)

    def retryAt(self) -> float:
        """
        When the next attempt may start after failures: the end of the
        back-off, or the emergency time when the set became urgent after
        the last failure (the emergency threshold wins over a back-off),
        but never before the CA's Retry-After ends.
        """
        return self._retryAfter(self.urgentSince())

    def _retryAfter(self, urgent: float) -> float:
        """
        L{retryAt}, for C{urgent}, the L{urgentSince} time.
        """
        at = self.nextAttempt
        if self.lastFailure < urgent:
            at = min(at, urgent)
        return max(at, self.holdUntil)

    def warnNow(self, now: float) -> bool:
        """
        Whether to warn at C{now} that the certificate in service is close
        to expiry: the first time it is past the warning threshold, each
        time it crosses another (see L{warningLevel}), and at most every
        L{WARNING_REPEAT} otherwise.  A warning given is recorded.
        """
        current = self.current
        if current is None or current.provisional:
            return False
        issued = self.issued
        if issued is not None and now < self._looks.urgentOf(issued):
            # Before its emergency time, kept, where the warnings begin: a
            # time before the float nearest to notAfter - threshold is
            # before the exact one, so warningLevel would say 0 too.
            return False
        level = warningLevel(*current.validity, now)
        if level == 0:
            return False
        if self.warned is not None:
            certificate, lastLevel, lastTime = self.warned
            if (
                certificate is current.certificate
                and level <= lastLevel
                and now < lastTime + WARNING_REPEAT
            ):
                return False
        self.warned = (current.certificate, level, now)
        return True

    def succeeded(self) -> None:
        """
        Forget failures, ARI answers and the order: they were about the old
        certificate.
        """
        self.pendingOrder = None
        self.forcedReason = None
        self.failures = 0
        self.nextAttempt = 0.0
        self.lastFailure = 0.0
        self.holdUntil = 0.0
        self.lastError = None
        self.ariWindow = None
        self.ariNextCheck = 0.0
        self.caStreak = CAStreak()

    def state(self) -> dict[str, Any]:
        """
        The renewal state to save, as JSON-ready data (see L{dumpState}).
        """
        return dumpState(self)

    def restore(self, state: dict[str, Any]) -> None:
        """
        Take back a state L{state} saved (see L{restoreState}).
        """
        restoreState(self, state)


#: What each renewal reason means, for events.
REASONS = {
    "lifetime": "most of its lifetime has passed",
    "ari": "inside the CA's suggested renewal window",
    "emergency": "close to expiry: less than 15 days, or a sixth of its lifetime, left",
    NO_CERTIFICATE: NO_CERTIFICATE,
    NAMES_CHANGED: NAMES_CHANGED,
    "forced": "renewal was asked for",
    "revoked": "its certificate was revoked",
}


def issuingCA(certificate: ManagedCertificate, options: ResourceOptions) -> str:
    """
    The directory URL of the CA that issued the certificate of
    C{certificate}, as L{ManagedCertificate.orderedBy} records it: the
    resource's own, C{options.acmeURL}, when it records none (a
    certificate stored before the CAs were recorded).
    """
    return certificate.orderedBy[1] if certificate.orderedBy else options.acmeURL
