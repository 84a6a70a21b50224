"""
One managed domain set: its consumers, its certificate and its renewal
state, which is saved so that a restart keeps retry waits, ARI windows,
the order under way and the keys revoked as compromised.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.defer import Deferred

from .certificates import CertifiedKey
from .domains import domainsLabel
from .interfaces import ICertificateConsumer
from .issuer import PendingOrder
from .keys import PrivateKey, publicKeyDigest
from .policy import RenewalPlan, planRenewal

#: Why a set with no CA-issued certificate for its names is due at once.
NO_CERTIFICATE = "no CA-issued certificate yet"
NAMES_CHANGED = "its names changed"
#: Why a set whose certificate's key was revoked as compromised is due.
KEY_COMPROMISED = "its key was revoked as compromised"


class ManagedCertificate:
    """
    One domain set: the consumers that share it and its certificate.

    @ivar domains: The names, as the first consumer listed them.
    @ivar consumers: The services that use it.
    @ivar current: The certificate in service, provisional or CA-issued.
    @ivar failures: Failed attempts since the last success.
    @ivar nextAttempt: The earliest time of the next attempt after a failure.
    @ivar lastError: What the last failed attempt said, until a success.
    @ivar ariWindow: The CA's suggested renewal window, if it gave one.
    @ivar ariPick: Where in that window to renew, from 0 to 1.
    @ivar ariNextCheck: When to ask the CA for renewal information again.
    @ivar attempt: The attempt under way, if any.
    @ivar announced: The last renewal plan announced.
    @ivar exportPending: Whether writing it to the store directory failed
        and is to be tried again.
    @ivar pendingOrder: The order under way or cut short, to resume.
    @ivar compromisedKeys: The L{publicKeyDigest} of each key revoked as
        compromised, never to be used again.
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
        self.nextAttempt = 0.0
        self.lastError: str | None = None
        self.ariWindow: tuple[float, float] | None = None
        self.ariPick = 0.5
        self.ariNextCheck = 0.0
        self.attempt: Deferred[None] | None = None
        self.announced: RenewalPlan | None = None
        self.exportPending = False
        self.pendingOrder: PendingOrder | None = None
        self.compromisedKeys: set[str] = set()

    @property
    def label(self) -> str:
        """
        The names, as events show them.
        """
        return domainsLabel(self.domains)

    @property
    def issued(self) -> CertifiedKey | None:
        """
        The CA-issued certificate in service for exactly these names, if any.
        """
        current = self.current
        if current is None or current.provisional:
            return None
        if set(current.domains) != set(self.domains):
            return None
        return current

    def plan(self) -> RenewalPlan:
        """
        When this set needs a new certificate, and why.
        """
        issued = self.issued
        if issued is None:
            reason = NAMES_CHANGED if self.current and not self.current.provisional else NO_CERTIFICATE
            return RenewalPlan(0.0, reason)
        if self.compromisedKeys and self.isCompromised(issued.key):
            return RenewalPlan(0.0, KEY_COMPROMISED)
        return planRenewal(
            issued.notBefore.timestamp(),
            issued.notAfter.timestamp(),
            self.ariWindow,
            self.ariPick,
        )

    def nextEvent(self, checksARI: bool) -> float:
        """
        When this set next needs attention: its renewal, a retry, or, when
        C{checksARI}, an ARI check.
        """
        due = max(self.plan().at, self.nextAttempt)
        if checksARI and self.issued is not None:
            due = min(due, max(self.ariNextCheck, self.nextAttempt))
        return due

    def markCompromised(self, key: PrivateKey) -> None:
        """
        Record C{key} as compromised, for good.
        """
        self.compromisedKeys.add(publicKeyDigest(key))

    def isCompromised(self, key: PrivateKey) -> bool:
        """
        Whether C{key} was recorded as compromised.
        """
        return publicKeyDigest(key) in self.compromisedKeys

    def succeeded(self) -> None:
        """
        Forget failures, ARI answers and the order: they were about the old
        certificate.
        """
        self.pendingOrder = None
        self.failures = 0
        self.nextAttempt = 0.0
        self.lastError = None
        self.ariWindow = None
        self.ariNextCheck = 0.0

    def state(self) -> dict[str, Any]:
        """
        The renewal state to save, as JSON-ready data.
        """
        return {
            "settings": self.settings,
            "failures": self.failures,
            "next_attempt": self.nextAttempt,
            "last_error": self.lastError,
            "ari_window": list(self.ariWindow) if self.ariWindow else None,
            "ari_pick": self.ariPick,
            "ari_next_check": self.ariNextCheck,
            "pending_order": self.pendingOrder.toJSON() if self.pendingOrder else None,
            "compromised_keys": sorted(self.compromisedKeys),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """
        Take back a state L{state} saved; ignore what does not parse, and
        the retry wait and the order under way when the settings changed
        since.  The compromised keys are always kept, whatever else fails.
        """
        self.compromisedKeys |= _digests(state.get("compromised_keys"))
        try:
            failures = int(state.get("failures", 0))
            nextAttempt = float(state.get("next_attempt", 0.0))
            window = state.get("ari_window")
            ariWindow = (float(window[0]), float(window[1])) if window else None
            ariPick = float(state.get("ari_pick", 0.5))
            ariNextCheck = float(state.get("ari_next_check", 0.0))
            lastError = state.get("last_error")
        except (TypeError, ValueError, IndexError, AttributeError):
            return
        if not all(map(math.isfinite, (nextAttempt, ariPick, ariNextCheck))):
            return
        if state.get("settings") == self.settings:
            self.failures = max(failures, 0)
            self.nextAttempt = nextAttempt
            self.pendingOrder = _pendingOrder(state.get("pending_order"))
        self.ariWindow = ariWindow
        self.ariPick = min(max(ariPick, 0.0), 1.0)
        self.ariNextCheck = ariNextCheck
        self.lastError = str(lastError) if lastError is not None else None


def _digests(value: Any) -> set[str]:
    """
    The well-formed key digests of a saved C{compromised_keys} list.
    """
    if not isinstance(value, list):
        return set()
    return {
        digest
        for digest in value
        if isinstance(digest, str)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    }


def _pendingOrder(value: Any) -> PendingOrder | None:
    """
    The saved order under way, if there is one and it parses.
    """
    if value is None:
        return None
    try:
        return PendingOrder.fromJSON(value)
    except ValueError:
        return None
