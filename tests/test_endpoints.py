"""
The listeners of the resource and of the C{https} services on endpoint
descriptions, and the challenge resource mounted in a host's own site.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from letsencrypt_resource.certificates import certificateNames
from letsencrypt_resource.challenge import ChallengeSite, ChallengeTokens
from letsencrypt_resource.config import ConfigurationError, parseConfiguration
from letsencrypt_resource.host import ServerService, checkListeners, readConfiguration
from letsencrypt_resource.https import HTTPSFileService
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.testing import runUntilFired
from tests.helpers import exchange, newSigner, provisionalFor, rawRequest
from tests.helpers.pebblecase import TestCACase
from tests.helpers.resourcecase import RefusingReactor, ResourceTestCase
from tests.helpers.serviceoptions import makeOptions
from tests.helpers.tlsclient import fetchOverTLS


class ChallengeSiteEndpointTests(ResourceTestCase):
    """
    The resource's challenge site on an C{endpoint}.
    """

    def test_listensOnEndpoint(self) -> None:
        """
        The challenge site listens on the endpoint description, and event
        20151 names the address and port it bound.
        """
        self.start(endpoint="tcp6:5003:interface=\\:\\:1")
        [(port, factory, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (5003, "::1"))
        # Behind the count of open connections (drain).
        self.assertIsInstance(factory.wrappedFactory, ChallengeSite)
        self.assertEqual(
            self.eventTexts(20151),
            ["20151 Answering ACME HTTP-01 challenges on ::1 port 5003."],
        )

    def test_endpointCannotListen(self) -> None:
        """
        When the endpoint cannot listen, 20152 names its description, and
        consumers still get their provisional certificates.
        """
        resource = self.makeResource(reactor=RefusingReactor(), endpoint="tcp:5003")
        resource.startService()
        self.addCleanup(self.stop, resource)
        self.assertEqual(
            self.eventTexts(20152),
            [
                "20152 Cannot answer ACME HTTP-01 challenges on tcp:5003 port -: "
                "[Errno 98] Address already in use"
            ],
        )
        self.assertTrue(self.consumers["files"].received[0].provisional)

    def test_missingSystemdSocket(self) -> None:
        """
        A C{systemd:} socket that was not passed to the process is told by
        20152, as a port that cannot be opened is.
        """
        resource = self.makeResource(endpoint="systemd:domain=INET:index=7")
        resource.startService()
        self.addCleanup(self.stop, resource)
        [text] = self.eventTexts(20152)
        self.assertIn("on systemd:domain=INET:index=7 port -: ", text)
        self.assertEqual(self.reactor.tcpServers, [])


class EmbeddedChallengeTests(ResourceTestCase):
    """
    C{challenge_site = no}: the host serves
    L{LetsEncryptResource.challengeResource} in its own site.
    """

    def hostSite(self, challenges: Any) -> Site:
        """
        A host's own site, with a page of its own and the challenge
        resource mounted at C{/.well-known/acme-challenge/}.
        """
        root = Resource()
        page = Resource()
        page.render_GET = lambda request: b"the host's own page"  # type: ignore[attr-defined]
        page.isLeaf = True
        root.putChild(b"index.html", page)
        wellKnown = Resource()
        root.putChild(b".well-known", wellKnown)
        wellKnown.putChild(b"acme-challenge", challenges)
        site = Site(root)
        site.reactor = MemoryReactorClock()
        return site

    def test_challengesAnsweredThroughHostSite(self) -> None:
        """
        Without a challenge site of its own, the resource opens no port and
        logs neither 20151 nor 20152; the CA validates through the host's
        site, where the challenge resource is mounted, and the certificates
        are issued.
        """
        resource = self.makeResource(challengeSite=False)
        site = self.hostSite(resource.challengeResource())

        def validate(token: str) -> str | None:
            response = exchange(
                site, rawRequest(b"GET", b"/.well-known/acme-challenge/" + token.encode())
            )
            return response.body.decode("ascii") if response.code == 200 else None

        self.server.validate = validate
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertEqual(self.eventTexts(20151) + self.eventTexts(20152), [])
        self.assertFalse(self.consumers["files"].received[-1].provisional)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        self.assertEqual(
            exchange(site, rawRequest(b"GET", b"/index.html")).body,
            b"the host's own page",
        )

    def test_challengeResourceAnswers(self) -> None:
        """
        Mounted in a host's site, the challenge resource answers a pending
        token and C{test.txt}, 404 for anything else below it (other
        tokens, deeper paths, encoded slashes and dots), and 405 for
        methods other than GET and HEAD.
        """
        resource = self.makeResource(challengeSite=False)
        resource.responder.add("token-1", "token-1.thumbprint")
        site = self.hostSite(resource.challengeResource())

        def fetch(target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
            response = exchange(site, rawRequest(method, b"/.well-known/acme-challenge/" + target))
            return response.code, response.body

        self.assertEqual(fetch(b"token-1"), (200, b"token-1.thumbprint"))
        self.assertEqual(fetch(b"token-1?x=1"), (200, b"token-1.thumbprint"))
        self.assertEqual(fetch(b"test.txt"), (200, b"Let's Encrypt Ready"))
        for target in (b"", b"token-2", b"token-1/x", b"x%2Ftoken-1", b"%2E%2E", b"a/../token-1"):
            self.assertEqual(fetch(target)[0], 404, target)
        self.assertEqual(fetch(b"token-1", b"POST")[0], 405)
        self.assertEqual(fetch(b"token-1", b"HEAD"), (200, b""))
        self.assertIsInstance(resource.challengeResource(), ChallengeTokens)


class ServiceEndpointTests(SynchronousTestCase):
    """
    An C{https} service on an C{endpoint}.
    """

    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.mkdir(self.folder)

    def test_listensOnEndpoint(self) -> None:
        """
        The service listens on its endpoint description behind its own TLS,
        and event 20156 names the address and port it bound.
        """
        reactor = MemoryReactorClock()
        options = attrs.evolve(makeOptions(self.folder), endpoint="tcp6:8443:interface=\\:\\:1")
        service = HTTPSFileService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        with capturedLogs() as events:
            service.consumer.useCertificate(provisionalFor(newSigner()))
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (8443, "::1"))
        # Its TLS layer, behind the count of open connections (drain), the
        # factory built at the first connection, and the peek at each
        # ClientHello (TLS-ALPN-01).
        self.assertIsInstance(factory.wrappedFactory.built().wrappedFactory, TLSMemoryBIOFactory)
        self.assertEqual(
            [formatEvent(e) for e in events if e.get("event_id") == 20156],
            ["20156 Service files is listening on ::1 port 8443."],
        )

    def test_endpointCannotListen(self) -> None:
        """
        When its endpoint cannot listen, event 20157 names the description
        and the reason.
        """
        reason = OSError(errno.EACCES, "Permission denied")
        reactor = RaisingMemoryReactor(CannotListenError("", 443, reason))
        options = attrs.evolve(makeOptions(self.folder), endpoint="tcp:443")
        service = HTTPSFileService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        with capturedLogs() as events:
            service.consumer.useCertificate(provisionalFor(newSigner()))
        self.assertEqual(
            [formatEvent(e) for e in events if e.get("event_id") == 20157],
            [f"20157 Service files cannot listen on tcp:443 port -: {reason}"],
        )


class CheckListenersTests(SynchronousTestCase):
    """
    Tests for L{letsencrypt_resource.host.checkListeners}.
    """

    def test_missingSystemdSocketRefused(self) -> None:
        """
        A server whose C{systemd:} endpoint names a socket the process was
        not passed is refused before it starts, naming the section and
        option; other endpoints, and a resource without a challenge site,
        pass.
        """
        text = (
            "[resources/r1]\ntype = lets-encrypt\nendpoint = tcp:80\n\n"
            "[services/s1]\ntype = https\nssl_domains = files.example.com\n"
            "path = /srv/files\nendpoint = systemd:domain=INET:index=0\n"
        )
        error = self.assertRaises(
            ConfigurationError, checkListeners, parseConfiguration(text, "/etc")
        )
        self.assertEqual((error.section, error.option), ("services/s1", "endpoint"))
        self.assertIn("systemd did not pass", error.message)
        checkListeners(
            parseConfiguration(text.replace("systemd:domain=INET:index=0", "tcp:443"), "/etc")
        )
        checkListeners(
            parseConfiguration(
                "[resources/r1]\ntype = lets-encrypt\nchallenge_site = no\n"
                "endpoint = systemd:domain=INET:index=0\n",
                "/etc",
            )
        )


ENDPOINT_CONFIGURATION = """\
[resources/le]
type = lets-encrypt
endpoint = tcp:{challengePort}:interface=127.0.0.1
acme_url = {directoryURL}
acme_ca_file = {caFile}
state_directory = state
agree_tos = yes

[services/files]
type = https
name = files-https
endpoint = tcp:{port}:interface=127.0.0.1
path = public
ssl_domains = files.example.test
"""


class EndpointPebbleTests(TestCACase):
    """
    A whole server whose listeners are all endpoints, against pebble.
    """

    async def test_issuedOverEndpoints(self) -> None:
        """
        Pebble validates through the challenge site on its C{tcp:} endpoint,
        and the service on its own C{tcp:} endpoint presents the issued
        certificate and serves its files.
        """
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "public"))
        with open(os.path.join(directory, "public", "hello.txt"), "wb") as stream:
            stream.write(b"hello\n")
        path = os.path.join(directory, "server.ini")
        port = freeTCPPort()
        with open(path, "w") as stream:
            stream.write(
                ENDPOINT_CONFIGURATION.format(
                    challengePort=challengePort,
                    directoryURL=testCA.directoryURL,
                    caFile=testCA.caFile,
                    port=port,
                )
            )
        server = ServerService(readConfiguration(path), reactor)
        server.startService()
        self.addCleanup(server.stopService)
        await server.resource.whenSettled()
        issuers = await testCA.fetchIssuerPEM()
        certificate, received = await fetchOverTLS(
            reactor, port, "files.example.test", issuers, "/hello.txt", b"hello\n"
        )
        self.assertEqual(tuple(certificateNames(certificate)), ("files.example.test",))
        self.assertIn(b"hello\n", received)
