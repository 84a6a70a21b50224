"""
Stand-ins for the parts around the file work of FTPS transfers: a thread
runner whose work the test runs by hand, a consumer and a producer that
record what they were given and told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class QueuedThreads:
    """
    A thread runner that keeps the work it is given until the test runs it.
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        result: Deferred[Any] = Deferred()
        self.waiting.append((result, function, args))
        return result

    def runNext(self) -> None:
        """
        Run the oldest work given, and fire its Deferred.
        """
        result, function, args = self.waiting.pop(0)
        try:
            value = function(*args)
        except Exception:
            result.errback(Failure())
        else:
            result.callback(value)


class KeepingConsumer:
    """
    A consumer that keeps what it is given.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.producer: Any = None
        self.unregistered = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: bytes) -> None:
        self.chunks.append(data)


class RecordingProducer:
    """
    A producer that counts how it was told to pause, resume and stop.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")
