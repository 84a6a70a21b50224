"""
The waits of a domain set after a failed attempt: when the next one may
start, set when an attempt fails and brought back within bounds when a
saved state is taken back.
"""

from __future__ import annotations

from .managed import ManagedCertificate
from .policy import failureDelay


def recordFailure(
    certificate: ManagedCertificate,
    now: float,
    maximum: float,
    retryAfter: float | None,
    error: str,
    switchAt: float | None = None,
) -> float:
    """
    Record a failed attempt for C{certificate} at C{now} and set the next.

    @param maximum: The longest back-off, and the longest Retry-After
        honoured: the check interval.
    @param retryAfter: The wait the CA asked for, if any.
    @param switchAt: When the next attempt orders from another CA, if it
        will (see L{letsencrypt_resource.carotation.switchTime}): that CA
        asked for no wait, so the next attempt is no later than then, or,
        when that time has come, than the back-off alone.
    @return: The wait until the next attempt.
    """
    certificate.failures += 1
    certificate.lastFailure = now
    certificate.lastError = error
    hold = now + min(retryAfter, maximum) if retryAfter is not None else 0.0
    delay = failureDelay(certificate.failures, maximum, certificate.emergencyPace(now))
    latest = max(now + delay, hold)
    if switchAt is not None:
        latest = min(latest, switchAt if switchAt > now else now + delay)
        hold = min(hold, latest)
    certificate.holdUntil = hold
    certificate.nextAttempt = latest
    return latest - now


def capWaits(certificate: ManagedCertificate, now: float, maximum: float) -> bool:
    """
    Bring the saved times of C{certificate} back within the waits this
    product sets: a clock that ran ahead, or a damaged file, may have put
    them anywhere.

    @param maximum: The check interval.
    @return: Whether the next attempt was brought forward.
    """
    certificate.lastFailure = min(certificate.lastFailure, now)
    certificate.holdUntil = min(certificate.holdUntil, now + maximum)
    certificate.ariNextCheck = min(certificate.ariNextCheck, now + maximum)
    certificate.caStreak = certificate.caStreak.capped(now)
    if certificate.failures == 0:
        latest = 0.0
    else:
        delay = failureDelay(certificate.failures, maximum, certificate.emergencyPace(now))
        latest = max(now + delay, certificate.holdUntil)
    capped = certificate.nextAttempt > latest
    certificate.nextAttempt = min(certificate.nextAttempt, latest)
    return capped
