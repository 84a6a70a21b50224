"""
On a real PostgreSQL: a cluster node paused in the middle of a transaction
(C{SIGSTOP}, a frozen virtual machine) has its session ended by the server,
so that the rows it locked do not block the other nodes for as long as the
pause lasts; and the pool's attempts to connect during an outage do not
back off past the node's own probes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from twisted.internet import reactor
from twisted.internet.task import deferLater

from letsencrypt_resource.storage import pgsql, postgres
from letsencrypt_resource.storage.availability import PROBE_INTERVAL
from letsencrypt_resource.storage.interface import StorageError
from letsencrypt_resource.storage.postgres import PostgresStorage

from .helpers.postgres import PostgresCase


class PausedInTransactionTests(PostgresCase):
    """
    One node's transaction stops between two statements.
    """

    async def test_othersNotBlocked(self) -> None:
        """
        While a node's transaction that wrote a key is held open, another
        node's write (every write updates the change counter's row) waits
        until the server ends the paused session
        (L{postgres.IDLE_IN_TRANSACTION_TIMEOUT}), not until its lock time
        limit fails it, and succeeds; the paused node's transaction is
        rolled back, its next statement refused.  (Without the limit, the
        other write fails at the lock time limit.)
        """
        paused = PostgresStorage(self.conninfo, reactor)
        self.addCleanup(paused.close)
        other = PostgresStorage(self.conninfo, reactor)
        self.addCleanup(other.close)
        await paused.store("certificates/a.pem", b"old")
        inside, wake = threading.Event(), threading.Event()

        def pausedWrite(connection: psycopg.Connection[Any]) -> None:
            pgsql.write(connection, "certificates/a.pem", b"paused", None, "paused")
            inside.set()
            wake.wait(30)
            connection.execute("SELECT 1")

        pausing = paused._run("certificates/a.pem", pausedWrite)
        while not inside.is_set():
            await deferLater(reactor, 0.05, lambda: None)
        started = time.monotonic()
        await other.store("certificates/a.pem", b"new")
        waited = time.monotonic() - started
        wake.set()
        await self.assertFailure(pausing, StorageError)
        self.assertLess(waited, postgres.LOCK_TIMEOUT)
        self.assertLess(postgres.IDLE_IN_TRANSACTION_TIMEOUT, postgres.LOCK_TIMEOUT)
        self.assertEqual(await other.load("certificates/a.pem"), b"new")
        self.assertEqual(await paused.load("certificates/a.pem"), b"new")


class ReconnectTests(PostgresCase):
    """
    The pool's attempts to connect while the database is away.
    """

    async def test_backOffBounded(self) -> None:
        """
        The pool gives up connecting after L{postgres.RECONNECT_TIMEOUT}
        seconds, no longer than a probe's interval, so that the next query
        tries at once: its default (5 minutes of attempts 1, 2, 4, 8, 16,
        32 s... apart) let a node in the 60 s outage benchmark find the
        database back 26 s after another node did.
        """
        storage = PostgresStorage(self.conninfo, reactor)
        self.addCleanup(storage.close)
        self.assertEqual(storage._pool.reconnect_timeout, postgres.RECONNECT_TIMEOUT)
        self.assertLessEqual(postgres.RECONNECT_TIMEOUT, PROBE_INTERVAL)
