"""
Tests for L{letsencrypt_resource.firsthandshakes} and the bound it puts on
the TLS contexts (and provisional signatures) built in one turn of the
reactor by L{letsencrypt_resource.tls.ReloadableServerTLS}.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from letsencrypt_resource.alpnpeek import HelloPeekFactory
from letsencrypt_resource.firsthandshakes import FirstHandshakes, firstHandshakesOf
from letsencrypt_resource.https import HTTPSFileService
from letsencrypt_resource.tls import ReloadableServerTLS
from tests.helpers import (
    Collector,
    connectInMemory,
    countSignatures,
    newSigner,
    peerCertificate,
    provisionalFor,
    tlsClientFactory,
)
from tests.helpers.serviceoptions import makeOptions

LOOPBACK = "127.0.0.1"


def oneTurn(clock: Clock) -> None:
    """
    Run the calls of C{clock} due now, as one turn of a real reactor does:
    a call they schedule for now runs in the next turn (C{Clock.advance}
    would run it too).
    """
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


class FirstHandshakesTests(SynchronousTestCase):
    """
    L{FirstHandshakes} lets a turn build a few contexts, and runs the
    builds that waited in the turns after, a few a turn, in order.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.bound = FirstHandshakes(self.clock, perTurn=2)
        self.calls: list[str] = []

    def build(self, name: str) -> None:
        """
        A build that waited: the turn that calls it counted it.
        """
        self.calls.append(name)

    def test_perTurn(self) -> None:
        """
        A turn may build C{perTurn} contexts; the next turn may again.
        """
        self.assertEqual([self.bound.mayGo() for _ in range(3)], [True, True, False])
        oneTurn(self.clock)
        self.assertEqual([self.bound.mayGo() for _ in range(3)], [True, True, False])

    def test_waitingInOrder(self) -> None:
        """
        The builds that waited run in the turns after, C{perTurn} a turn,
        in the order they came, the pauses of the turn's connections
        first; while some wait, a new connection may not build before
        them.
        """
        self.bound.mayGo()
        self.bound.mayGo()
        for name in "abcde":
            self.bound.later(partial(self.build, name), partial(self.calls.append, f"pause {name}"))
        self.assertEqual(self.calls, [])
        oneTurn(self.clock)
        self.assertEqual(
            self.calls, ["pause a", "pause b", "pause c", "pause d", "pause e", "a", "b"]
        )
        self.assertFalse(self.bound.mayGo())
        oneTurn(self.clock)
        oneTurn(self.clock)
        self.assertEqual(self.calls[-3:], ["c", "d", "e"])
        # One more turn starts the count again, and nothing is left to do.
        oneTurn(self.clock)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failingBuildLogged(self) -> None:
        """
        A pause or a build that waited and fails is logged; the others run
        all the same (they were dropped, and their connections stayed
        paused for good).
        """

        def fails() -> None:
            raise RuntimeError("the connection went away")

        self.bound.mayGo()
        self.bound.mayGo()
        self.bound.later(fails, fails)
        for name in "ab":
            self.bound.later(partial(self.build, name), partial(self.calls.append, f"pause {name}"))
        oneTurn(self.clock)
        oneTurn(self.clock)
        self.assertEqual(
            (self.calls, len(self.flushLoggedErrors(RuntimeError))),
            (["pause a", "pause b", "a", "b"], 2),
        )

    def test_sharedPerReactor(self) -> None:
        """
        The services on one reactor share one L{FirstHandshakes}; another
        reactor has its own.
        """
        clock = Clock()
        self.assertIs(firstHandshakesOf(clock), firstHandshakesOf(clock))
        self.assertIsNot(firstHandshakesOf(clock), firstHandshakesOf(Clock()))

    def test_httpsServicesShare(self) -> None:
        """
        The C{https} services on one reactor build their contexts under the
        reactor's shared L{FirstHandshakes}.
        """
        clock = MemoryReactorClock()
        services = [HTTPSFileService(makeOptions(self.mktemp()), clock) for _ in range(2)]
        self.assertEqual(
            {id(service.consumer.tls._firstHandshakes) for service in services},
            {id(firstHandshakesOf(clock))},
        )


class FakeTransport:
    """
    Records whether it is paused.
    """

    def __init__(self) -> None:
        self.paused: list[bool] = []

    def pauseProducing(self) -> None:
        self.paused.append(True)

    def resumeProducing(self) -> None:
        self.paused.append(False)


class FakeTLSProtocol:
    """
    What L{ReloadableServerTLS} reads of a TLS protocol: its transport.
    """

    def __init__(self) -> None:
        self.transport = FakeTransport()


class BoundedContextsTests(SynchronousTestCase):
    """
    L{ReloadableServerTLS} with a L{FirstHandshakes} builds at most a few
    contexts a turn: the connections beyond wait, paused, on a context
    without a certificate, and go on their own in a later turn.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.bound = FirstHandshakes(self.clock, perTurn=1)
        self.signer = newSigner()
        self.signed = countSignatures(self)

    def service(self, name: str) -> ReloadableServerTLS:
        """
        A service's TLS on a provisional certificate for C{name}, not
        signed yet.
        """
        tls = ReloadableServerTLS(firstHandshakes=self.bound)
        tls.setCertificate(provisionalFor(self.signer, (name,)))
        return tls

    def test_burstSignsAFewATurn(self) -> None:
        """
        First connections to many services in one turn sign and build one
        context (the turn's bound) at once; each later turn one more, each
        connection paused from the turn after it came until its context
        is set.
        """
        names = [f"s{i}.example.com" for i in range(4)]
        services = [self.service(name) for name in names]
        protocols = [FakeTLSProtocol() for _ in names]
        connections = [
            tls.serverConnectionForTLS(protocol)
            for tls, protocol in zip(services, protocols, strict=True)
        ]
        self.assertEqual(self.signed, [(names[0],)])
        self.assertEqual([p.transport.paused for p in protocols], [[], [], [], []])
        oneTurn(self.clock)
        self.assertEqual(self.signed, [(n,) for n in names[:2]])
        self.assertEqual(
            [p.transport.paused for p in protocols], [[], [True, False], [True], [True]]
        )
        oneTurn(self.clock)
        oneTurn(self.clock)
        self.assertEqual(self.signed, [(n,) for n in names])
        self.assertEqual([p.transport.paused[-1:] for p in protocols[1:]], [[False]] * 3)
        for tls, connection in zip(services, connections, strict=True):
            self.assertIs(connection.get_context(), tls._context)
        # One more turn starts the count again, and nothing is left to do.
        oneTurn(self.clock)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_oneServiceOneBuild(self) -> None:
        """
        The connections of one service that wait for its context wait for
        one build, counted once: they all go on in the turn that builds it,
        and the next service's connection in the turn after.
        """
        self.service("a.example.com").serverConnectionForTLS(FakeTLSProtocol())
        second, third = self.service("b.example.com"), self.service("c.example.com")
        protocols = [FakeTLSProtocol() for _ in range(3)]
        connections = [second.serverConnectionForTLS(protocol) for protocol in protocols]
        later = FakeTLSProtocol()
        third.serverConnectionForTLS(later)
        oneTurn(self.clock)
        self.assertEqual([p.transport.paused for p in protocols], [[True, False]] * 3)
        self.assertEqual(later.transport.paused, [True])
        for connection in connections:
            self.assertIs(connection.get_context(), second._context)
        oneTurn(self.clock)
        self.assertEqual(later.transport.paused, [True, False])
        self.assertEqual(
            self.signed, [(n,) for n in ("a.example.com", "b.example.com", "c.example.com")]
        )

    def test_failingResumeLogged(self) -> None:
        """
        A connection that waited and cannot go on is logged; the other
        connections of its service go on.
        """

        def fails() -> None:
            raise RuntimeError("the connection went away")

        self.service("a.example.com").serverConnectionForTLS(FakeTLSProtocol())
        second = self.service("b.example.com")
        failing, going = FakeTLSProtocol(), FakeTLSProtocol()
        failing.transport.resumeProducing = fails  # type: ignore[method-assign]
        second.serverConnectionForTLS(failing)
        second.serverConnectionForTLS(going)
        oneTurn(self.clock)
        self.assertEqual(going.transport.paused, [True, False])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_withoutProtocolBuiltAtOnce(self) -> None:
        """
        A caller without a protocol (FTPS's session) gets its context at
        once, beyond the turn's bound.
        """
        first, second = self.service("a.example.com"), self.service("b.example.com")
        first.serverConnectionForTLS(FakeTLSProtocol())
        second.serverConnectionForTLS(None)
        self.assertEqual(self.signed, [("a.example.com",), ("b.example.com",)])

    def test_builtContextNotBounded(self) -> None:
        """
        A service whose context is built serves its connections at once,
        whatever the turn built.
        """
        tls = self.service("a.example.com")
        tls.serverConnectionForTLS(FakeTLSProtocol())
        self.service("b.example.com").serverConnectionForTLS(protocol := FakeTLSProtocol())
        again = tls.serverConnectionForTLS(FakeTLSProtocol())
        self.assertIs(again.get_context(), tls._context)
        self.assertEqual(protocol.transport.paused, [])

    def test_handshakeAfterWaiting(self) -> None:
        """
        A real TLS connection that waited for its turn completes its
        handshake on its service's certificate.
        """
        first, second = self.service("a.example.com"), self.service("b.example.com")
        first.serverConnectionForTLS(FakeTLSProtocol())
        factory = TLSMemoryBIOFactory(
            second, False, Factory.forProtocol(Collector), clock=self.clock
        )
        connection = connectInMemory(
            factory, tlsClientFactory(self.signer, self.clock, "b.example.com"), self.clock
        )
        self.assertEqual(peerCertificate(connection).subject.rfc4514_string(), "CN=b.example.com")
        self.assertIsNone(connection.collector.lostReason)


class RefusingFirst(FirstHandshakes):
    """
    A L{FirstHandshakes} whose first C{refusals} answers are no, so that
    the first connections wait whatever turn they come in.
    """

    def __init__(self, reactor: Any, refusals: int):
        super().__init__(reactor, perTurn=1)
        self.refusals = refusals

    def mayGo(self) -> bool:
        if self.refusals:
            self.refusals -= 1
            return False
        return super().mayGo()


class Greeter(Protocol):
    """
    Sends C{ping} once connected, and fires L{received} with the peer's
    certificate and what came back once the server closes.
    """

    def __init__(self) -> None:
        self.received: Deferred[tuple[x509.Certificate, bytes]] = Deferred()
        self._data = b""
        self._peer: x509.Certificate | None = None

    def connectionMade(self) -> None:
        self.transport.write(b"ping")

    def dataReceived(self, data: bytes) -> None:
        self._data += data
        if self._peer is None:
            self._peer = self.transport.getPeerCertificate().to_cryptography()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._peer is None:
            self.received.errback(reason)
        else:
            self.received.callback((self._peer, self._data))


class Echo(Protocol):
    """
    Sends back what it receives.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class RealConnectionsTests(TestCase):
    """
    Real TLS connections over loopback, to listeners built as an C{https}
    service's (the ClientHello read first by
    L{letsencrypt_resource.alpnpeek.HelloPeek}), that wait for their
    context: they are paused, put on their context in a later turn, and
    complete their handshakes on their own services' certificates.
    """

    async def test_waitedConnectionsHandshake(self) -> None:
        """
        Four services on provisional certificates not signed yet, and the
        first connection to each refused a context at once: every client
        gets its echo, over its own service's certificate, signed once.
        """
        signer = newSigner()
        names = [f"s{i}.example.com" for i in range(4)]
        bound = RefusingFirst(reactor, refusals=len(names))
        signed = countSignatures(self)
        ports = []
        for name in names:
            tls = ReloadableServerTLS(firstHandshakes=bound)
            tls.setCertificate(provisionalFor(signer, (name,)))
            factory = TLSMemoryBIOFactory(tls, False, Factory.forProtocol(Echo))
            port = reactor.listenTCP(
                0, HelloPeekFactory(factory, lambda: None, reactor), interface=LOOPBACK
            )
            self.addCleanup(port.stopListening)
            ports.append(port)
        trusted = Certificate.loadPEM(signer.certificatePEM)
        greeters = []
        for name, port in zip(names, ports, strict=True):
            greeter = Greeter()
            greeters.append(greeter)
            endpoint = wrapClientTLS(
                optionsForClientTLS(name, trustRoot=trusted),
                TCP4ClientEndpoint(reactor, LOOPBACK, port.getHost().port),
            )
            await endpoint.connect(Factory.forProtocol(lambda greeter=greeter: greeter))
        results = await gatherResults([greeter.received for greeter in greeters])
        self.assertEqual(
            [(peer.subject.rfc4514_string(), data) for peer, data in results],
            [(f"CN={name}", b"ping") for name in names],
        )
        self.assertEqual(sorted(signed), [(name,) for name in names])
        self.assertEqual(bound.refusals, 0)
