"""
On a real PostgreSQL: a cluster node paused in the middle of a transaction
(C{SIGSTOP}, a frozen virtual machine) has its session ended by the server,
so that the rows it locked do not block the other nodes for as long as the
pause lasts; and a node reaches the database soon after an outage ends,
however long it lasted.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from letsencrypt_resource.storage import pgsql, postgres
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
    The database stopped for a while, then started again.
    """

    async def test_backSoon(self) -> None:
        """
        After an outage of 20 s, a node's first query once the database is
        back, and at most L{postgres.RECONNECT_TIMEOUT} seconds later,
        succeeds: the pool's back-off between attempts to connect (1, 2,
        4, 8, 16 s... by default) is given up every few seconds, rather
        than leaving the next attempt up to 16 s after the return, past
        the query's own L{postgres.CONNECT_TIMEOUT}.
        """
        storage = PostgresStorage(self.conninfo, reactor)
        self.addCleanup(storage.close)
        await storage.store("certificates/a.pem", b"v")
        await deferToThread(self.server.halt)
        try:
            started = time.monotonic()
            while time.monotonic() - started < 20:
                await self.assertFailure(storage.load("certificates/a.pem"), StorageError)
        finally:
            await deferToThread(self.server.resume)
        await deferLater(reactor, postgres.RECONNECT_TIMEOUT, lambda: None)
        back = time.monotonic()
        self.assertEqual(await storage.load("certificates/a.pem"), b"v")
        self.assertLess(time.monotonic() - back, 3)
