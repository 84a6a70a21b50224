"""
Coroutine functions offered to callers as functions that return a Deferred.

The package writes its asynchronous code as C{async def}; where its API
promises a C{Deferred} (to Twisted code that adds callbacks, cancels, or
tests that read the result at once), L{deferred} wraps the coroutine with
C{Deferred.fromCoroutine}.  Cancelling the Deferred cancels what the
coroutine awaits; to wait for a Deferred without that, see L{whenFired}.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

_P = ParamSpec("_P")
_T = TypeVar("_T")


def deferred(function: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, Deferred[_T]]:
    """
    Make the coroutine function C{function} return a C{Deferred} of its
    result, started at once (as C{inlineCallbacks} did).
    """

    @wraps(function)
    def started(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return Deferred.fromCoroutine(function(*args, **kwargs))

    return started


def whenFired(pending: Deferred[Any]) -> Deferred[None]:
    """
    A Deferred that fires once C{pending} has fired, leaving its result to
    its other callbacks; cancelling it leaves C{pending} alone.
    """
    fired: Deferred[None] = Deferred()

    def passOn(result: object) -> object:
        fired.callback(None)
        return result

    pending.addBoth(passOn)
    return fired
