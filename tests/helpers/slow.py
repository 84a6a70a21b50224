"""
Slow tests, run on demand: the reliability campaigns (twistd killed again
and again, faults against pebble at random moments, a soak on short-lived
certificates, the challenge site fuzzed with 100,000 requests) repeat what
the suite's own tests check once.  They run only when
C{LETSENCRYPT_SLOW_TESTS=1}.
"""

from __future__ import annotations

import os

#: The environment variable that turns the slow tests on (C{1}).
SLOW_VARIABLE = "LETSENCRYPT_SLOW_TESTS"


def slowTests() -> bool:
    """
    @return: whether the slow tests run (L{SLOW_VARIABLE} is C{1}).
    """
    return os.environ.get(SLOW_VARIABLE) == "1"


def skipUnlessSlow() -> str | None:
    """
    @return: the C{skip} attribute of a slow test case: C{None} when the
        slow tests run, otherwise the reason it is skipped.
    """
    if slowTests():
        return None
    return f"a slow test: set {SLOW_VARIABLE}=1 to run it"
