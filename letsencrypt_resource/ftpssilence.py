"""
A bound on the silence of an upload's data connection: a client whose
connection dropped without a word (a NAT that forgot it, a changed
network) would otherwise keep its file busy, and its session, until the
session's idle timeout; its retries would be refused meanwhile.  An
upload that brings nothing for L{UPLOAD_SILENCE} seconds, while the server
was not holding it back, is cut and its file freed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

#: How long, in seconds, an upload's data connection may bring nothing.
UPLOAD_SILENCE = 60


@implementer(IConsumer, IPushProducer)
class SilenceLimit:
    """
    Stands between an upload's data connection (its producer) and what
    writes the file (its consumer), and calls C{cut} once nothing came for
    C{limit} seconds; the time the consumer paused the connection does not
    count.  It watches from the producer's registration to its
    unregistration.
    """

    def __init__(
        self,
        consumer: Any,
        clock: IReactorTime,
        cut: Callable[[], object],
        limit: float | None = None,
    ):
        """
        @param consumer: What writes the file.
        @param cut: Ends the data connection.
        @param limit: The longest silence, in seconds; L{UPLOAD_SILENCE}
            unless given.
        """
        self._consumer = consumer
        self._clock = clock
        self._cut = cut
        self._limit = UPLOAD_SILENCE if limit is None else limit
        self._producer: Any = None
        self._paused = False
        self._last = 0.0
        self._timer: IDelayedCall | None = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer
        self._last = self._clock.seconds()
        self._timer = self._clock.callLater(self._limit, self._check)
        self._consumer.registerProducer(self, streaming)

    def unregisterProducer(self) -> None:
        self._producer = None
        self._stopWatching()
        self._consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._last = self._clock.seconds()
        self._consumer.write(data)

    def pauseProducing(self) -> None:
        self._paused = True
        if self._producer is not None:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._last = self._clock.seconds()
        if self._producer is not None:
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._stopWatching()
        if self._producer is not None:
            self._producer.stopProducing()

    def _check(self) -> None:
        now = self._clock.seconds()
        if self._paused:
            self._last = now
        left = self._last + self._limit - now
        if left > 0:
            self._timer = self._clock.callLater(left, self._check)
            return
        self._timer = None
        self._cut()

    def _stopWatching(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
