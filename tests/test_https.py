"""
Tests for L{letsencrypt_resource.https}.
"""

from __future__ import annotations

import errno
import os

from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from letsencrypt_resource.config import ServiceOptions
from letsencrypt_resource.https import FileSite, HTTPSFileService, ReadOnlyFile

from .helpers import (
    connectInMemory,
    newSigner,
    peerCertificate,
    provisionalFor,
    tlsClientFactory,
)

ADDRESS = "127.0.0.1"
PORT = 8443
CONTENT = b"Hello over HTTPS.\n"


def makeOptions(path: str) -> ServiceOptions:
    """
    Options of an C{https} service serving C{path} on L{ADDRESS}:L{PORT}.
    """
    return ServiceOptions(
        section="files",
        type="https",
        name="files",
        description="Test files",
        address=ADDRESS,
        port=PORT,
        domains=("example.com",),
        path=path,
        debug=False,
    )


class HTTPSFileServiceTests(SynchronousTestCase):
    """
    Tests for L{HTTPSFileService} on a memory reactor.
    """

    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.mkdir(self.folder)
        with open(os.path.join(self.folder, "hello.txt"), "wb") as stream:
            stream.write(CONTENT)
        self.reactor = MemoryReactorClock()
        self.service = HTTPSFileService(makeOptions(self.folder), self.reactor)
        self.signer = newSigner()

    def startWithCertificate(self) -> None:
        """
        Start the service and give it a provisional certificate.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.service.consumer.useCertificate(provisionalFor(self.signer))

    def listeningFactory(self) -> TLSMemoryBIOFactory:
        """
        The factory of the one port the service listens on.
        """
        [(_, factory, _, _)] = self.reactor.tcpServers
        return factory

    def render(self, method: bytes, name: bytes) -> DummyRequest:
        """
        Render C{method} for the file C{name} on the site the service
        listens with, as the site finds it.

        A L{DummyRequest} rather than a connection: Twisted sends a static
        file with the global cooperator, on the global reactor.
        """
        request = DummyRequest([name])
        request.method = method
        site = self.listeningFactory().wrappedFactory
        request.render(getChildForRequest(site.resource, request))
        self.assertTrue(request.finished)
        return request

    def test_listensOnceCertified(self) -> None:
        """
        The service listens on its address and port only once its consumer
        has a certificate, and says so with event 20156.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(self.reactor.tcpServers, [])
        with capturedLogs() as events:
            self.service.consumer.useCertificate(provisionalFor(self.signer))
        self.assertEqual(
            [(port, interface) for port, _, _, interface in self.reactor.tcpServers],
            [(PORT, ADDRESS)],
        )
        self.assertEqual(
            [formatEvent(e) for e in events if e.get("event_id") == 20156],
            [f"20156 Service files is listening on {ADDRESS} port {PORT}."],
        )

    def test_alreadyCertified(self) -> None:
        """
        A service whose consumer already has a certificate listens as soon
        as it starts.
        """
        self.service.consumer.useCertificate(provisionalFor(self.signer))
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(len(self.reactor.tcpServers), 1)

    def test_restart(self) -> None:
        """
        A service stopped and started again listens again at once on the
        certificate it has.
        """
        self.startWithCertificate()
        self.service.stopService()
        self.service.startService()
        self.assertEqual(len(self.reactor.tcpServers), 2)

    def test_stoppedBeforeCertified(self) -> None:
        """
        A service stopped before its first certificate never listens.
        """
        self.service.startService()
        self.service.stopService()
        self.service.consumer.useCertificate(provisionalFor(self.signer))
        self.assertEqual(self.reactor.tcpServers, [])

    def test_servesFiles(self) -> None:
        """
        Files of the folder are served with GET, and their headers alone
        with HEAD.
        """
        self.startWithCertificate()
        get = self.render(b"GET", b"hello.txt")
        head = self.render(b"HEAD", b"hello.txt")
        # A DummyRequest's code stays None when left at the default, 200.
        self.assertEqual(
            [(r.responseCode or 200, b"".join(r.written)) for r in (get, head)],
            [(200, CONTENT), (200, b"")],
        )
        self.assertEqual(
            head.responseHeaders.getRawHeaders(b"content-length"),
            [str(len(CONTENT)).encode("ascii")],
        )
        self.assertEqual(self.render(b"GET", b"missing.txt").responseCode, 404)

    def test_readOnly(self) -> None:
        """
        PUT, POST and DELETE are refused with 405 and change nothing.
        """
        self.startWithCertificate()
        for method in [b"PUT", b"POST", b"DELETE"]:
            request = self.render(method, b"hello.txt")
            self.assertEqual(
                (request.responseCode, request.responseHeaders.getRawHeaders(b"allow")),
                (405, [b"GET, HEAD"]),
                method,
            )
        with open(os.path.join(self.folder, "hello.txt"), "rb") as stream:
            self.assertEqual(stream.read(), CONTENT)
        self.assertEqual(os.listdir(self.folder), ["hello.txt"])

    def test_followsCertificate(self) -> None:
        """
        A later certificate is presented to new connections on the same
        listening port.
        """
        self.startWithCertificate()
        renewed = provisionalFor(self.signer)
        self.service.consumer.useCertificate(renewed)
        connection = connectInMemory(
            self.listeningFactory(),
            tlsClientFactory(self.signer, self.reactor),
            self.reactor,
        )
        self.assertEqual(peerCertificate(connection), renewed.certificate)

    def test_listenFails(self) -> None:
        """
        When the port cannot be opened, event 20157 names the address, the
        port and the reason.
        """
        reason = OSError(errno.EADDRINUSE, "Address already in use")
        reactor = RaisingMemoryReactor(CannotListenError(ADDRESS, PORT, reason))
        service = HTTPSFileService(makeOptions(self.folder), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        with capturedLogs() as events:
            service.consumer.useCertificate(provisionalFor(self.signer))
        [text] = [formatEvent(e) for e in events if e.get("event_id") == 20157]
        self.assertTrue(text.startswith("20157 "), text)
        for part in [ADDRESS, str(PORT), str(reason), "files"]:
            self.assertIn(part, text)


class FileSiteTests(SynchronousTestCase):
    """
    Tests for L{FileSite}'s request log.
    """

    def logged(self, debug: bool) -> list[str]:
        site = FileSite("files", debug, ReadOnlyFile(self.mktemp()))
        request = DummyRequest([b"hello.txt"])
        request.client = IPv4Address("TCP", "192.0.2.7", 50000)
        request.uri = b"/hello.txt"
        request.code = 200
        with capturedLogs() as events:
            site.log(request)
        return [formatEvent(e) for e in events if e.get("event_id") == 20000]

    def test_debugLogsRequests(self) -> None:
        """
        With C{debug = yes}, each request is event 20000 with the service,
        method, path, status and client.
        """
        [text] = self.logged(debug=True)
        self.assertEqual(text, "20000 files: GET /hello.txt -> 200 for 192.0.2.7")

    def test_quietOtherwise(self) -> None:
        """
        Without debug, requests are not logged.
        """
        self.assertEqual(self.logged(debug=False), [])
