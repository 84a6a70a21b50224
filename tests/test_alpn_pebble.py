"""
TLS-ALPN-01 and IP addresses for real: pebble's validation authority is
pointed at an C{https} service's port (its C{tlsPort}), and the
certificate it issues is then presented on that same port to ordinary
clients; a certificate for C{127.0.0.1} is validated by either challenge
type and presented to clients that send no SNI.
"""

from __future__ import annotations

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from letsencrypt_resource.certificates import certificateNames
from letsencrypt_resource.host import ServerService
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.testing.pebble import RESOURCE_SECTION
from tests.helpers.configuration import HELLO
from tests.helpers.pebblecase import TestCACase
from tests.helpers.servers import startServer
from tests.helpers.tlsclient import fetchOverTLS

CONFIGURATION = (
    RESOURCE_SECTION
    + """\
challenge_types = {challengeTypes}

[services/files]
type = https
name = files-https
address = 127.0.0.1
port = {tlsPort}
path = public
ssl_domains = {domains}
"""
)


class TLSALPNTests(TestCACase):
    """
    A whole server whose names pebble validates with TLS-ALPN-01 only: the
    port its HTTP-01 validations go to has no listener.
    """

    async def runServer(
        self,
        challengeTypes: str,
        domains: str = "files.example.test, www.example.test",
        httpToChallengeSite: bool = False,
    ) -> ServerService:
        """
        Start pebble, its TLS-ALPN-01 validations sent to the service's
        port, and a server whose orders answer C{challengeTypes} for a
        service of C{domains}.

        @param httpToChallengeSite: Whether pebble's HTTP-01 validations go
            to the challenge site; by default nothing listens where they go.
        """
        tlsPort, challengePort = freeTCPPort(), freeTCPPort()
        httpPort = challengePort if httpToChallengeSite else freeTCPPort()
        self.testCA = await self.startTestCA(httpPort, extraConfig={"tlsPort": tlsPort})
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server = startServer(
            self,
            CONFIGURATION.format(
                keyType="ecdsa-p256",
                challengePort=challengePort,
                domains=domains,
                directoryURL=self.testCA.directoryURL,
                caFile=self.testCA.caFile,
                tlsPort=tlsPort,
                challengeTypes=challengeTypes,
            ),
        )
        assert server.resource is not None
        await server.resource.whenSettled()
        return server

    async def assertIssuedAndServed(self, server: ServerService) -> None:
        """
        The service presents a certificate from pebble for its names on the
        port the validations reached, and serves its files over it; a
        client that asks for an IP address sends no SNI and checks the
        address is in the certificate.
        """
        issuers = await self.testCA.fetchIssuerPEM()
        root = x509.load_pem_x509_certificates(issuers)[0]
        [service] = server.fileServices
        options = service.options
        certificate, received = await fetchOverTLS(
            reactor, options.port, options.domains[0], issuers, "/hello.txt", HELLO
        )
        self.assertEqual(set(certificateNames(certificate)), set(options.domains))
        self.assertNotEqual(certificate.issuer, root.subject)
        self.assertIn(HELLO, received)

    def eventIDs(self) -> list[int]:
        return [event.get("event_id") for event in self.events]

    async def test_issuedOverTLSALPN(self) -> None:
        """
        With C{challenge_types = tls-alpn-01}, the service's own port
        answers the validations and the certificate is issued at once.
        """
        server = await self.runServer("tls-alpn-01")
        await self.assertIssuedAndServed(server)
        ids = self.eventIDs()
        self.assertEqual(ids.count(20016), 1)
        self.assertNotIn(20017, ids)
        self.assertNotIn(20254, ids)

    async def test_fallBackFromHTTP01(self) -> None:
        """
        With C{http-01, tls-alpn-01}, the HTTP-01 validation fails (nothing
        listens where pebble sends it), event 20254 says so, and the order
        placed again with TLS-ALPN-01 is issued.
        """
        server = await self.runServer("http-01, tls-alpn-01")
        await self.assertIssuedAndServed(server)
        ids = self.eventIDs()
        self.assertEqual(ids.count(20254), 1)
        self.assertNotIn(20017, ids)

    async def test_ipAddressOverHTTP01(self) -> None:
        """
        A service of a domain name and C{127.0.0.1} gets a certificate for
        both, validated over HTTP-01 (an C{ip} identifier), presented to a
        client that reaches the address with no SNI.
        """
        server = await self.runServer(
            "http-01", "127.0.0.1, files.example.test", httpToChallengeSite=True
        )
        await self.assertIssuedAndServed(server)
        self.assertNotIn(20017, self.eventIDs())

    async def test_ipAddressOverTLSALPN(self) -> None:
        """
        An IP address is validated over TLS-ALPN-01 too: pebble's handshake
        names its reverse-DNS name.
        """
        server = await self.runServer("tls-alpn-01", "127.0.0.1")
        await self.assertIssuedAndServed(server)
        self.assertNotIn(20017, self.eventIDs())
