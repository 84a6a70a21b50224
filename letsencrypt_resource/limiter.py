"""
Run a bounded number of asynchronous jobs at once, without recursion.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure


class StartsInTurn(ABC):
    """
    Starts the jobs waiting while places are free, in one loop: a job that
    ends at once frees its place while the loop runs, and the loop starts
    the next one, rather than the ending job's callback in a nested call
    (thousands of those would exhaust the stack).
    """

    _starting = False

    def _start(self) -> None:
        """
        Start the jobs waiting, as many as places are free.
        """
        if self._starting:
            return
        self._starting = True
        try:
            while self._startNext():
                pass
        finally:
            self._starting = False

    @abstractmethod
    def _startNext(self) -> bool:
        """
        Start the next job waiting, or drop it if it was cancelled, when
        one waits and a place is free.

        @return: Whether one did.
        """


class Limiter(StartsInTurn):
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

    def _startNext(self) -> bool:
        if not self._waiting or self._running >= self._limit:
            return False
        entry = self._waiting.popleft()
        job, args, _, result = entry
        if not result.called:
            self._running += 1
            entry[2] = maybeDeferred(job, *args)
            entry[2].addBoth(self._ended, result)
        return True

    def _ended(self, outcome: Any, result: Deferred[Any]) -> None:
        self._running -= 1
        # Its caller's Deferred was called already if it was cancelled
        # while the job's own cancellation took time: the place is free
        # all the same.
        if not result.called:
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)
        self._start()
        return None
