"""
The renewal state of a domain set as the store keeps it: what is saved so
that a restart keeps retry waits, ARI windows, the order under way and the
keys revoked as compromised, and how a saved state is taken back.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from .castreak import CAStreak, savedCount, savedText
from .certificatefacts import DIGEST, CertificateFacts
from .certificates import CertifiedKey, bundleDigest
from .pendingorder import PendingOrder


class RenewalFields(Protocol):
    """
    What the renewal state is made of: the fields of
    L{letsencrypt_resource.managed.ManagedCertificate} of the same names.
    """

    domains: tuple[str, ...]
    settings: str
    failures: int
    nextAttempt: float
    lastFailure: float
    holdUntil: float
    lastError: str | None
    ariWindow: tuple[float, float] | None
    ariPick: float
    ariNextCheck: float
    pendingOrder: PendingOrder | None
    unstoredOrder: PendingOrder | None
    compromisedKeys: set[str]
    orderedBy: tuple[str, str, str] | None
    deployPending: bool
    caStreak: CAStreak

    @property
    def issued(self) -> CertifiedKey | None: ...


#: Characters of a failure's text that a renewal state keeps: a CA's
#: problem detail has no bound of its own, and a state over
#: L{letsencrypt_resource.storage.interface.MAX_VALUE} bytes could not be
#: read back.
MAX_ERROR = 4096


def savedError(text: str | None) -> str | None:
    """
    C{text} as a renewal state keeps it: its first L{MAX_ERROR}
    characters, marked as cut when it is longer.
    """
    if text is None or len(text) <= MAX_ERROR:
        return text
    return f"{text[:MAX_ERROR]} [cut: {len(text)} characters in all]"


def dumpState(fields: RenewalFields) -> dict[str, Any]:
    """
    The renewal state of C{fields} to save, as JSON-ready data; with the
    L{bundleDigest} of the CA-issued certificate in service, which passed
    its checks, as it is stored (C{certificate_digest}): see
    L{storedDigest}; and what the start-up and the status need of that
    certificate, bound to that digest and to the set's names, which it
    carries (C{certificate_facts}): see L{storedRecord}.  Whether the
    deploy command is due is not in it: that is each node's own (see
    L{letsencrypt_resource.deployflags}).
    """
    pending = fields.pendingOrder or fields.unstoredOrder
    issued = fields.issued
    digest = facts = None
    if issued is not None:
        # A certificate read with its facts is the record of their digest.
        digest = issued.recorded.digest if issued.recorded else bundleDigest(issued.toPEM())
        facts = CertificateFacts(
            digest, *issued.validity, issued.issuerText, frozenset(fields.domains)
        ).toJSON()
    return {
        "settings": fields.settings,
        "failures": fields.failures,
        "next_attempt": fields.nextAttempt,
        "last_failure": fields.lastFailure,
        "hold_until": fields.holdUntil,
        "ordered_by": list(fields.orderedBy) if fields.orderedBy else None,
        "last_error": savedError(fields.lastError),
        "ari_window": list(fields.ariWindow) if fields.ariWindow else None,
        "ari_pick": fields.ariPick,
        "ari_next_check": fields.ariNextCheck,
        "pending_order": pending.toJSON() if pending else None,
        "compromised_keys": sorted(fields.compromisedKeys),
        "certificate_digest": digest,
        "ca_streak": fields.caStreak.toJSON(),
        "certificate_facts": facts,
    }


def storedDigest(state: dict[str, Any] | None) -> str | None:
    """
    The digest of the stored certificate a saved C{state} vouches for: the
    certificate record with this L{bundleDigest} is the one that passed its
    checks (its key among them) when it was in service; C{None} when there
    is none, or it is not a digest.
    """
    digest = state.get("certificate_digest") if state else None
    return digest if isinstance(digest, str) and DIGEST.fullmatch(digest) else None


def storedRecord(state: dict[str, Any] | None) -> tuple[str | None, CertificateFacts | None]:
    """
    The L{storedDigest} of a saved C{state}, and what it records of the
    stored certificate it vouches for: C{None} when it records nothing,
    nothing valid (see L{CertificateFacts.fromJSON}), or facts of another
    record than the one it vouches for.  The digest is checked once for
    both.
    """
    digest = storedDigest(state)
    if digest is None:
        return None, None
    assert state is not None
    return digest, CertificateFacts.fromJSON(state.get("certificate_facts"), digest)


def restoreState(fields: RenewalFields, state: dict[str, Any]) -> None:
    """
    Take back into C{fields} a state L{dumpState} saved; ignore what does
    not parse, an ARI window that is not finite or ends before it starts,
    a recorded order whose texts are not L{savedText}, and the retry
    wait, the order under way and the failures held against the CA (see
    L{CAStreak}) when the settings changed since.  The
    compromised keys are always kept, whatever else fails, and so is a
    C{deploy_pending} that versions before per-node records saved (it
    makes the run due, never clears it).  Counts are brought within bounds (see
    L{savedCount}).
    """
    compromised = state.get("compromised_keys")
    if compromised:
        fields.compromisedKeys |= _digests(compromised)
    if state.get("deploy_pending") is True:
        fields.deployPending = True
    try:
        failures = savedCount(state.get("failures", 0))
        nextAttempt = float(state.get("next_attempt", 0.0))
        lastFailure = float(state.get("last_failure", 0.0))
        holdUntil = float(state.get("hold_until", 0.0))
        orderedBy = state.get("ordered_by")
        if orderedBy is not None:
            identifier, acmeURL, account = map(str, orderedBy)
            orderedBy = (identifier, acmeURL, account)
            if not all(map(savedText, orderedBy)):
                orderedBy = None
        window = state.get("ari_window")
        ariWindow = (float(window[0]), float(window[1])) if window else None
        ariPick = float(state.get("ari_pick", 0.5))
        ariNextCheck = float(state.get("ari_next_check", 0.0))
        lastError = state.get("last_error")
    except (TypeError, ValueError, IndexError, AttributeError):
        return
    times = (nextAttempt, lastFailure, holdUntil, ariPick, ariNextCheck)
    if not all(map(math.isfinite, times)):
        return
    if ariWindow is not None and not _validWindow(*ariWindow):
        ariWindow = None
    if state.get("settings") == fields.settings:
        fields.failures = failures
        fields.nextAttempt = nextAttempt
        fields.lastFailure = lastFailure
        fields.holdUntil = holdUntil
        fields.pendingOrder = _pendingOrder(state.get("pending_order"))
        fields.caStreak = CAStreak.fromJSON(state.get("ca_streak"))
    fields.orderedBy = orderedBy
    fields.ariWindow = ariWindow
    fields.ariPick = min(max(ariPick, 0.0), 1.0)
    fields.ariNextCheck = ariNextCheck
    fields.lastError = str(lastError) if lastError is not None else None


def _validWindow(start: float, end: float) -> bool:
    """
    Whether a saved ARI window can be renewed in: finite, its start not
    after its end.
    """
    return math.isfinite(start) and math.isfinite(end) and start <= end


def _digests(value: Any) -> set[str]:
    """
    The well-formed key digests of a saved C{compromised_keys} list.
    """
    if not isinstance(value, list):
        return set()
    return {digest for digest in value if isinstance(digest, str) and DIGEST.fullmatch(digest)}


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
