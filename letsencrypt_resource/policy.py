"""
When a certificate is renewed, when its expiry is warned about, and how long
to wait after a failure.

Pure functions of times in seconds since the epoch, the same for every
lifetime, from 6-day to 90-day certificates and beyond:

  - Without renewal information from the CA (ARI), a certificate is due
    once two thirds of its lifetime have passed (60 days of 90); under 10
    days of lifetime, once half of it has passed (3 days of 6).
  - With an ARI window, it is due at a random point inside the window, the
    point picked once per window.
  - Whatever ARI says, it is due at once when less than 15 days are left,
    or less than a sixth of the lifetime for certificates shorter than 90
    days (the emergency threshold).
  - An expiry warning is due when a certificate in service is past that
    same threshold and its renewal is not starting, so a healthy
    certificate of any lifetime never raises one.
  - After a failure, the next attempt comes after a minute, then after
    waits that double, up to the regular check interval, or later when the
    CA said so with Retry-After (up to the check interval too).
  - A set that clients should not be left on (provisional, or past the
    emergency threshold) is tried again at least at the emergency pace: an
    hour at most, less for short lifetimes.
  - Expiry warnings repeat at most every six hours per certificate, and
    each time the time left crosses a threshold (7, 3 and 1 days, a
    twelfth and a twenty-fourth of the lifetime, expiry).
"""

from __future__ import annotations

import math

import attrs

DAY = 86400.0

#: Below this lifetime, renew at half of it instead of two thirds.
SHORT_LIFETIME = 10 * DAY
#: Renew at once, and warn, when less than this is left...
WARNING_TIME = 15 * DAY
#: ...or, for short lifetimes, less than this fraction of the lifetime.
WARNING_FRACTION = 1 / 6
#: The first wait after a failed attempt; each later one doubles.
FIRST_RETRY_DELAY = 60.0
#: The longest wait between attempts for a set that clients should not be
#: left on: provisional, or past its emergency threshold.
EMERGENCY_RETRY_DELAY = 3600.0
#: The shortest time between two expiry warnings for one certificate, when
#: no threshold was crossed in between.
WARNING_REPEAT = 6 * 3600.0
#: Times left at which an expiry warning is repeated at once.
WARNING_TIMES = (7 * DAY, 3 * DAY, 1 * DAY, 0.0)
#: Fractions of the lifetime left at which it is repeated at once.
WARNING_FRACTIONS = (1 / 12, 1 / 24)


@attrs.frozen
class RenewalPlan:
    """
    When a certificate is due, and why.

    @ivar at: The time it is due.
    @ivar reason: C{"lifetime"}, C{"ari"} or C{"emergency"}.
    """

    at: float
    reason: str


def _lifetimeRenewalTime(notBefore: float, notAfter: float) -> float:
    """
    When a certificate is due when the CA gives no renewal information.
    """
    lifetime = notAfter - notBefore
    fraction = 1 / 2 if lifetime < SHORT_LIFETIME else 2 / 3
    return notBefore + lifetime * fraction


def emergencyTime(notBefore: float, notAfter: float) -> float:
    """
    The time after which a certificate is renewed at once, whatever ARI
    says: where expiry warnings begin.
    """
    return notAfter - warningThreshold(notBefore, notAfter)


def planRenewal(
    notBefore: float,
    notAfter: float,
    ariWindow: tuple[float, float] | None = None,
    pick: float = 0.5,
) -> RenewalPlan:
    """
    Decide when a certificate valid from C{notBefore} to C{notAfter} is due.

    @param ariWindow: The start and end of the CA's suggested window.
    @param pick: Where in the window to renew, from 0 (its start) to 1 (its
        end); chosen at random once per window by the caller.  A window or
        pick that gives no finite time is ignored: the lifetime decides.
    """
    at, reason = _lifetimeRenewalTime(notBefore, notAfter), "lifetime"
    if ariWindow is not None:
        start, end = ariWindow
        picked = start + (max(end, start) - start) * pick
        if math.isfinite(picked):
            at, reason = picked, "ari"
    emergency = emergencyTime(notBefore, notAfter)
    if at > emergency:
        at, reason = emergency, "emergency"
    # One plan made: each is a frozen object, dearer than the arithmetic.
    return RenewalPlan(at, reason)


def warningThreshold(notBefore: float, notAfter: float) -> float:
    """
    How long before expiry a certificate in service raises a warning.
    """
    return min(WARNING_TIME, (notAfter - notBefore) * WARNING_FRACTION)


def shouldWarn(notBefore: float, notAfter: float, now: float) -> bool:
    """
    Whether a certificate in service at C{now} is close enough to expiry
    to warn about.
    """
    return notAfter - now < warningThreshold(notBefore, notAfter)


def retryDelay(failures: int, maximum: float) -> float:
    """
    The wait before the next attempt after C{failures} failed ones in a row.

    Starts at L{FIRST_RETRY_DELAY} and doubles up to C{maximum}.
    """
    return min(FIRST_RETRY_DELAY * 2 ** min(max(failures - 1, 0), 40), maximum)


def failureDelay(failures: int, maximum: float, emergencyPace: float | None) -> float:
    """
    The wait after C{failures} failed attempts in a row: L{retryDelay}, cut
    to C{emergencyPace} when the set is urgent (see L{emergencyRetryDelay}).
    """
    delay = retryDelay(failures, maximum)
    return delay if emergencyPace is None else min(delay, emergencyPace)


def emergencyRetryDelay(notBefore: float | None, notAfter: float | None) -> float:
    """
    The longest wait between two attempts for a set that clients should
    not be left on: for a provisional certificate (no times given),
    L{EMERGENCY_RETRY_DELAY}; for one past its emergency threshold, that or
    a quarter of the threshold, whichever is shorter, so that a short-lived
    certificate gets several attempts before it expires.
    """
    if notBefore is None or notAfter is None:
        return EMERGENCY_RETRY_DELAY
    quarter = warningThreshold(notBefore, notAfter) / 4
    return min(EMERGENCY_RETRY_DELAY, max(quarter, 1.0))


def warningLevel(notBefore: float, notAfter: float, now: float) -> int:
    """
    How many warning thresholds a certificate in service at C{now} has
    crossed: 0 before L{warningThreshold}, then one more at each of
    L{WARNING_TIMES} and L{WARNING_FRACTIONS} of the lifetime below it.
    """
    if not shouldWarn(notBefore, notAfter, now):
        return 0
    left = notAfter - now
    threshold = warningThreshold(notBefore, notAfter)
    lifetime = notAfter - notBefore
    marks = set(WARNING_TIMES) | {lifetime * f for f in WARNING_FRACTIONS}
    return 1 + sum(1 for mark in marks if mark < threshold and left < mark)
