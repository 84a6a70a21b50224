"""
When a certificate is due for renewal, and how long to wait after a failure.

Pure functions of times in seconds since the epoch.
"""

from __future__ import annotations

#: Renew once this fraction of the lifetime has passed (60 of 90 days).
RENEW_AFTER_FRACTION = 2 / 3
#: The first wait after a failed attempt; each later one doubles.
FIRST_RETRY_DELAY = 60.0


def renewalTime(notBefore: float, notAfter: float) -> float:
    """
    When a certificate valid from C{notBefore} to C{notAfter} is due.
    """
    return notBefore + (notAfter - notBefore) * RENEW_AFTER_FRACTION


def retryDelay(failures: int, maximum: float) -> float:
    """
    The wait before the next attempt after C{failures} failed ones in a row.

    Starts at L{FIRST_RETRY_DELAY} and doubles up to C{maximum}.
    """
    return min(FIRST_RETRY_DELAY * 2 ** max(failures - 1, 0), maximum)
