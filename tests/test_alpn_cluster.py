"""
TLS-ALPN-01 in a cluster, for real: two nodes on one PostgreSQL database
against pebble, whose validation handshakes reach the node that did not
order; that node reads the challenge the other published and answers.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from psycopg.conninfo import make_conninfo
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from letsencrypt_resource.acmeclient import ACMEClient
from letsencrypt_resource.host import ServerService
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.pebble import freeTCPPort
from tests.helpers.configuration import CLUSTER_NODE, HELLO
from tests.helpers.pebblecase import TestCACase
from tests.helpers.postgres import PostgresCase
from tests.helpers.servers import startServer
from tests.helpers.tlsclient import fetchOverTLS


def issuedTo(managed: ManagedCertificate) -> bool:
    """
    Whether C{managed} has a certificate from the CA.
    """
    return managed.current is not None and not managed.current.provisional


class SharedTLSALPNTests(PostgresCase, TestCACase):
    """
    A node that orders nothing answers the validation handshakes of the
    other node's order from the cluster database.
    """

    def startNode(self, node: str, directoryURL: str, caFile: str, port: int) -> ServerService:
        """
        Start node C{node}, its service on C{port}, ordering from
        C{directoryURL}; stopped at the end of the test.
        """
        return startServer(
            self,
            CLUSTER_NODE.format(
                extra="challenge_types = tls-alpn-01\n",
                keyType="ecdsa-p256",
                challengePort=freeTCPPort(),
                directoryURL=directoryURL,
                caFile=caFile,
                database=make_conninfo(self.conninfo, application_name=node),
                keyFile=self.keyFile,
                node=node,
                port=port,
            ),
        )

    async def test_answeredFromTheDatabase(self) -> None:
        """
        Node 1 orders; node 2 starts while node 1's order holds its lease,
        so node 2 orders nothing; pebble's handshakes go to node 2's
        service, which reads each challenge from the database and answers
        it: the certificate is issued, and node 2 presents it too.
        """
        self.keyFile = os.path.abspath(self.mktemp())
        with open(self.keyFile, "wb") as stream:
            stream.write(os.urandom(32))
        os.chmod(self.keyFile, 0o600)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        # Node 1 answers its challenges once node 2 listens.
        answering: list[object] = []
        secondListens: Deferred[None] = Deferred()
        answerChallenge = ACMEClient.answerChallenge

        async def answerLater(client: ACMEClient, url: str, answer: Any) -> None:
            answering.append(url)
            await secondListens
            await answerChallenge(client, url, answer)

        self.patch(ACMEClient, "answerChallenge", answerLater)
        tlsPort = freeTCPPort()
        testCA = await self.startTestCA(
            extraConfig={"tlsPort": tlsPort, "certificateValidityPeriod": 90 * 86400}
        )
        first = self.startNode("node-1", testCA.directoryURL, testCA.caFile, freeTCPPort())
        await self.until(lambda: bool(answering), timeout=30)
        second = self.startNode("node-2", testCA.directoryURL, testCA.caFile, tlsPort)
        await self.until(lambda: sum(e.get("event_id") == 20209 for e in events) == 2, timeout=30)
        secondListens.callback(None)
        await self.until(lambda: 20015 in [e.get("event_id") for e in events], timeout=30)
        ids = [e.get("event_id") for e in events]
        self.assertEqual(ids.count(20015), 1)
        self.assertNotIn(20017, ids)
        for node in (first, second):
            assert node.resource is not None
            managed = node.resource.managed[frozenset({"files.example.test"})]
            await self.until(partial(issuedTo, managed))
        issuers = await testCA.fetchIssuerPEM()
        _, received = await fetchOverTLS(
            reactor, tlsPort, "files.example.test", issuers, "/hello.txt", HELLO
        )
        self.assertIn(HELLO, received)
