"""
Tests for L{letsencrypt_resource.storage.postgres}: the storage contract
against a real PostgreSQL, then what the database store adds.
"""

from __future__ import annotations

import threading
import time
from functools import partial

import psycopg
from docutils import nodes
from psycopg.conninfo import conninfo_to_dict
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from letsencrypt_resource.storage import pglisten, pgsql, postgres
from letsencrypt_resource.storage.availability import REFUSED, UP, Availability
from letsencrypt_resource.storage.interface import (
    MAX_VALUE,
    TOO_LARGE,
    StaleFence,
    StorageError,
    StorageUnavailable,
    ValueTooLarge,
)
from letsencrypt_resource.storage.pgschema import MIGRATIONS
from letsencrypt_resource.storage.pgsql import CHANNEL, keyBytes, prefixRange
from letsencrypt_resource.storage.postgres import LISTENER_NAME, PostgresStorage, withDefaults
from letsencrypt_resource.storage.sealed import SealedStorage
from letsencrypt_resource.storage.sealing import Sealer, deriveKey

from .helpers.docpages import readPage
from .helpers.postgres import PostgresCase
from .helpers.storagecontract import BAD_KEYS, StorageContractMixin


def documentedGrants() -> list[str]:
    """
    The statements of docs/storage.rst's grants a least-privileged role
    needs.
    """
    for section in readPage("storage.rst").findall(nodes.section):
        if section[0].astext() == "The grants a least-privileged role needs":
            text = section.next_node(nodes.literal_block).astext()
            return [s.strip() for s in text.split(";") if s.strip()]
    raise AssertionError("docs/storage.rst lists no grants")


class PostgresStorageContractTests(StorageContractMixin, PostgresCase):
    """
    L{PostgresStorage} keeps the storage contract; the nodes are storage
    objects on one database, leases timed by its clock moved as far as the
    test's clock went.
    """

    def makeStorage(self) -> PostgresStorage:
        return PostgresStorage(self.conninfo, reactor, skew=self.clock.seconds)


class PostgresStorageTests(PostgresCase):
    """
    What L{PostgresStorage} adds to the contract.
    """

    def storage(self, conninfo: str | None = None) -> PostgresStorage:
        """
        A node on the test's database, closed at the end of the test; with
        another C{conninfo} for the same database, a node of another
        process (told of changes only through the database).
        """
        storage = PostgresStorage(conninfo or self.conninfo, reactor)
        self.addCleanup(storage.close)
        return storage

    def otherProcess(self) -> PostgresStorage:
        """
        A node that shares nothing in memory with those of L{storage}.
        """
        return self.storage(self.server.conninfo(self.schema, application_name="other"))

    async def test_fenceCheckedWithTheWrite(self) -> None:
        """
        A fenced write waits for a lease being taken over, then is refused:
        the token is checked in the write's transaction, against the
        lease's row locked, not read before and written after.
        """
        storage = self.storage()
        lease = await storage.lease("example.com", 30)
        await storage.store("certificates/a.pem", b"old", fence=lease)
        admin = self.admin()
        taker = self.admin()
        taker.execute("BEGIN")
        taker.execute("UPDATE letsencrypt_leases SET token = token + 1, holder = 'other'")
        late = storage.store("certificates/a.pem", b"late", fence=lease)

        def waiting() -> bool:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone()
            return bool(row and row[0])

        await self.until(waiting)
        taker.execute("COMMIT")
        error = await self.assertFailure(late, StaleFence)
        self.assertEqual((error.token, error.newest), (lease.token, lease.token + 1))
        self.assertEqual(await storage.load("certificates/a.pem"), b"old")

    async def test_abandonedLeaseTakenBack(self) -> None:
        """
        A lease whose release failed (the database was down) is taken back
        at once by the storage that held it, with a newer token that fences
        the abandoned one's writes; another process still waits for it to
        expire, and a lease in use is not given twice.
        """
        storage = self.storage()
        used = await storage.lease("orders/a", 600)
        assert used is not None
        self.assertIsNone(await storage.lease("orders/a", 600))

        def down(connection: object, name: str, token: int) -> None:
            raise psycopg.OperationalError("the database is down")

        self.patch(pgsql, "releaseLease", down)
        await self.assertFailure(used.release(), StorageUnavailable)
        self.assertIsNone(await self.otherProcess().lease("orders/a", 600))
        again = await storage.lease("orders/a", 600)
        assert again is not None
        self.assertEqual(again.token, used.token + 1)
        await self.assertFailure(storage.store("renewal/a.json", b"late", fence=used), StaleFence)
        self.assertIsNone(await storage.lease("orders/a", 600))

    async def test_fencedWritesRace(self) -> None:
        """
        Writes of an old holder racing a takeover and the new holder's
        write never overwrite it: whatever the order, the new value stays.
        """
        first, second = self.storage(), self.storage()
        old = await first.lease("example.com", 0)
        late = [first.store("renewal/a.json", b"late %d" % i, fence=old) for i in range(20)]
        new = await second.lease("example.com", 30)
        self.assertIsNotNone(new)
        await second.store("renewal/a.json", b"new", fence=new)
        results = await gatherResults(
            [d.addErrback(lambda f: f.trap(StaleFence)) for d in late], consumeErrors=True
        )
        self.assertEqual(len(results), 20)
        self.assertEqual(await first.load("renewal/a.json"), b"new")

    async def test_otherProcess(self) -> None:
        """
        A node of another process is told of changes through NOTIFY, once,
        a key longer than a notification could hold included.
        """
        first, other = self.storage(), self.otherProcess()
        heard: list[str] = []
        await first.watch("", heard.append)
        await other.store("certificates/a.pem", b"one")
        long = "/".join(["x" * 255] * 40)
        await other.store(long, b"long")
        await self.until(lambda: len(heard) == 2)
        await first.store("certificates/b.pem", b"own")
        await other.delete("certificates/a.pem")
        await self.until(lambda: len(heard) == 3)
        self.assertEqual(heard, ["certificates/a.pem", long, "certificates/a.pem"])

    async def test_notificationsAreHints(self) -> None:
        """
        Notifications that any role of the database may send on the
        channel tell no key nor skip a change: the listener reads the
        changes table; a number far ahead costs one read.
        """
        first, other = self.storage(), self.otherProcess()
        heard: list[str] = []
        await first.watch("", heard.append)
        admin = self.admin()
        for fake in ("1 origin certificates/fake.pem", "2", "999999", "-1", "x"):
            admin.execute("SELECT pg_notify(%s, %s)", (CHANNEL, fake))
        await other.store("certificates/real.pem", b"v")
        await self.until(lambda: len(heard) == 1)
        await other.store("certificates/next.pem", b"v")
        await self.until(lambda: len(heard) == 2)
        self.assertEqual(heard, ["certificates/real.pem", "certificates/next.pem"])

    async def test_catchUpAfterReconnect(self) -> None:
        """
        When the listening connection is lost, the changes made meanwhile
        are heard once it is back, read from the changes table.
        """
        self.patch(pglisten, "RETRY", 0.3)
        first, other = self.storage(), self.otherProcess()
        heard: list[str] = []
        await first.watch("challenges/", heard.append)
        await other.load("warm")
        admin = self.admin()
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (LISTENER_NAME,),
        ).fetchall()
        self.assertEqual(killed, [(True,)])
        await other.store("challenges/missed", b"a")
        await other.store("renewal/other", b"b")
        await self.until(lambda: heard == ["challenges/missed"])
        await other.store("challenges/after", b"c")
        await self.until(lambda: len(heard) == 2)
        self.assertEqual(heard, ["challenges/missed", "challenges/after"])

    async def test_migrateOnce(self) -> None:
        """
        Two nodes of two processes starting together on an empty database
        migrate it once, under the advisory lock.
        """
        first, other = self.storage(), self.otherProcess()
        await gatherResults([first.list(""), other.list("")])
        rows = self.admin().execute("SELECT version FROM letsencrypt_schema").fetchall()
        self.assertEqual(rows, [(v,) for v in range(1, len(MIGRATIONS) + 1)])

    async def test_leastPrivilegedRole(self) -> None:
        """
        Once the schema is current, a role with only the grants that
        docs/storage.rst lists (no C{CREATE}) runs the store: values,
        leases, fences and notifications.
        """
        await self.storage().list("")
        admin = self.admin()
        role = f"runner_{self.schema}"
        admin.execute(f"CREATE ROLE {role} LOGIN")
        for grant in documentedGrants():
            admin.execute(grant.replace("<schema>", self.schema).replace("<role>", role))
        runner = self.server.conninfo(self.schema, user=role)
        first, other = self.storage(runner), self.otherProcess()
        heard: list[str] = []
        await other.watch("", heard.append)
        lease = await first.lease("example.com", 30)
        assert lease is not None
        await lease.renew()
        await first.store("certificates/a.pem", b"v", fence=lease)
        self.assertEqual(await first.list(""), ["certificates/a.pem"])
        await first.delete("certificates/a.pem", fence=lease)
        await lease.release()
        await self.until(lambda: len(heard) == 2)
        self.assertIsNone(await other.load("certificates/a.pem"))

    async def test_newerSchema(self) -> None:
        """
        A node refuses a database whose schema is newer than it knows.
        """
        await self.storage().list("")
        self.admin().execute("INSERT INTO letsencrypt_schema (version) VALUES (%s)", (999,))
        error = await self.assertFailure(self.storage().load("a"), StorageError)
        self.assertIn("newer", str(error))

    async def test_keysAreData(self) -> None:
        """
        Keys are bound parameters, compared as bytes: quotes and C{LIKE}'s
        wildcards are plain characters, a key's non-UTF-8 bytes are kept,
        and a prefix ending in the highest byte lists what it should.
        """
        storage = self.storage()
        keys = ["ab", "a%b", "a_c", "a'; DROP TABLE letsencrypt_values; --", "b\udcff", "b\udcff/c"]
        for key in keys[:5]:
            await storage.store(key, b"v")
        self.assertEqual(await storage.list("a%"), ["a%b"])
        self.assertEqual(await storage.list("a_"), ["a_c"])
        self.assertEqual(await storage.list("b\udcff"), ["b\udcff"])
        self.assertEqual(await storage.load("a'; DROP TABLE letsencrypt_values; --"), b"v")
        self.assertEqual(len(await storage.list("")), 5)
        self.assertEqual(prefixRange(b"a\xff\xff"), (b"a\xff\xff", b"b"))
        self.assertEqual(prefixRange(b"\xff"), (b"\xff", None))

    async def test_largeValueRefused(self) -> None:
        """
        A value larger than C{MAX_VALUE} bytes is refused as unusable,
        naming its key (the database leaves it out of the rows it sends):
        C{load} fails; C{loadMany} gives the error as its value and the
        others of the batch, one of C{MAX_VALUE} bytes included, read.
        """
        storage = self.storage()
        await storage.store("renewal/a.json", b"x")
        self.admin().execute(
            "UPDATE letsencrypt_values SET value = %s WHERE key = %s",
            (b"x" * (MAX_VALUE + 1), keyBytes("renewal/a.json")),
        )
        await storage.store("renewal/b.json", b"x" * MAX_VALUE)
        await storage.store("certificates/a.pem", b"pem")
        alone = await self.assertFailure(storage.load("renewal/a.json"), ValueTooLarge)
        many = await storage.loadMany(["certificates/a.pem", "renewal/a.json", "renewal/b.json"])
        for error in (alone, many.pop("renewal/a.json")):
            self.assertIsInstance(error, ValueTooLarge)
            self.assertEqual((error.key, error.message), ("renewal/a.json", TOO_LARGE))
        self.assertEqual(many, {"certificates/a.pem": b"pem", "renewal/b.json": b"x" * MAX_VALUE})

    def test_connectionDefaults(self) -> None:
        """
        A connection string gets a bounded connection wait and TCP
        keepalives unless it sets them; one that cannot be parsed is
        refused without quoting it.
        """
        options = conninfo_to_dict(withDefaults("host=/run/db connect_timeout=3"))
        self.assertEqual(
            {k: options[k] for k in ("host", "connect_timeout", "keepalives")},
            {"host": "/run/db", "connect_timeout": "3", "keepalives": "1"},
        )
        uri = conninfo_to_dict(withDefaults("postgresql:///cluster?keepalives_idle=5"))
        self.assertEqual((uri["dbname"], uri["keepalives_idle"]), ("cluster", "5"))
        error = self.assertRaises(StorageError, withDefaults, "password=secret oops")
        self.assertNotIn("secret", str(error))

    async def test_databaseUnreachable(self) -> None:
        """
        With no database to reach, calls and watches fail with a
        L{StorageUnavailable} about their key once the wait for a
        connection is over, and the storage still closes.
        """
        self.patch(postgres, "CONNECT_TIMEOUT", 0.2)
        storage = PostgresStorage("host=/nonexistent dbname=none", reactor)
        error = await self.assertFailure(storage.load("accounts/a.json"), StorageUnavailable)
        self.assertEqual(error.key, "accounts/a.json")
        self.assertIn("the database failed", str(error))
        await self.assertFailure(storage.watch("certificates/", print), StorageUnavailable)
        await storage.close()

    def test_badKeysNeverReachSQL(self) -> None:
        """
        A bad key or prefix is refused before any query is sent: at once,
        even with no database to reach.
        """
        storage = PostgresStorage("host=/nonexistent dbname=none", reactor)
        self.addCleanup(storage.close)
        for key in BAD_KEYS:
            for call in (storage.load(key), storage.store(key, b"v"), storage.delete(key)):
                self.assertIsInstance(self.failureResultOf(call, StorageError).value, StorageError)
            self.failureResultOf(storage.lease(key, 30), StorageError)
        for prefix in ("/", "../", "\0"):
            self.failureResultOf(storage.list(prefix), StorageError)
            self.failureResultOf(storage.watch(prefix, print), StorageError)

    async def test_offTheReactorThread(self) -> None:
        """
        The queries run in threads of the storage's own, which close()
        stops, with the listener's connection.
        """
        storage = PostgresStorage(self.conninfo, reactor)
        threads: list[threading.Thread] = []
        storage._workers.run(lambda: threads.append(threading.current_thread()))
        await storage.watch("", print)
        await storage.store("a", b"v")
        self.assertIsNot(threads[0], threading.main_thread())
        await storage.close()
        self.assertFalse(threads[0].is_alive())
        rows = (
            self.admin()
            .execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            .fetchone()
        )
        self.assertEqual(rows, (1,))


class TimeLimitTests(PostgresCase):
    """
    A call that the database cannot answer soon fails, as unavailable,
    within a bound.
    """

    async def test_tableLocked(self) -> None:
        """
        A read behind a table lock that another session holds fails with
        L{StorageUnavailable} once L{postgres.LOCK_TIMEOUT} has passed,
        not when the lock is let go; the storage works again after.
        """
        storage = PostgresStorage(self.conninfo, reactor)
        self.addCleanup(storage.close)
        await storage.store("certificates/a.pem", b"v")
        locker = self.admin()
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE letsencrypt_values IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        error = await self.assertFailure(storage.load("certificates/a.pem"), StorageUnavailable)
        waited = time.monotonic() - started
        locker.execute("ROLLBACK")
        self.assertIn("lock", str(error))
        self.assertGreaterEqual(waited, postgres.LOCK_TIMEOUT - 0.5)
        self.assertLess(waited, postgres.LOCK_TIMEOUT + 5)
        self.assertEqual(await storage.load("certificates/a.pem"), b"v")

    async def test_sessionLimits(self) -> None:
        """
        Every pool connection runs with the statement and lock time limits,
        and the connection string gets a bound on unacknowledged data.
        """
        storage = PostgresStorage(self.conninfo, reactor)
        self.addCleanup(storage.close)
        limits = await storage._run(
            "limits",
            lambda c: c.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
            ).fetchone(),
        )
        self.assertEqual(limits, ("15s", "5s"))
        self.assertEqual(conninfo_to_dict(withDefaults("dbname=x"))["tcp_user_timeout"], "30000")


class KeyCheckRaceTests(PostgresCase):
    """
    Nodes with different key files that start together on a real database.
    """

    async def test_oneRefused(self) -> None:
        """
        Of two nodes of other processes, with other key files, started at
        the same time on an empty database, exactly one passes the key
        check and the other is refused, each of several times.
        """
        for attempt in range(4):
            schema = self.server.newSchema() if attempt else self.schema
            refused: list[str] = []
            nodes = []
            for name, material in (("a", b"a" * 32), ("b", b"b" * 32)):
                database = PostgresStorage(
                    self.server.conninfo(schema, application_name=f"node-{name}"), reactor
                )
                self.addCleanup(database.close)
                sealed = SealedStorage(database, Sealer(deriveKey(material), name))
                nodes.append(
                    Availability(
                        sealed,
                        reactor,
                        name,
                        f"/{name}.key",
                        print,
                        partial(refused.append, name),
                    )
                )
            await gatherResults([node.ready() for node in nodes])
            self.assertEqual(sorted(node.state for node in nodes), [REFUSED, UP])
            self.assertEqual(len(refused), 1)
            for node in nodes:
                node.close()
