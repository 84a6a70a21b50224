"""
Run a bounded number of asynchronous jobs at once, without recursion.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure


class Limiter:
    """
    Runs at most C{limit} jobs at once, the others in the order they came.

    Unlike C{twisted.internet.defer.DeferredSemaphore}, jobs that end at
    once do not start the next ones recursively, so thousands of them
    cannot exhaust the stack.
    """

    def __init__(self, limit: int):
        self._limit = limit
        self._running = 0
        # Each entry: the job, its arguments, its Deferred once started, and
        # the caller's Deferred.
        self._waiting: deque[list[Any]] = deque()
        self._starting = False

    def run(self, job: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Run C{job(*args)} when a place is free.

        @return: A Deferred with its result.
        """
        entry: list[Any] = [job, args, None]

        def cancel(result: Deferred[Any]) -> None:
            # One still waiting is skipped when its turn comes (its result
            # called): finding it in the queue now would take as long as
            # the queue, for each of thousands cancelled at once.
            running = entry[2]
            if running is not None:
                running.cancel()

        result: Deferred[Any] = Deferred(cancel)
        entry.append(result)
        self._waiting.append(entry)
        self._start()
        return result

    def _start(self) -> None:
        if self._starting:
            return
        self._starting = True
        try:
            while self._waiting and self._running < self._limit:
                entry = self._waiting.popleft()
                job, args, _, result = entry
                if result.called:
                    continue
                self._running += 1
                entry[2] = maybeDeferred(job, *args)
                entry[2].addBoth(self._ended, result)
        finally:
            self._starting = False

    def _ended(self, outcome: Any, result: Deferred[Any]) -> None:
        self._running -= 1
        if result.called:
            return None
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)
        self._start()
        return None
