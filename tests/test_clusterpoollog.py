"""
Tests for L{letsencrypt_resource.storage.poollog}: the connection pool's
own log records become event 20228, at most one a minute, instead of raw
lines on the standard error.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from letsencrypt_resource.storage import poollog
from letsencrypt_resource.storage.poollog import INTERVAL, POOL_LOGGER, PoolLogBridge, bridge
from letsencrypt_resource.storage.postgres import PostgresStorage


def now(f: Callable[[], None]) -> None:
    """
    Run C{f} at once, as C{callFromThread} would in the reactor thread.
    """
    f()


class PoolLogBridgeTests(SynchronousTestCase):
    """
    Tests for L{PoolLogBridge} and L{bridge}.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = Clock()
        logger = logging.getLogger(POOL_LOGGER)
        handlers, propagate = list(logger.handlers), logger.propagate
        self.addCleanup(setattr, logger, "handlers", handlers)
        self.addCleanup(setattr, logger, "propagate", propagate)

    def pool(self) -> list[dict[str, object]]:
        """
        The events 20228 so far.
        """
        return [e for e in self.events if e.get("event_id") == 20228]

    def test_rateLimited(self) -> None:
        """
        The first record is an event at once; those within the next minute
        are counted, and told with the first one after it.
        """
        handler = PoolLogBridge(now, self.clock.seconds)
        logger = logging.Logger("test")
        logger.addHandler(handler)
        logger.warning("error connecting in %r: %s", "pool", "connection refused")
        for _ in range(5):
            self.clock.advance(1)
            logger.warning("error connecting in %r: %s", "pool", "connection refused")
        self.assertEqual(len(self.pool()), 1)
        self.assertEqual(self.pool()[0]["repeated"], 0)
        self.assertEqual(
            self.pool()[0]["details"], "error connecting in 'pool': connection refused"
        )
        self.clock.advance(INTERVAL)
        logger.error("reconnection failed")
        self.assertEqual([e["repeated"] for e in self.pool()], [0, 5])
        self.assertEqual(self.pool()[1]["details"], "reconnection failed")

    def test_heldBackCountTold(self) -> None:
        """
        The count of the records held back is told with the next event,
        however late it comes, and its text says so: held back since the
        last one written, not "in the last minute".
        """
        handler = PoolLogBridge(now, self.clock.seconds)
        logger = logging.Logger("test")
        logger.addHandler(handler)
        for _ in range(3):
            logger.warning("connection refused")
        self.clock.advance(86400)
        logger.warning("connection refused again")
        self.assertEqual(
            formatEvent(self.pool()[1]),
            "20228 The cluster database's connection pool says: connection refused "
            "again (2 more of its messages were held back since the last one "
            "written; one is written every 60 seconds at most).",
        )

    def test_infoIgnored(self) -> None:
        """
        The pool's informational records are not events.
        """
        logger = logging.Logger("test")
        logger.addHandler(PoolLogBridge(now, self.clock.seconds))
        logger.info("connection added")
        self.assertEqual(self.pool(), [])

    def test_bridge(self) -> None:
        """
        Once bridged (once per process), a record of the C{psycopg.pool}
        logger is an event, and no longer reaches the standard error
        through Python's last-resort handler.
        """
        stderr = io.StringIO()
        self.patch(logging, "lastResort", logging.StreamHandler(stderr))
        logger = logging.getLogger(POOL_LOGGER)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, PoolLogBridge)]
        first = bridge(now)
        self.assertIs(bridge(now), first)
        logger.warning("error connecting in 'pool-1': connection refused")
        self.assertEqual(len(self.pool()), 1)
        self.assertEqual(stderr.getvalue(), "")
        self.assertIsInstance(first, poollog.PoolLogBridge)


class StorageBridgeTests(TestCase):
    """
    The bridge set up by a cluster node's storage.
    """

    async def test_bridgedByStorage(self) -> None:
        """
        A cluster node's storage bridges the pool's logger when it is made,
        before any connection is tried.
        """
        logger = logging.getLogger(POOL_LOGGER)
        handlers = list(logger.handlers)
        self.addCleanup(setattr, logger, "handlers", handlers)
        logger.handlers = [h for h in handlers if not isinstance(h, PoolLogBridge)]
        storage = PostgresStorage("host=/nonexistent dbname=none", reactor)
        try:
            self.assertTrue(any(isinstance(h, PoolLogBridge) for h in logger.handlers))
        finally:
            await storage.close()
