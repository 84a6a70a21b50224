"""
Drive a C{twisted.internet.task.Clock} from one delayed call to the next, as
real time would.
"""

from __future__ import annotations

from typing import Any


def advanceThrough(clock: Any, seconds: float) -> None:
    """
    Advance C{clock} by C{seconds}, stopping at every delayed call on the
    way, as real time would.
    """
    end = clock.seconds() + seconds
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= end]
        if not due:
            break
        clock.advance(max(0.0, min(due) - clock.seconds()))
    clock.advance(end - clock.seconds())


def runUntilFired(clock: Any, deferred: Any, limit: float = 365 * 86400.0) -> Any:
    """
    Advance C{clock} (a C{twisted.internet.task.Clock}) from one delayed call
    to the next until C{deferred} has fired, and return its result.

    @raise AssertionError: when nothing is left to run, or C{limit}
        simulated seconds have passed, before C{deferred} fires.
    """
    results: list[Any] = []
    deferred.addBoth(results.append)
    start = clock.seconds()
    while not results:
        calls = clock.getDelayedCalls()
        if not calls or clock.seconds() - start > limit:
            raise AssertionError(f"{deferred!r} did not fire")
        clock.advance(max(0.0, min(c.getTime() for c in calls) - clock.seconds()))
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result
