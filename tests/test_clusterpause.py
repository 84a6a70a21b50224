"""
A cluster node paused in the middle of a transaction (C{SIGSTOP}, a frozen
virtual machine), on a real PostgreSQL: the server ends its session, so
that the rows it locked do not block the other nodes for as long as the
pause lasts.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from twisted.internet import reactor
from twisted.internet.task import deferLater

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
