"""
Three C{twistd} nodes behind a real HAProxy (round-robin on the challenge
port and on each TLS port) against a real pebble whose validation goes
through HAProxy: first the harness itself with today's independent nodes,
then the cluster on a shared PostgreSQL.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

import psycopg
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from letsencrypt_resource.config import parseConfiguration
from letsencrypt_resource.testing.cluster import (
    HELLO,
    Cluster,
    PebbleCounts,
    Shared,
    clusterOptionsKnown,
    pebbleCounts,
    peerCertificate,
    writeKeyFile,
)
from letsencrypt_resource.testing.haproxy import (
    HEALTH_PATH,
    HAProxyNotFound,
    Route,
    configuration,
    findHAProxy,
    freePort,
    releasePorts,
)
from tests.helpers.pebblecase import TestCACase
from tests.helpers.postgres import PostgresCase
from tests.helpers.tlsclient import fetchOverTLS

#: Domain sets of the tests: two names, then one.
SETS = [("alpha.example.test", "www.alpha.example.test"), ("beta.example.test",)]
#: The certificates' lifetime at pebble, in seconds: a Let's Encrypt one's
#: (pebble's default of five years is refused by the nodes that receive
#: it from another, as no CA may issue it).
LIFETIME = 90 * 86400
#: Seconds the nodes may take to serve every set.
SERVED_WITHIN = 90.0


class BalancedCase(TestCACase):
    """
    Tests that run HAProxy: skipped when it is not installed, except under
    CI (C{CI=true}), where that is a failure.
    """

    def setUp(self) -> None:
        super().setUp()
        try:
            findHAProxy()
        except HAProxyNotFound as e:
            if os.environ.get("CI") == "true":
                raise
            raise SkipTest(str(e)) from None

    async def until(self, predicate: Callable[[], bool]) -> None:
        """
        Wait, in steps of 50 ms, until C{predicate()} is true.

        @raise AssertionError: when it is not within L{SERVED_WITHIN} seconds.
        """
        for _ in range(int(SERVED_WITHIN / 0.05)):
            if predicate():
                return
            await deferLater(reactor, 0.05)
        raise AssertionError(f"not true after {SERVED_WITHIN} seconds: {predicate}")

    async def startCluster(self, sets: list[tuple[str, ...]]) -> tuple[Cluster, bytes, str]:
        """
        Start HAProxy in front of three nodes (not started yet) and a
        pebble validating through it; all stopped when the test ends.

        @return: The cluster, pebble's issuer chain (root first), and the
            path of pebble's log.
        """
        cluster = Cluster(self.mktemp(), sets)
        self.addCleanup(deferToThread, cluster.stop)
        cluster.startBalancer()
        testCA = await self.startTestCA(
            cluster.challengePort, extraConfig={"certificateValidityPeriod": LIFETIME}
        )
        self.shared = Shared(testCA.directoryURL, testCA.caFile)
        issuers = await testCA.fetchIssuerPEM()
        return cluster, issuers, os.path.join(testCA.directory, "pebble.log")


class HarnessTests(BalancedCase):
    """
    The harness with the nodes of today, each on its own state directory
    and no shared database.
    """

    async def test_independentNodesBehindBalancer(self) -> None:
        """
        With the other nodes taken out of the challenge route, the first
        node's validations pass through HAProxy and it serves CA-issued
        certificates on its own ports and through HAProxy; every node
        registers an account of its own (three at pebble, counted from
        its log); round-robin spreads three handshakes over the three
        nodes, which present three different certificates.
        """
        cluster, issuers, pebbleLog = await self.startCluster(SETS)
        cluster.balancer.setEnabled("challenge", 1, False)
        cluster.balancer.setEnabled("challenge", 2, False)
        self.assertEqual(cluster.balancer.status("challenge")[1:], ["MAINT", "MAINT"])
        cluster.startNodes(self.shared)
        serials = await deferToThread(cluster.waitUntilServed, issuers, SERVED_WITHIN, [0])
        self.assertEqual(cluster.balancer.status("challenge"), ["UP", "MAINT", "MAINT"])
        self.assertEqual(len(set(serials.values())), len(SETS))
        for setIndex, names in enumerate(SETS):
            port = cluster.nodes[0].servicePorts[setIndex]
            served, received = await fetchOverTLS(
                reactor, port, names[-1], issuers, "/hello.txt", HELLO
            )
            self.assertEqual(served.serial_number, serials[0, setIndex])
            self.assertIn(HELLO, received)

        for setIndex in range(len(SETS)):
            for node in (1, 2):
                cluster.balancer.setEnabled(f"set{setIndex}", node, False)
        for setIndex, names in enumerate(SETS):
            served, received = await fetchOverTLS(
                reactor, cluster.balancedPort(setIndex), names[0], issuers, "/hello.txt", HELLO
            )
            self.assertEqual(served.serial_number, serials[0, setIndex])

        # The TLS servers follow their node's challenge server's state
        # (track): back in service together.
        for node in (1, 2):
            cluster.balancer.setEnabled("challenge", node, True)
            cluster.balancer.setEnabled("set1", node, True)
        await self.until(lambda: cluster.balancer.status("set1") == ["UP"] * 3)
        presented = [
            await deferToThread(peerCertificate, cluster.balancedPort(1), SETS[1][0], None)
            for _ in range(3)
        ]
        self.assertEqual(
            len({c.fingerprint(c.signature_hash_algorithm) for c in presented if c}), 3
        )
        await self.until(lambda: pebbleCounts(pebbleLog).accounts >= 3)
        counts = pebbleCounts(pebbleLog)
        self.assertEqual(counts.accounts, 3)
        self.assertGreaterEqual(counts.orders, len(SETS))


class ClusterTests(PostgresCase, BalancedCase):
    """
    Three nodes sharing one PostgreSQL behind HAProxy.
    """

    def setUp(self) -> None:
        if not clusterOptionsKnown():
            raise SkipTest(
                "the lets-encrypt resource does not declare cluster_database, "
                "cluster_key_file and node_name yet (issue 14's cluster branch)"
            )
        super().setUp()

    async def test_oneOrderPerSetEveryNodeServes(self) -> None:
        """
        Three domain sets on three nodes of one cluster: pebble sees one
        account and exactly one order per set, whichever node the
        balancer sends each validation to; every node presents the same
        CA-issued certificate for each set on its own port, to a real TLS
        client that verifies the chain and the name, and so does HAProxy's
        port in front of them (three handshakes, reaching each node).
        """
        sets = [*SETS, ("gamma.example.test", "ftp.gamma.example.test")]
        cluster, issuers, pebbleLog = await self.startCluster(sets)
        keyFile = writeKeyFile(os.path.join(cluster.folder, "cluster.key"))
        shared = Shared(self.shared.directoryURL, self.shared.caFile, self.conninfo, keyFile)
        cluster.startNodes(shared)
        serials = await deferToThread(cluster.waitUntilServed, issuers, SERVED_WITHIN)

        counts = pebbleCounts(pebbleLog)
        self.assertEqual((counts.orders, counts.accounts), (len(sets), 1))
        for setIndex, names in enumerate(sets):
            self.assertEqual(len({serials[n, setIndex] for n in range(cluster.count)}), 1)
            for node in cluster.nodes:
                served, received = await fetchOverTLS(
                    reactor, node.servicePorts[setIndex], names[-1], issuers, "/hello.txt", HELLO
                )
                self.assertEqual(served.serial_number, serials[0, setIndex])
                self.assertIn(HELLO, received)
            for _ in range(cluster.count):
                served, _ = await fetchOverTLS(
                    reactor, cluster.balancedPort(setIndex), names[0], issuers, "/hello.txt", HELLO
                )
                self.assertEqual(served.serial_number, serials[0, setIndex])


class PebbleCountsTests(SynchronousTestCase):
    """
    L{pebbleCounts} reads orders and accounts from pebble's log.
    """

    def test_counts(self) -> None:
        """
        Each C{Added order} line is an order; the accounts are the last
        (largest) number pebble says it holds; other lines count nothing.
        """
        path = self.mktemp()
        with open(path, "wb") as stream:
            stream.write(
                b"Pebble 2024/01/01 There are now 1 accounts in memory\n"
                b'Pebble 2024/01/01 Added order "abc" to the db\n'
                b"Pebble 2024/01/01 There are now 1 orders in the db\n"
                b"Pebble 2024/01/01 There are now 2 accounts in memory\n"
                b'Pebble 2024/01/01 Added order "def" to the db\n'
                b"Pebble 2024/01/01 POST /order-plz -> calling handler()\n"
            )
        self.assertEqual(pebbleCounts(path), PebbleCounts(orders=2, accounts=2))

    def test_empty(self) -> None:
        """
        A log without those lines counts nothing.
        """
        path = self.mktemp()
        with open(path, "wb") as stream:
            stream.write(b"Pebble starting\n")
        self.assertEqual(pebbleCounts(path), PebbleCounts(orders=0, accounts=0))


class HAProxyConfigurationTests(SynchronousTestCase):
    """
    The configuration L{configuration} writes for L{Route}s.
    """

    def test_routes(self) -> None:
        """
        Each route is a frontend on loopback and a round-robin backend of
        its mode, its servers named C{node0}, C{node1}... with fast checks;
        the admin socket is private.
        """
        text = configuration(
            [Route("challenge", "http", [1001, 1002], 2001), Route("set0", "tcp", [1003], 2002)],
            "/x/admin.sock",
        )
        self.assertIn("stats socket /x/admin.sock mode 600 level admin", text)
        self.assertIn("frontend challenge\n    mode http\n    bind 127.0.0.1:2001\n", text)
        self.assertIn(
            "backend set0\n    mode tcp\n    balance roundrobin\n    server node0 127.0.0.1:1003\n",
            text,
        )
        self.assertIn("    server node1 127.0.0.1:1002\n", text)
        self.assertIn("default-server check inter 100ms fall 2 rise 1", text)
        self.assertIn("timeout check 1s", text)
        self.assertNotIn("httpchk", text)

    def test_httpRequestsRetried(self) -> None:
        """
        A challenge request is tried again on another server when its
        server refuses, closes or resets before answering, or does not
        answer within 5 seconds (a paused node: the CA's validation waits
        about 10), and no idle connection is kept to a server (it would
        hold a stopping node's drain); TLS routes pass connections through
        untouched.
        """
        text = configuration(
            [Route("challenge", "http", [1001], 2001), Route("set0", "tcp", [1003], 2002)],
            "/x/admin.sock",
        )
        challenge, tls = text.split("\nbackend challenge\n")[1].split("\nbackend set0\n")
        self.assertIn("    option http-server-close\n", challenge)
        self.assertIn("    retry-on conn-failure empty-response response-timeout\n", challenge)
        self.assertIn("    timeout server 5s\n", challenge)
        self.assertNotIn("retry-on", tls)
        self.assertNotIn("timeout server 5s", tls)
        self.assertIn("    retries 3\n    option redispatch 1\n", text)

    def test_httpChecks(self) -> None:
        """
        A route that names its servers' challenge ports checks each server
        with an HTTP request there (a node stopped with C{SIGSTOP} accepts
        connections but answers nothing, and is taken out); a route that
        tracks it takes its servers' states without checks of its own.
        """
        text = configuration(
            [
                Route("challenge", "http", [1001, 1002], 2001, checks=[1001, 1002]),
                Route("set0", "tcp", [1003, 1004], 2002, track="challenge"),
            ],
            "/x/admin.sock",
        )
        self.assertIn(f"    option httpchk GET {HEALTH_PATH}\n", text)
        self.assertEqual(text.count("option httpchk"), 1)
        self.assertIn("    server node0 127.0.0.1:1001 check port 1001\n", text)
        self.assertIn("    server node1 127.0.0.1:1004 no-check track challenge/node1\n", text)

    def test_badRoute(self) -> None:
        """
        A route name that could break out of its line, or an unknown mode,
        is refused before any configuration is written.
        """
        self.assertRaises(ValueError, Route, "set0\n    server evil 10.0.0.1:80", "tcp", [1])
        self.assertRaises(ValueError, Route, "Set0", "tcp", [1])
        self.assertRaises(ValueError, Route, "set0", "udp", [1])


class NodeConfigurationTests(SynchronousTestCase):
    """
    The configuration L{Cluster} writes for each node.
    """

    def test_independentNodesParse(self) -> None:
        """
        Without a database, each node's configuration is one the product
        accepts: the same CA and sets, each node on ports of its own, no
        two alike, and none of the cluster options.
        """
        cluster = Cluster(self.mktemp(), SETS)
        shared = Shared("https://127.0.0.1:14000/dir", "/nowhere/ca.pem")
        ports: list[int] = []
        for node in cluster.nodes:
            text = cluster.configuration(node, shared)
            self.assertNotIn("cluster_", text)
            parsed = parseConfiguration(text, node.folder)
            assert parsed.resource is not None
            self.assertEqual(parsed.resource.port, node.challengePort)
            self.assertEqual(parsed.resource.acmeURL, shared.directoryURL)
            self.assertEqual([s.port for s in parsed.services], list(node.servicePorts))
            self.assertEqual([s.domains for s in parsed.services], SETS)
            ports += [node.challengePort, *node.servicePorts]
        ports += [route.port for route in cluster.balancer.routes]
        self.assertEqual(len(ports), len(set(ports)))

    def test_clusterOptions(self) -> None:
        """
        With a database, each node names it, the key file and its own
        C{node_name}, and nothing else differs but ports.
        """
        cluster = Cluster(self.mktemp(), SETS)
        shared = Shared("https://127.0.0.1:14000/dir", "/x/ca.pem", "host=/x dbname=t", "/x/k")
        texts = [cluster.configuration(node, shared) for node in cluster.nodes]
        for node, text in zip(cluster.nodes, texts, strict=True):
            self.assertIn("cluster_database = host=/x dbname=t\n", text)
            self.assertIn("cluster_key_file = /x/k\n", text)
            self.assertIn(f"node_name = node{node.index}\n", text)
        first = cluster.nodes[0]
        expected = texts[0].replace("node_name = node0", "node_name = node1")
        for old, new in zip(
            [first.challengePort, *first.servicePorts],
            [cluster.nodes[1].challengePort, *cluster.nodes[1].servicePorts],
            strict=True,
        ):
            expected = expected.replace(f"port = {old}\n", f"port = {new}\n")
        self.assertEqual(texts[1], expected)


class OutageTests(PostgresCase):
    """
    The database outage the cluster benchmark plays: the server stopped,
    then started again on its data.
    """

    def test_haltResume(self) -> None:
        """
        While halted, connecting fails; after L{PostgresServer.resume
        <letsencrypt_resource.testing.postgres.PostgresServer.resume>},
        the schema and its rows are there.
        """
        self.admin().execute("CREATE TABLE kept (n integer)")
        self.admin().execute("INSERT INTO kept VALUES (7)")
        self.server.halt()
        try:
            self.assertRaises(psycopg.OperationalError, psycopg.connect, self.conninfo)
        finally:
            self.server.resume()
        with psycopg.connect(self.conninfo) as connection:
            self.assertEqual(connection.execute("SELECT n FROM kept").fetchall(), [(7,)])


class PortReservationTests(SynchronousTestCase):
    """
    Tests for L{freePort}: a port stays reserved until it is released.
    """

    def test_reservedUntilReleased(self) -> None:
        """
        No one else can bind a port given by L{freePort} (a port picked
        free and bound later could be taken meanwhile), but a server that
        sets C{SO_REUSEADDR}, as Twisted's and HAProxy's listeners do,
        listens on it, and again after a restart; once released, the port
        is anyone's.
        """
        port = freePort()
        self.addCleanup(releasePorts, [port])
        with socket.socket() as other:
            error = self.assertRaises(OSError, other.bind, ("127.0.0.1", port))
        self.assertEqual(error.errno, errno.EADDRINUSE)
        for _ in range(2):
            with socket.socket() as server:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind(("127.0.0.1", port))
                server.listen()
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
        releasePorts([port])
        with socket.socket() as other:
            other.bind(("127.0.0.1", port))
