"""
The connection pool's own messages as events.

C{psycopg_pool} tells of its failed connection attempts through the
standard library's C{logging} (the C{psycopg.pool} logger).  Without a
handler, Python writes those records raw to the standard error, which
C{twistd} copies into its log line by line, once per attempt while the
database is down.  L{PoolLogBridge} takes them instead and writes them as
event 20228, at most one a minute, counting those it held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from twisted.logger import Logger

from .. import events

#: The logger C{psycopg_pool} writes to.
POOL_LOGGER = "psycopg.pool"
#: Seconds between two events of the pool's messages.
INTERVAL = 60.0


class PoolLogBridge(logging.Handler):
    """
    A C{logging} handler that turns the pool's warnings and errors into
    event 20228, rate-limited; records come from the pool's threads.
    """

    _log = Logger()

    def __init__(
        self,
        deliver: Callable[[Callable[[], None]], None],
        clock: Callable[[], float] = time.monotonic,
        interval: float = INTERVAL,
    ):
        """
        @param deliver: Runs a callable in the reactor thread (the
            reactor's C{callFromThread}).
        @param clock: Monotonic seconds.
        @param interval: Seconds between two events.
        """
        super().__init__(logging.WARNING)
        self._deliver = deliver
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._last: float | None = None
        self._held = 0

    def emit(self, record: logging.LogRecord) -> None:
        """
        Write C{record} as an event, unless one was written less than
        C{interval} seconds ago: then count it.
        """
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self._interval:
                self._held += 1
                return
            self._last, repeated, self._held = now, self._held, 0
        try:
            details = record.getMessage()
        except Exception:
            details = str(record.msg)
        self._deliver(
            lambda: events.DATABASE_POOL_MESSAGE.emit(
                self._log, details=details, repeated=repeated, seconds=int(self._interval)
            )
        )


def bridge(deliver: Callable[[Callable[[], None]], None]) -> PoolLogBridge:
    """
    Send the C{psycopg.pool} logger's records to a L{PoolLogBridge}, and
    no longer to the standard error; once per process (later calls give
    the bridge already in place).
    """
    logger = logging.getLogger(POOL_LOGGER)
    for handler in logger.handlers:
        if isinstance(handler, PoolLogBridge):
            return handler
    handler = PoolLogBridge(deliver)
    logger.addHandler(handler)
    logger.propagate = False
    return handler
