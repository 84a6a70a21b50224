"""
Servers on a cluster database (a real PostgreSQL) against a real pebble,
checked with a real TLS client: two nodes in one process, each with its
own state directory, share one database; one orders, both serve; a node
restarts on its cache while the database is down, and renews once it is
back.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from typing import Any

import psycopg
from cryptography import x509
from psycopg.conninfo import make_conninfo
from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from letsencrypt_resource.cli import run
from letsencrypt_resource.config import loadConfiguration
from letsencrypt_resource.host import ServerService, checkFileSystem, makeResource
from letsencrypt_resource.noderecord import serialHex
from letsencrypt_resource.pebble import RunningTestCA, freeTCPPort
from letsencrypt_resource.storage.cluster import ClusterStorage
from tests.helpers import keyMarkers
from tests.helpers.configuration import CLUSTER_NODE, HELLO
from tests.helpers.pebblecase import TestCACase
from tests.helpers.postgres import PostgresCase
from tests.helpers.tlsclient import fetchOverTLS

NAME = "files.example.test"
_databases = itertools.count()


class ClusterServerTests(PostgresCase, TestCACase):
    """
    Whole servers, built from configuration files as C{twistd} builds
    them, on one cluster database.
    """

    def setUp(self) -> None:
        super().setUp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.keyFile = os.path.abspath(self.mktemp())
        with open(self.keyFile, "wb") as stream:
            stream.write(os.urandom(32))
        os.chmod(self.keyFile, 0o600)
        self.refused: list[bool] = []

    def writeNode(self, node: str, testCA: RunningTestCA, challengePort: int, database: str) -> str:
        """
        The configuration file of C{node}, in a folder of its own.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(folder, "public"))
        with open(os.path.join(folder, "public", "hello.txt"), "wb") as stream:
            stream.write(HELLO)
        path = os.path.join(folder, "server.ini")
        with open(path, "w") as stream:
            stream.write(
                CLUSTER_NODE.format(
                    extra="",
                    keyType="ecdsa-p256",
                    challengePort=challengePort,
                    directoryURL=testCA.directoryURL,
                    caFile=testCA.caFile,
                    # Another connection string per node: each listens on a
                    # connection of its own, as nodes on other hosts do.
                    database=make_conninfo(database, application_name=node),
                    keyFile=self.keyFile,
                    node=node,
                    port=freeTCPPort(),
                )
            )
        return path

    def startNode(self, path: str) -> ServerService:
        """
        Start the server of the configuration file at C{path}, stopped at
        the end of the test.
        """
        configuration = loadConfiguration(path)
        checkFileSystem(configuration)
        server = ServerService(
            configuration,
            reactor,
            resourceFactory=lambda *a, **k: _factory(self.refused, *a, **k),
        )
        server.startService()
        self.addCleanup(lambda: server.stopService() if server.running else None)
        return server

    async def presented(self, server: ServerService, testCA: RunningTestCA) -> x509.Certificate:
        """
        The certificate the server's file service presents to a TLS client
        that trusts only pebble's root, once it serves the file.
        """
        issuers = await testCA.fetchIssuerPEM()
        port = server.fileServices[0].options.port
        certificate, received = await fetchOverTLS(
            reactor, port, NAME, issuers, "/hello.txt", HELLO
        )
        self.assertIn(HELLO, received)
        return certificate

    def eventsOf(self, eventID: int) -> list[dict[str, Any]]:
        """
        The events logged with C{eventID}.
        """
        return [e for e in self.events if e.get("event_id") == eventID]

    async def test_oneOrdersBothServe(self) -> None:
        """
        Two nodes started together: exactly one order is placed, the other
        node receives the certificate from the cluster (event 20219 naming
        the node that stored it) and both present it over TLS; the
        database's rows hold no private key.
        """
        challengePort = freeTCPPort()
        # Pebble's default of five years is longer than a node accepts
        # from another (see chaincheck): ninety days, as Let's Encrypt.
        testCA = await self.startTestCA(
            challengePort, extraConfig={"certificateValidityPeriod": 90 * 86400}
        )
        first = self.startNode(self.writeNode("node-1", testCA, challengePort, self.conninfo))
        second = self.startNode(self.writeNode("node-2", testCA, freeTCPPort(), self.conninfo))
        assert first.resource is not None and second.resource is not None
        self.assertIsInstance(first.resource.storage, ClusterStorage)
        await first.resource.whenSettled()
        await second.resource.whenSettled()
        await self.until(lambda: len(self.eventsOf(20015)) == 1, timeout=30)
        await self.until(lambda: len(self.eventsOf(20219)) >= 1, timeout=30)
        [received] = self.eventsOf(20219)
        self.assertEqual(received["key"], "certificates/files.example.test.pem")
        self.assertNotEqual(received["node_name"], received["stored_by"])
        sets = [node.resource.managed[frozenset({NAME})] for node in (first, second)]
        await self.until(lambda: all(s.current and not s.current.provisional for s in sets))
        certificates = [await self.presented(node, testCA) for node in (first, second)]
        self.assertEqual(certificates[0].serial_number, certificates[1].serial_number)
        self.assertEqual(len(self.eventsOf(20015)), 1)
        current = sets[0].current
        assert current is not None
        admin = self.admin()
        dump = repr(
            [
                admin.execute(f"SELECT * FROM {table}").fetchall()
                for table in ("letsencrypt_values", "letsencrypt_changes")
            ]
        )
        for marker in keyMarkers(current.key):
            self.assertNotIn(marker, dump)
        self.assertNotIn("PRIVATE KEY", dump)

    async def test_restartWithoutDatabase(self) -> None:
        """
        A node restarted while the database refuses connections comes up
        on the certificate in its cache and serves it (event 20215), and
        orders nothing even when forced to; once the database is back
        (event 20216), a renewal completes.
        """
        database = self.newDatabase()
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        path = self.writeNode("node-1", testCA, challengePort, database)
        server = self.startNode(path)
        assert server.resource is not None
        await server.resource.whenSettled()
        before = await self.presented(server, testCA)
        await server.stopService()
        self.allowConnections(database, False)
        server = self.startNode(path)
        assert server.resource is not None
        await server.resource.whenSettled()
        self.assertEqual((await self.presented(server, testCA)).serial_number, before.serial_number)
        [lost] = self.eventsOf(20215)
        self.assertEqual(lost["node_name"], "node-1")
        await server.resource.check(force=True)
        self.assertEqual(len(self.eventsOf(20015)), 1, "no order without the database")
        self.allowConnections(database, True)
        await self.until(lambda: self.eventsOf(20216), timeout=60)
        await server.resource.check(force=True)
        after = await self.presented(server, testCA)
        self.assertNotEqual(after.serial_number, before.serial_number)

    async def test_otherKeyFileRefused(self) -> None:
        """
        A node whose key file is not the one the database was first used
        with is refused (event 20220 naming it, and the server's refusal
        callback, which stops the reactor under C{twistd}); it stores
        nothing in the database.
        """
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        first = self.startNode(self.writeNode("node-1", testCA, challengePort, self.conninfo))
        assert first.resource is not None
        await first.resource.whenSettled()
        rows = self.admin().execute("SELECT count(*) FROM letsencrypt_values").fetchone()
        self.keyFile = os.path.abspath(self.mktemp())
        with open(self.keyFile, "wb") as stream:
            stream.write(os.urandom(32))
        os.chmod(self.keyFile, 0o600)
        second = self.startNode(self.writeNode("node-2", testCA, freeTCPPort(), self.conninfo))
        await self.until(lambda: self.refused, timeout=30)
        [mismatch] = self.eventsOf(20220)
        self.assertEqual((mismatch["node_name"], mismatch["path"]), ("node-2", self.keyFile))
        assert second.resource is not None
        await second.resource.whenSettled()
        after = self.admin().execute("SELECT count(*) FROM letsencrypt_values").fetchone()
        self.assertEqual(after, rows)

    async def command(self, path: str, *argv: str) -> Any:
        """
        Run the operations command on the configuration at C{path} with
        C{argv} (and C{--json} for those that print a table without it),
        in this process; assert that it succeeded; return what it printed,
        read as JSON.
        """
        out, err = io.StringIO(), io.StringIO()
        json_ = ["--json"] if argv[0] in ("status", "renew") else []
        code = await run(reactor, [*argv, *json_, "--config", path], out, err)
        self.assertEqual(code, 0, err.getvalue())
        return json.loads(out.getvalue())

    async def nextSecond(self, certificate: x509.Certificate) -> None:
        """
        Wait until a certificate issued now starts, and so ends, at least a
        second after C{certificate}, which pebble issued just before: a
        node takes a certificate stored by another only when it ends later,
        and times are in whole seconds.
        """
        issued = certificate.not_valid_before_utc.timestamp()
        await self.until(lambda: reactor.seconds() >= issued + 1, timeout=5)

    async def presentedAfter(
        self, server: ServerService, testCA: RunningTestCA, previous: x509.Certificate
    ) -> x509.Certificate:
        """
        The certificate the server presents once its set is on another
        certificate than C{previous}.
        """
        assert server.resource is not None
        [served] = server.resource.managed.values()
        await self.until(
            lambda: (
                served.current is not None
                and served.current.certificate.serial_number != previous.serial_number
            ),
            timeout=30,
        )
        presented = await self.presented(server, testCA)
        self.assertNotEqual(presented.serial_number, previous.serial_number)
        return presented

    async def test_operationsFromAnyNode(self) -> None:
        """
        On a node where no server runs, C{renew}, C{revoke} and C{account}
        work through the cluster's database: the command takes the set's
        lease, another node's challenge site answers the CA from the
        database, and the certificates it stores reach the running node,
        which serves them; C{account} shows the cluster's one account; and
        C{status} there shows the running node's record, with the serial
        it serves.
        """
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(
            challengePort, extraConfig={"certificateValidityPeriod": 90 * 86400}
        )
        path = self.writeNode("node-1", testCA, challengePort, self.conninfo)
        server = self.startNode(path)
        assert server.resource is not None
        await server.resource.whenSettled()
        first = await self.presented(server, testCA)
        other = self.writeNode("node-2", testCA, freeTCPPort(), self.conninfo)

        await self.nextSecond(first)
        [renewed] = await self.command(other, "renew", "--force")
        self.assertEqual(renewed["outcome"], "renewed")
        self.assertEqual(len(self.eventsOf(20015)), 2)
        await self.until(lambda: self.eventsOf(20219), timeout=30)
        self.assertEqual(self.eventsOf(20219)[-1]["stored_by"], "node-2")
        second = await self.presentedAfter(server, testCA, first)

        shown = await self.command(other, "account", "show")
        self.assertEqual(shown, await self.command(path, "account", "show"))
        self.assertEqual(shown["status"], "valid")

        await self.nextSecond(second)
        revoked = await self.command(other, "revoke", NAME)
        self.assertEqual(revoked["revoked"], serialHex(second.serial_number))
        third = await self.presentedAfter(server, testCA, second)
        self.assertNotIn(third.serial_number, (first.serial_number, second.serial_number))

        async def statusShowsThird() -> bool:
            [row] = await self.command(other, "status")
            node = row["cluster"]["nodes"].get("node-1", {})
            return bool(node.get("serving") == serialHex(third.serial_number))

        for _ in range(50):
            if await statusShowsThird():
                break
        else:
            self.fail("status never showed node-1 serving the last certificate")

    def newDatabase(self) -> str:
        """
        A database of its own for the test, whose connections can be
        refused, dropped at the end of the test.
        """
        name = f"outage_{os.getpid()}_{next(_databases)}"
        admin = psycopg.connect(make_conninfo(self.conninfo, dbname="postgres", options=""))
        admin.autocommit = True
        self.addCleanup(admin.close)
        admin.execute(f"CREATE DATABASE {name}")
        self.addCleanup(admin.execute, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self._admin = admin
        return make_conninfo(self.conninfo, dbname=name, options="")

    def allowConnections(self, database: str, allowed: bool) -> None:
        """
        Let the database take connections again, or refuse them and drop
        those it has, as a database that stops does.
        """
        name = psycopg.conninfo.conninfo_to_dict(database)["dbname"]
        self._admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(allowed).lower()}")
        if not allowed:
            self._admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def _factory(refused: list[bool], *args: Any, **kwargs: Any) -> Any:
    """
    L{makeResource}, noting a refusal instead of stopping the reactor.
    """
    return makeResource(*args, onRefused=lambda: refused.append(True), **kwargs)
