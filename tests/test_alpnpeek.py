"""
Tests for L{letsencrypt_resource.alpnpeek}: a connection costs no TLS work
until a whole ClientHello is in.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.alpnpeek import (
    FIRST_BYTES_DEADLINE,
    NO_CERTIFICATE_PERIOD,
    HelloPeekFactory,
)
from letsencrypt_resource.clienthello import HANDSHAKE_RECORD
from letsencrypt_resource.firsthandshakes import FirstHandshakes
from letsencrypt_resource.tls import ReloadableServerTLS
from tests.helpers import (
    Collector,
    InMemoryConnection,
    connectInMemory,
    countSignatures,
    newSigner,
    peerCertificate,
    provisionalFor,
    tlsClientFactory,
)


class Refusing(FirstHandshakes):
    """
    A L{FirstHandshakes} that refuses the next build when told to, so that
    the next connection waits for its context.
    """

    refuseNext = False

    def mayGo(self) -> bool:
        if self.refuseNext:
            self.refuseNext = False
            return False
        return super().mayGo()


class TCPLike(StringTransport):
    """
    A L{StringTransport} that, as a TCP transport, lets a closed
    connection be paused and resumed, to no effect.
    """

    def _checkState(self) -> None:
        pass


class FirstBytesTests(SynchronousTestCase):
    """
    Tests for L{HelloPeekFactory} in front of a service's TLS on a
    provisional certificate not signed yet.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.signer = newSigner()
        self.signed = countSignatures(self)
        self.firstHandshakes = Refusing(self.clock)
        self.tls = ReloadableServerTLS(firstHandshakes=self.firstHandshakes)
        self.tls.setCertificate(provisionalFor(self.signer))
        self.server = HelloPeekFactory(
            TLSMemoryBIOFactory(self.tls, False, Factory.forProtocol(Collector), clock=self.clock),
            lambda: self.tls.alpn,
            self.clock,
        )

    def test_silentConnection(self) -> None:
        """
        A connection that sends nothing signs nothing and builds no
        context, and is closed after L{FIRST_BYTES_DEADLINE} seconds.
        """
        self.assertClosedAtDeadline(connectInMemory(self.server, None, self.clock))
        self.assertEqual(self.signed, [])

    def assertClosedAtDeadline(self, connection: InMemoryConnection) -> None:
        """
        C{connection} is open until L{FIRST_BYTES_DEADLINE} seconds from
        now, and closed then.
        """
        self.clock.advance(FIRST_BYTES_DEADLINE - 1)
        connection.pump.flush()
        self.assertIsNone(connection.collector.lostReason)
        self.clock.advance(1)
        connection.pump.flush()
        self.assertIsNotNone(connection.collector.lostReason)

    def test_silentClosedAtStop(self) -> None:
        """
        A connection that sent nothing when its listener stops is closed
        then; one whose handshake began is left to its site.
        """
        self.server.doStart()
        silent = connectInMemory(self.server, None, self.clock)
        talking = connectInMemory(
            self.server, tlsClientFactory(self.signer, self.clock), self.clock
        )
        self.server.doStop()
        silent.pump.flush()
        talking.pump.flush()
        self.assertIsNotNone(silent.collector.lostReason)
        self.assertIsNone(talking.collector.lostReason)

    def test_notHandshake(self) -> None:
        """
        A connection whose first bytes begin no TLS handshake record is
        closed at once, having signed nothing; its deadline is gone.
        """
        connection = connectInMemory(self.server, None, self.clock)
        connection.send(b"\x00" * 64)
        self.assertIsNotNone(connection.collector.lostReason)
        self.assertEqual(self.signed, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def clientHello(self) -> bytes:
        """
        The first bytes a TLS client sends: its ClientHello.
        """
        client = tlsClientFactory(self.signer, self.clock).buildProtocol(None)
        transport = StringTransport()
        client.makeConnection(transport)
        return transport.value()

    def test_partialHello(self) -> None:
        """
        A connection that sends the beginning of a ClientHello and no more
        (a handshake record's first byte, or all of it but the last byte)
        signs nothing, and is closed at L{FIRST_BYTES_DEADLINE} seconds
        after it came.
        """
        hello = self.clientHello()
        for sent in (HANDSHAKE_RECORD, hello[:-1]):
            connection = connectInMemory(self.server, None, self.clock)
            connection.send(sent)
            self.assertClosedAtDeadline(connection)
        self.assertEqual(self.signed, [])

    def test_notClientHello(self) -> None:
        """
        A connection whose first handshake message is not a ClientHello, or
        whose first record is longer than a ClientHello may be, is closed
        at once, having signed nothing, before the rest is sent.
        """
        for sent in (
            # A handshake record holding an empty ServerHello (type 2).
            HANDSHAKE_RECORD + b"\x03\x01\x00\x04\x02\x00\x00\x00",
            # The header of a record of 65535 bytes.
            HANDSHAKE_RECORD + b"\x03\x01\xff\xff",
        ):
            connection = connectInMemory(self.server, None, self.clock)
            connection.send(sent)
            self.assertIsNotNone(connection.collector.lostReason)
        self.assertEqual(self.signed, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def noCertificateServer(self) -> HelloPeekFactory:
        """
        A factory whose service has no certificate it can present.
        """
        return HelloPeekFactory(
            TLSMemoryBIOFactory(
                ReloadableServerTLS(), False, Factory.forProtocol(Collector), clock=self.clock
            ),
            lambda: None,
            self.clock,
            "web",
        )

    def closeWithoutCertificate(self, server: HelloPeekFactory, advances: list[float]) -> list:
        """
        Advance the clock by each of C{advances} and connect with a
        ClientHello after each; the counts of events 20267 logged so far
        after each connection.
        """
        hello = self.clientHello()
        counts = []
        with capturedLogs() as logged:
            for advance in advances:
                self.clock.advance(advance)
                connection = connectInMemory(server, None, self.clock)
                connection.send(hello)
                self.assertIsNotNone(connection.collector.lostReason)
                counts.append([e["count"] for e in logged if e.get("event_id") == 20267])
            self.clock.advance(NO_CERTIFICATE_PERIOD)
            counts.append([e["count"] for e in logged if e.get("event_id") == 20267])
        self.assertEqual(self.flushLoggedErrors(), [])
        return counts

    def test_noCertificate(self) -> None:
        """
        When the TLS connection cannot be made at the ClientHello (no
        certificate to present), the connection is closed without a
        traceback, its TLS protocol never connected, and event 20267 tells
        so at most once in L{NO_CERTIFICATE_PERIOD} seconds, with the
        count of connections closed since: those closed sooner are logged
        once the period ends, even when no connection comes after them.
        """
        server = self.noCertificateServer()
        counts = self.closeWithoutCertificate(server, [0, 1, NO_CERTIFICATE_PERIOD - 2, 0.5])
        self.assertEqual(counts, [[1], [1], [1], [1], [1, 3]])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noCertificateBurstAtStop(self) -> None:
        """
        A listener that stops logs the connections it closed without a
        certificate and did not log yet, and leaves no call behind.
        """
        server = self.noCertificateServer()
        server.doStart()
        hello = self.clientHello()
        with capturedLogs() as logged:
            for _ in range(3):
                connection = connectInMemory(server, None, self.clock)
                connection.send(hello)
            server.doStop()
        self.assertEqual([e["count"] for e in logged if e.get("event_id") == 20267], [1, 2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lostWhileWaitingForContext(self) -> None:
        """
        A connection whose ClientHello waits for its context, and which is
        lost before a later turn builds it, is left alone then: nothing is
        logged.
        """
        hello = self.clientHello()
        self.firstHandshakes.refuseNext = True
        peek = self.server.buildProtocol(None)
        assert peek is not None
        transport = TCPLike()
        peek.makeConnection(transport)
        peek.dataReceived(hello)
        self.assertEqual(transport.producerState, "paused")
        peek.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handshake(self) -> None:
        """
        A TLS client gets the provisional certificate, signed at its first
        bytes; its deadline is gone.
        """
        connection = connectInMemory(
            self.server, tlsClientFactory(self.signer, self.clock), self.clock
        )
        self.assertEqual(peerCertificate(connection).subject.rfc4514_string(), "CN=example.com")
        self.assertEqual(self.signed, [("example.com",)])
        self.assertNotIn(
            FIRST_BYTES_DEADLINE, [call.getTime() for call in self.clock.getDelayedCalls()]
        )

    def test_contextWaits(self) -> None:
        """
        A connection whose context may not be built in the turn its first
        bytes came holds its ClientHello until a later turn builds it, then
        completes its handshake on it.
        """
        self.firstHandshakes.refuseNext = True
        connection = connectInMemory(
            self.server, tlsClientFactory(self.signer, self.clock), self.clock
        )
        self.assertFalse(self.firstHandshakes.refuseNext)
        self.assertEqual(peerCertificate(connection).subject.rfc4514_string(), "CN=example.com")
        self.assertIsNone(connection.collector.lostReason)
