"""
Tests for L{letsencrypt_resource.https}.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from letsencrypt_resource import folder, https
from letsencrypt_resource.folder import ServedFolder
from letsencrypt_resource.https import FileSite, HTTPSFileService, OnFirstConnection
from tests.helpers import (
    HTTPResponse,
    InMemoryConnection,
    connectInMemory,
    filefuzz,
    newSigner,
    parseResponse,
    peerCertificate,
    provisionalFor,
    pullProducersOn,
    tlsClientFactory,
)
from tests.helpers.received import Received
from tests.helpers.serviceoptions import ADDRESS, PORT, makeOptions

CONTENT = filefuzz.FILES["hello.txt"]
#: Methods other than GET and HEAD: standard, WebDAV and made up.
OTHER_METHODS = [
    b"POST",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"TRACE",
    b"CONNECT",
    b"PROPFIND",
    b"MKCOL",
    b"BREW",
    b"get",
]


def request(method: bytes, target: bytes, headers: bytes = b"") -> bytes:
    """
    An HTTP/1.1 request without a body that asks the server to close the
    connection once it has answered.
    """
    return b"%s %s HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n%s\r\n" % (
        method,
        target,
        headers,
    )


class CountedSite(FileSite):
    """
    A file site that counts the sites made.
    """

    made = 0

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        CountedSite.made += 1


class HTTPSFileServiceTests(SynchronousTestCase):
    """
    Tests for L{HTTPSFileService} on a memory reactor.
    """

    def setUp(self) -> None:
        self.tree = filefuzz.makeTree(self.mktemp())
        self.folder = self.tree.served
        self.reactor = MemoryReactorClock()
        pullProducersOn(self, self.reactor)
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

    def connect(self) -> InMemoryConnection:
        """
        Connect over TLS to the port the service listens on.
        """
        return connectInMemory(
            self.listeningFactory(),
            tlsClientFactory(self.signer, self.reactor),
            self.reactor,
        )

    def fetch(
        self, method: bytes, target: bytes, connection: InMemoryConnection | None = None
    ) -> HTTPResponse:
        """
        Send C{method} C{target} over C{connection} (by default, a new
        one), and read the answer.
        """
        connection = connection or self.connect()
        connection.send(request(method, target))
        return parseResponse(connection.collector.received)

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

    def test_factoriesSayNothing(self) -> None:
        """
        The listener's factories start and stop without Twisted's
        "Starting factory" and "Stopping factory" lines: with thousands
        of services they were a third of the start-up's log.
        """
        self.startWithCertificate()
        factory = self.listeningFactory()
        with capturedLogs() as events:
            factory.doStart()
            factory.doStop()
        self.assertEqual([formatEvent(e) for e in events], [])

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

    def test_errorAtOnceSparesOthers(self) -> None:
        """
        An error as a service with a certificate already starts to listen
        is logged, and the services started after it still start and
        listen: the error does not come out of C{startService}.
        """
        second = HTTPSFileService(
            attrs.evolve(makeOptions(self.folder), name="other"), self.reactor
        )
        parent = MultiService()
        for service in (self.service, second):
            service.consumer.useCertificate(provisionalFor(self.signer))
            service.setServiceParent(parent)
        place = https.listening.listeningPlace

        def failing(options: Any, port: Any) -> tuple[str, int | str]:
            if options.name == "files":
                raise RuntimeError("boom")
            return place(options, port)

        self.patch(https.listening, "listeningPlace", failing)
        with capturedLogs() as events:
            parent.startService()
        self.addCleanup(parent.stopService)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual((self.service.running, second.running), (1, 1))
        self.assertEqual(len(self.reactor.tcpServers), 2)
        self.assertIn(20156, [e.get("event_id") for e in events])

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
        with HEAD; missing files get 404.
        """
        self.startWithCertificate()
        get = self.fetch(b"GET", b"/hello.txt")
        head = self.fetch(b"HEAD", b"/hello.txt")
        self.assertEqual([(r.code, r.body) for r in (get, head)], [(200, CONTENT), (200, b"")])
        self.assertEqual(head.headers[b"content-length"], str(len(CONTENT)).encode("ascii"))
        self.assertEqual(self.fetch(b"GET", b"/missing.txt").code, 404)

    def test_siteAtFirstConnection(self) -> None:
        """
        A service that listens builds its site at its first connection,
        once (see L{OnFirstConnection}), and serves from it.
        """
        self.patch(CountedSite, "made", 0)
        self.patch(https, "FileSite", CountedSite)
        self.startWithCertificate()
        self.assertEqual(CountedSite.made, 0)
        responses = [self.fetch(b"GET", b"/hello.txt") for _ in range(2)]
        self.assertEqual([r.body for r in responses], [CONTENT, CONTENT])
        self.assertEqual(CountedSite.made, 1)

    def test_otherMethods(self) -> None:
        """
        Every method but GET and HEAD (standard, WebDAV, made up, lower
        case) is refused with 405 and C{Allow: GET, HEAD}, on files,
        folders and missing paths alike, and changes nothing.
        """
        self.startWithCertificate()
        before = sorted(os.listdir(self.folder))
        for method in OTHER_METHODS:
            for target in [b"/hello.txt", b"/", b"/sub/", b"/sub", b"/missing", b"*"]:
                response = self.fetch(method, target)
                self.assertEqual(
                    (response.code, response.headers.get(b"allow")),
                    (405, b"GET, HEAD"),
                    (method, target),
                )
        with open(os.path.join(self.folder, "hello.txt"), "rb") as stream:
            self.assertEqual(stream.read(), CONTENT)
        self.assertEqual(sorted(os.listdir(self.folder)), before)

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

    def test_folderReplaced(self) -> None:
        """
        The folder is opened when the service starts listening: once it is
        moved away and a link to a folder holding a secret takes its place,
        requests answer 404 and never give the secret; put back, it is
        served again.
        """
        self.startWithCertificate()
        self.assertEqual(self.fetch(b"GET", b"/hello.txt").body, CONTENT)
        os.rename(self.folder, self.folder + "-old")
        os.symlink(self.tree.outside, self.folder)
        for target in (b"/secret.pem", b"/hello.txt", b"/"):
            response = self.fetch(b"GET", target)
            self.assertEqual(response.code, 404, target)
            self.assertNotIn(filefuzz.SECRET, response.body)
        os.unlink(self.folder)
        os.rename(self.folder + "-old", self.folder)
        self.assertEqual(self.fetch(b"GET", b"/hello.txt").body, CONTENT)

    def test_folderOpenedAtStart(self) -> None:
        """
        The folder is opened when the service starts, right after the
        configuration's checks: a link to a folder holding a secret put in
        its place while the first certificate is awaited is never served.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        os.rename(self.folder, self.folder + "-old")
        os.symlink(self.tree.outside, self.folder)
        self.service.consumer.useCertificate(provisionalFor(self.signer))
        response = self.fetch(b"GET", b"/secret.pem")
        self.assertEqual(response.code, 404)
        self.assertNotIn(filefuzz.SECRET, response.body)

    def test_folderReopened(self) -> None:
        """
        L{HTTPSFileService.reopenFolder} (what a reload does once its checks
        passed) serves the folder the path names now: a deployment that
        points a link at a new folder takes effect.
        """
        os.rename(self.folder, self.folder + "-v1")
        os.makedirs(self.folder + "-v2")
        with open(os.path.join(self.folder + "-v2", "hello.txt"), "wb") as stream:
            stream.write(b"version 2")
        os.symlink(self.folder + "-v1", self.folder)
        self.startWithCertificate()
        self.assertEqual(self.fetch(b"GET", b"/hello.txt").body, CONTENT)
        os.unlink(self.folder)
        os.symlink(self.folder + "-v2", self.folder)
        self.assertEqual(self.fetch(b"GET", b"/hello.txt").code, 404)
        self.service.reopenFolder()
        self.assertEqual(self.fetch(b"GET", b"/hello.txt").body, b"version 2")

    def test_folderCannotBeOpened(self) -> None:
        """
        When its folder cannot be opened as it is about to listen, the
        service does not listen, and event 20157 says why.
        """
        os.rename(self.folder, self.folder + "-old")
        with capturedLogs() as events:
            self.startWithCertificate()
        self.assertEqual(self.reactor.tcpServers, [])
        [text] = [formatEvent(e) for e in events if e.get("event_id") == 20157]
        self.assertEqual(
            text,
            f"20157 Service files cannot listen on {ADDRESS} port {PORT}: cannot "
            f"open the folder {self.folder}: No such file or directory",
        )

    def test_folderClosedOnStop(self) -> None:
        """
        Stopping the service closes its idle keep-alive connections at
        once, and its folder once they have ended: no descriptor is left
        open.
        """
        before = sorted(os.listdir("/proc/self/fd"))
        self.startWithCertificate()
        connections = [self.connect() for _ in range(2)]
        for connection in connections:
            connection.send(b"GET /hello.txt HTTP/1.1\r\nHost: example.com\r\n\r\n")
            self.assertEqual(parseResponse(connection.collector.received).body, CONTENT)
        stopped = self.service.stopService()
        self.assertNoResult(stopped)
        for connection in connections:
            connection.pump.flush()
            self.assertIsNotNone(connection.collector.lostReason)
        self.successResultOf(stopped)
        self.assertEqual(sorted(os.listdir("/proc/self/fd")), before)

    def test_requestUnderWayAtStop(self) -> None:
        """
        A request under way as the service stops is answered from the
        folder, not with 404, with C{Connection: close}; then the
        connection closes, and the folder with it.
        """
        before = sorted(os.listdir("/proc/self/fd"))
        self.startWithCertificate()
        connection = self.connect()
        connection.send(b"GET /hello.txt HTTP/1.1\r\nHost: example.com\r\n")
        stopped = self.service.stopService()
        self.assertNoResult(stopped)
        connection.send(b"\r\n")
        response = parseResponse(connection.collector.received)
        self.assertEqual(
            (response.code, response.body, response.headers.get(b"connection")),
            (200, CONTENT, b"close"),
        )
        self.assertIsNotNone(connection.collector.lostReason)
        self.successResultOf(stopped)
        self.assertEqual(sorted(os.listdir("/proc/self/fd")), before)

    def test_listenFails(self) -> None:
        """
        When the port cannot be opened, event 20157 names the address, the
        port and the reason, and the folder is closed again.
        """
        reason = OSError(errno.EADDRINUSE, "Address already in use")
        reactor = RaisingMemoryReactor(CannotListenError(ADDRESS, PORT, reason))
        before = sorted(os.listdir("/proc/self/fd"))
        service = HTTPSFileService(makeOptions(self.folder), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        with capturedLogs() as events:
            service.consumer.useCertificate(provisionalFor(self.signer))
        [text] = [formatEvent(e) for e in events if e.get("event_id") == 20157]
        self.assertTrue(text.startswith("20157 "), text)
        for part in [ADDRESS, str(PORT), str(reason), "files"]:
            self.assertIn(part, text)
        self.assertEqual(sorted(os.listdir("/proc/self/fd")), before)


@contextmanager
def asUser(uid: int) -> Iterator[None]:
    """
    Run the block with the effective user C{uid} when running as root (who
    reads any file), as is otherwise.
    """
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


class FirstConnectionTests(SynchronousTestCase):
    """
    Tests for L{OnFirstConnection}.
    """

    def test_startedAndStoppedOnceBuilt(self) -> None:
        """
        The factory it stands for is started when it is built, at the first
        connection, and stopped with it; one never built is neither.
        """
        made: list[Factory] = []

        def build() -> Factory:
            made.append(Factory.forProtocol(Protocol))
            made[-1].noisy = False
            return made[-1]

        lazy = OnFirstConnection(build, Clock(), "files")
        lazy.doStart()
        lazy.doStop()
        self.assertEqual(made, [])
        lazy.doStart()
        address = IPv4Address("TCP", "127.0.0.1", 4433)
        self.assertIsInstance(lazy.buildProtocol(address), Protocol)
        lazy.buildProtocol(address)
        [built] = made
        self.assertEqual(built.numPorts, 1)
        lazy.doStop()
        self.assertEqual((built.numPorts, lazy.numPorts), (0, 0))


class FirstConnectionFailureTests(SynchronousTestCase):
    """
    An L{OnFirstConnection} whose factory cannot be made, or started.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.address = IPv4Address("TCP", "127.0.0.1", 4433)

    def test_buildFailureClosesAndTells(self) -> None:
        """
        A connection whose factory cannot be made gets no protocol (Twisted
        closes it), and event 20210 says why, with no traceback; at most
        once in L{https.BUILD_FAILURE_PERIOD} seconds: the connections
        closed sooner are told when the period ends, and those not told yet
        when it stops.  It is made again at each connection.
        """
        tried: list[int] = []

        def build() -> Factory:
            tried.append(1)
            raise RuntimeError("no site")

        lazy = OnFirstConnection(build, self.clock, "files")
        lazy.doStart()
        with capturedLogs() as events:
            results = [lazy.buildProtocol(self.address) for _ in range(3)]
            self.clock.advance(https.BUILD_FAILURE_PERIOD)
            results.append(lazy.buildProtocol(self.address))
            lazy.doStop()
        self.assertEqual((results, len(tried)), ([None] * 4, 4))
        told = (
            "20210 Service files cannot build its site: RuntimeError: no site; {} connections"
            " closed since the last such event. It tries again at the next connection."
        )
        self.assertEqual(
            [formatEvent(e) for e in events], [told.format(1), told.format(2), told.format(1)]
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([e for e in events if "log_failure" in e], [])
        self.assertEqual([e["log_level"] for e in events], [LogLevel.critical] * 3)

    def test_keptOnceStarted(self) -> None:
        """
        A factory made whose start fails is not kept: the connection gets
        no protocol, and the next one makes and starts a new factory,
        which is kept.
        """
        made: list[Factory] = []

        def build() -> Factory:
            made.append(Factory.forProtocol(Protocol))
            made[-1].noisy = False
            if len(made) == 1:
                made[-1].startFactory = lambda: 1 / 0  # type: ignore[method-assign]
            return made[-1]

        lazy = OnFirstConnection(build, self.clock, "files")
        lazy.doStart()
        with capturedLogs() as events:
            self.assertIsNone(lazy.buildProtocol(self.address))
        self.assertIn("ZeroDivisionError", formatEvent(events[0]))
        self.assertIsInstance(lazy.buildProtocol(self.address), Protocol)
        self.assertIsInstance(lazy.buildProtocol(self.address), Protocol)
        self.assertEqual([f.numPorts for f in made], [0, 1])
        lazy.doStop()
        self.assertEqual([f.numPorts for f in made], [0, 0])


class SiteNotBuiltTests(TestCase):
    """
    A service whose site cannot be built, on the real reactor.
    """

    async def test_connectionsClosed(self) -> None:
        """
        Each connection is closed with nothing sent, and no error is logged
        for it ("Unhandled Error" from Twisted's port); event 20210 says
        why, once; the service keeps listening.
        """

        def broken(*args: Any, **kwargs: Any) -> FileSite:
            raise RuntimeError("no site")

        self.patch(https, "FileSite", broken)
        tree = filefuzz.makeTree(self.mktemp())
        options = attrs.evolve(makeOptions(tree.served), address="127.0.0.1", port=0)
        service = HTTPSFileService(options, reactor)
        service.consumer.useCertificate(provisionalFor(newSigner()))
        with capturedLogs() as events:
            service.startService()
            self.addCleanup(service.stopService)
            assert service._port is not None and service._port._port is not None
            number = service._port._port.getHost().port
            for _ in range(2):
                closed = Received()
                endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
                await connectProtocol(endpoint, closed)
                self.assertEqual(await closed.ended, b"")
        self.assertEqual([e["event_id"] for e in events if "event_id" in e], [20156, 20210])
        self.assertIsNotNone(service._port._port)


class IdleSiteTests(SynchronousTestCase):
    """
    Sites that serve nothing wake nothing.
    """

    def test_noLogDateTimer(self) -> None:
        """
        Started file sites schedule no call, where each Twisted site
        refreshes its access-log date every second: 1,000 services woke
        the server 1,000 times a second.
        """
        clock = Clock()
        sites = [FileSite(f"s{i}", False, Resource(), reactor=clock) for i in range(100)]
        for site in sites:
            site.doStart()
        for _ in range(5):
            self.assertEqual(clock.getDelayedCalls(), [])
            clock.advance(1)
        for site in sites:
            site.doStop()


class ServedFolderTests(SynchronousTestCase):
    """
    Tests for L{ServedFolder}: what a request can reach in a folder laid
    out by L{filefuzz.makeTree}, over a L{FileSite} in memory.
    """

    def setUp(self) -> None:
        self.tree = filefuzz.makeTree(self.mktemp())
        self.clock = MemoryReactorClock()
        pullProducersOn(self, self.clock)
        self.served = ServedFolder.open(self.tree.served)
        self.addCleanup(self.served.close)

    def fetch(self, target: bytes, method: bytes = b"GET") -> HTTPResponse:
        """
        Send C{method} C{target} to a site on the tree's folder, opened
        once for the test, and read the answer; fail on any error logged
        meanwhile.
        """
        site = FileSite("files", False, self.served)
        site.reactor = self.clock
        with capturedLogs() as events:
            connection = connectInMemory(site, clock=self.clock)
            connection.send(request(method, target))
        errors = [
            formatEvent(e) + (e["log_failure"].getTraceback() if "log_failure" in e else "")
            for e in events
            if e["log_level"] >= LogLevel.warn or "log_failure" in e
        ]
        self.assertEqual(errors, [], target)
        return parseResponse(connection.collector.received)

    def assertNotFound(self, targets: list[bytes]) -> None:
        """
        Each of C{targets} gets 404, for GET and HEAD, and nothing of the
        secret or hidden files.
        """
        for target in targets:
            for method in (b"GET", b"HEAD"):
                response = self.fetch(target, method)
                self.assertEqual(response.code, 404, (method, target[:80]))
                for secret in (filefuzz.SECRET, filefuzz.HIDDEN):
                    self.assertNotIn(secret, response.body, target)

    def listing(self, target: bytes) -> bytes:
        """
        The listing of the folder C{target}.
        """
        response = self.fetch(target)
        self.assertEqual(
            (response.code, response.headers[b"content-type"]),
            (200, b"text/html; charset=utf-8"),
        )
        return response.body

    def test_linksInside(self) -> None:
        """
        Links that resolve inside the folder, to files and folders, are
        followed.
        """
        hello, inner = filefuzz.FILES["hello.txt"], filefuzz.FILES["sub/inner.txt"]
        for target, content in [
            (b"/hello.txt", hello),
            (b"/inside", hello),
            (b"/insideDir/inner.txt", inner),
            (b"/sub/up/hello.txt", hello),
            (b"/sub/up/sub/up/insideDir/inner.txt", inner),
        ]:
            self.assertEqual((self.fetch(target).code, self.fetch(target).body), (200, content))
        self.assertIn(b'href="inner.txt"', self.listing(b"/insideDir/"))

    def test_linksOutside(self) -> None:
        """
        Links that resolve outside the folder, relative or absolute, to a
        file or a folder, directly or from a subfolder, answer 404.
        """
        self.assertNotFound(
            [
                b"/outFile",
                b"/outDir",
                b"/outDir/",
                b"/outDir/secret.pem",
                b"/absOut",
                b"/sub/escape",
                b"/sub/up/outFile",
                b"/insideDir/escape",
            ]
        )

    def test_escapes(self) -> None:
        """
        Dot segments, encoded or not, encoded slashes and backslashes, and
        empty segments never leave the folder: 404.
        """
        self.assertNotFound(
            [
                b"/../outside/secret.pem",
                b"/%2e%2e/outside/secret.pem",
                b"/sub/%2E%2E/%2e%2e/outside/secret.pem",
                b"/..%2foutside%2fsecret.pem",
                b"/sub%2f..%2f..%2foutside%2fsecret.pem",
                b"/%2f" + self.tree.outside.encode() + b"/secret.pem",
                b"/.%2e/outside/secret.pem",
                b"/..%5coutside%5csecret.pem",
                b"//hello.txt",
                b"/sub//inner.txt",
                b"/./hello.txt",
                b"/sub/./inner.txt",
            ]
        )

    def test_oddNames(self) -> None:
        """
        NUL bytes, names that are not UTF-8, over-long names and paths,
        links that loop or lead nowhere, a FIFO, and a file taken for a
        folder answer 404 and log nothing (L{fetch} checks), where Twisted's
        static files answered 500 with a traceback.
        """
        self.assertNotFound(
            [
                b"/index.txt%00",
                b"/hello.txt%00",
                b"/hello.txt%00.html",
                b"/%00/hello.txt",
                b"/%ff%fe",
                b"/%c0%ae%c0%ae/outside/secret.pem",
                b"/" + b"a" * 300,
                b"/" + b"/".join([b"a" * 250] * 20),
                b"/loop",
                b"/loop/x",
                b"/dangling",
                b"/fifo",
                b"/hello.txt/",
                b"/hello.txt/x",
            ]
        )

    def test_unreadable(self) -> None:
        """
        A file and a folder the server cannot read answer 404 and are not
        listed, where Twisted answered 403 for the file and 500 for the
        folder.
        """
        for name in ("hello.txt", "sub"):
            os.chmod(os.path.join(self.tree.served, name), 0)
        # Let the other user reach the tree in the test's private folder.
        os.chmod(os.path.dirname(os.path.dirname(self.tree.served)), 0o755)
        with asUser(65534):
            self.assertNotFound([b"/hello.txt", b"/sub/", b"/sub/inner.txt", b"/inside"])
            listing = self.listing(b"/")
        self.assertNotIn(b"hello.txt", listing)
        self.assertNotIn(b'"sub/"', listing)
        self.assertIn(b'"site/"', listing)

    @contextmanager
    def duringLookup(self, change: Callable[[], None]) -> Iterator[None]:
        """
        Within the block, make C{change} to the tree just after the folder
        resolves a path and before it opens it, once.
        """
        realpath = os.path.realpath
        changes = [change]

        def racing(path: str) -> str:
            resolved = realpath(path)
            if changes and path != realpath(self.tree.served):
                changes.pop()()
            return resolved

        self.patch(folder.os.path, "realpath", racing)
        yield
        self.assertEqual(changes, [])

    def test_linkSwappedIn(self) -> None:
        """
        A folder replaced by a link out of the served folder between the
        check and the open is not followed: 404.
        """
        sub = os.path.join(self.tree.served, "sub")

        def swap() -> None:
            os.rename(sub, sub + "-old")
            os.symlink(self.tree.outside, sub)

        with self.duringLookup(swap):
            self.assertNotFound([b"/sub/secret.pem"])

    def test_rootReplaced(self) -> None:
        """
        The folder served is the one opened: once it is moved away and a
        link to a folder holding a secret, or a folder of its own holding
        one, takes its place between two requests, every request answers
        404 and the secret is never served.
        """
        served = self.tree.served
        self.assertEqual(self.fetch(b"/hello.txt").body, CONTENT)
        os.rename(served, served + "-old")
        os.symlink(self.tree.outside, served)
        self.assertNotFound([b"/secret.pem", b"/hello.txt", b"/"])
        os.unlink(served)
        os.mkdir(served)
        os.link(os.path.join(self.tree.outside, "secret.pem"), os.path.join(served, "secret.pem"))
        self.assertNotFound([b"/secret.pem", b"/hello.txt", b"/"])

    def test_closed(self) -> None:
        """
        Once closed, the folder answers 404 to every request.
        """
        self.served.close()
        self.assertNotFound([b"/hello.txt", b"/", b"/sub/inner.txt"])

    def test_fileVanishes(self) -> None:
        """
        A file deleted between the check and the open answers 404, where
        Twisted's static files answered 500 with a traceback.
        """
        path = os.path.join(self.tree.served, "hello.txt")
        with self.duringLookup(lambda: os.unlink(path)):
            self.assertEqual(self.fetch(b"/hello.txt").code, 404)

    def test_hidden(self) -> None:
        """
        Hidden files and folders, and links to them, answer 404 and are not
        listed.
        """
        self.assertNotFound([b"/.hidden.txt", b"/.git/config", b"/.git/", b"/toHidden"])
        listing = self.listing(b"/")
        for name in (b".hidden", b".git", b"toHidden"):
            self.assertNotIn(name, listing)

    def test_hiddenAllowed(self) -> None:
        """
        With hidden files allowed, hidden files, folders and links to them
        are served and listed; C{.} and C{..} still answer 404.
        """
        self.served.hiddenFiles = True
        for target in (b"/.hidden.txt", b"/.git/config", b"/toHidden"):
            self.assertEqual(self.fetch(target).body, filefuzz.HIDDEN, target)
        listing = self.listing(b"/")
        for name in (b'".hidden.txt"', b'".git/"', b'"toHidden"'):
            self.assertIn(name, listing)
        self.assertNotFound([b"/./hello.txt", b"/../outside/secret.pem", b"/outFile"])

    def test_listing(self) -> None:
        """
        A folder's listing shows, folders first, exactly the entries a
        request can fetch, with escaped names; a folder named without its
        final slash is redirected to it; a folder with an index answers
        with the index.
        """
        body = self.listing(b"/")
        entries = [line.split(b'"')[1] for line in body.splitlines() if b"<a href=" in line]
        self.assertEqual(
            entries,
            [b"insideDir/", b"site/", b"sub/", b"hello.txt", b"inside"],
        )
        redirect = self.fetch(b"/insideDir?x=1")
        self.assertEqual((redirect.code, redirect.headers[b"location"]), (301, b"insideDir/"))
        self.assertEqual(self.fetch(b"/site/").body, filefuzz.FILES["site/index.html"])
        with open(os.path.join(self.tree.served, "<b>&.txt"), "wb"):
            pass
        body = self.listing(b"/")
        self.assertIn(b'href="%3Cb%3E%26.txt">&lt;b&gt;&amp;.txt</a>', body)


class FileSiteTests(SynchronousTestCase):
    """
    Tests for L{FileSite}'s request log.
    """

    def logged(self, debug: bool) -> list[str]:
        path = self.mktemp()
        os.mkdir(path)
        served = ServedFolder.open(path)
        self.addCleanup(served.close)
        site = FileSite("files", debug, served)
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
