"""
Tests for L{letsencrypt_resource.drain}: a listener stopped waits for its
open connections, within a bound.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.static import Data
from zope.interface import implementer

from letsencrypt_resource.drain import GRACE, JOIN, Draining
from letsencrypt_resource.httplimits import LimitedSite
from letsencrypt_resource.https import HTTPSFileService
from letsencrypt_resource.listening import Listener
from tests.helpers import connectInMemory, newSigner, provisionalFor
from tests.helpers.serviceoptions import makeOptions

#: A keep-alive request.
KEEP_ALIVE = b"GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n"


class Echo(Protocol):
    """
    Sends back what it receives.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Refusing(Factory):
    """
    Refuses every connection.
    """

    def buildProtocol(self, addr: object) -> None:
        return None


def connect(factory: Draining) -> Protocol:
    """
    One connection through C{factory}, on a memory transport.
    """
    protocol = factory.buildProtocol(None)
    assert protocol is not None
    protocol.makeConnection(StringTransport())
    return protocol


def disconnect(protocol: Protocol) -> None:
    """
    End the connection of C{protocol}.
    """
    protocol.connectionLost(Failure(ConnectionError("closed")))


class DrainingTests(SynchronousTestCase):
    """
    Tests for L{Draining}, on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = Draining(Factory.forProtocol(Echo))
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_nothingOpenFiresAtOnce(self) -> None:
        """
        With no connection open, the stop does not wait.
        """
        self.successResultOf(self.factory.drained(self.clock, "here"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waitsForLastConnection(self) -> None:
        """
        The wait ends when the last connection open ends, not before.
        """
        first, second = connect(self.factory), connect(self.factory)
        waiting = self.factory.drained(self.clock, "here")
        disconnect(first)
        self.assertNoResult(waiting)
        disconnect(second)
        self.successResultOf(waiting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_boundedByGrace(self) -> None:
        """
        Connections still open after the grace are cut: the wait ends,
        with event 20227 telling how many, and a connection that ends
        later changes nothing.
        """
        opened = connect(self.factory)
        waiting = self.factory.drained(self.clock, "TCP 127.0.0.1:4433")
        self.clock.advance(GRACE - 0.1)
        self.assertNoResult(waiting)
        self.assertFalse(opened.transport.disconnected)
        self.clock.advance(0.1)
        self.successResultOf(waiting)
        self.assertTrue(opened.transport.disconnected)
        [event] = [e for e in self.events if e.get("event_id") == 20227]
        self.assertEqual(
            (event["connections"], event["listeners"], event["listener"]),
            (1, 1, "TCP 127.0.0.1:4433"),
        )
        disconnect(opened)

    def test_oneTimerForAStop(self) -> None:
        """
        The listeners that begin to wait within L{JOIN} seconds of each
        other share one timer, which fires L{GRACE} seconds after the last
        of them began, and one event 20227 counts the listeners and the
        connections still open then; a listener that begins later has a
        timer of its own.
        """
        factories = [Draining(Factory.forProtocol(Echo)) for _ in range(4)]
        opened = [connect(factories[0]), connect(factories[0]), connect(factories[1])]
        opened += [connect(factories[2]), connect(factories[3])]
        waits = [factories[0].drained(self.clock, "first")]
        self.clock.advance(JOIN)
        waits += [factories[1].drained(self.clock, "second")]
        waits += [factories[2].drained(self.clock, "third")]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        disconnect(opened[3])
        self.successResultOf(waits[2])
        self.clock.advance(0.5)
        late = factories[3].drained(self.clock, "late")
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.clock.advance(GRACE - 0.5 - 0.1)
        self.assertNoResult(waits[0])
        self.clock.advance(0.1)
        for waiting in waits:
            self.successResultOf(waiting)
        self.assertNoResult(late)
        [event] = [e for e in self.events if e.get("event_id") == 20227]
        self.assertEqual(
            (event["listeners"], event["connections"], event["listener"]), (2, 3, "first")
        )
        self.clock.advance(0.5)
        self.successResultOf(late)
        self.assertEqual(len([e for e in self.events if e.get("event_id") == 20227]), 2)
        for protocol in opened[:3] + opened[4:]:
            disconnect(protocol)

    def test_refusedConnection(self) -> None:
        """
        A connection the wrapped factory refuses (it builds no protocol) is
        refused, not counted.
        """
        factory = Draining(Refusing())
        self.assertIsNone(factory.buildProtocol(None))
        self.successResultOf(factory.drained(self.clock, "here"))

    def test_listenerWaits(self) -> None:
        """
        L{Listener.stopListening} fires once the port has stopped and the
        connections it accepted have ended.
        """
        memory = MemoryReactorClock()
        listener = Listener(
            lambda: serverFromString(memory, "tcp:4433:interface=127.0.0.1"),
            Factory.forProtocol(Echo),
            memory,
            "here",
        )
        self.successResultOf(listener.start())
        [(_, factory, _, _)] = memory.tcpServers
        opened = connect(factory)
        stopped = listener.stopListening()
        self.assertNoResult(stopped)
        disconnect(opened)
        self.successResultOf(stopped)


class GracefulStopTests(TestCase):
    """
    A real listener on loopback, stopped while a client is connected.
    """

    async def test_openConnectionFinishes(self) -> None:
        """
        Once stopped, the listener refuses new connections at once, while
        the connection it accepted before goes on until its client ends
        it; then the stop is over.
        """
        listener = Listener(
            lambda: serverFromString(reactor, "tcp:0:interface=127.0.0.1"),
            Factory.forProtocol(Echo),
            reactor,
            "here",
        )
        port = await listener.start()
        number = port.getHost().port
        client = socket.create_connection(("127.0.0.1", number), timeout=5)
        self.addCleanup(client.close)
        await deferLater(reactor, 0.1, lambda: None)
        ended: Deferred[None] = Deferred()
        listener.stopListening().addCallback(ended.callback)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertNoResult(ended)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", number), timeout=5).close()

        def exchange() -> bytes:
            client.sendall(b"still here")
            answer = client.recv(100)
            client.close()
            return answer

        answer = await deferToThread(exchange)
        self.assertEqual(answer, b"still here")
        await ended

    async def test_idleKeepAliveClosedAtStop(self) -> None:
        """
        An HTTPS service stopped while a client keeps an idle keep-alive
        connection (and answers no TLS close_notify) closes it: the stop
        ends well within the grace, with no event 20227, and the client's
        next request on that connection gets no answer (no 404).
        """
        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, "hello.txt"), "wb") as stream:
            stream.write(b"hello")
        service = HTTPSFileService(attrs.evolve(makeOptions(folder), port=0), reactor)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service.startService()
        self.addCleanup(service.stopService)
        service.consumer.useCertificate(provisionalFor(newSigner()))
        await deferLater(reactor, 0.1, lambda: None)
        [port] = [e["port"] for e in events if e.get("event_id") == 20156]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = b"GET /hello.txt HTTP/1.1\r\nHost: example.com\r\n\r\n"

        def first() -> tuple[ssl.SSLSocket, bytes]:
            client = context.wrap_socket(socket.create_connection(("127.0.0.1", port), 5))
            client.sendall(request)
            answer = b""
            while not answer.endswith(b"hello"):
                answer += client.recv(4096)
            return client, answer

        client, answer = await deferToThread(first)
        self.addCleanup(client.close)
        self.assertIn(b"200 OK", answer)
        began = reactor.seconds()
        await service.stopService()
        self.assertLess(reactor.seconds() - began, GRACE)
        self.assertEqual([e for e in events if e.get("event_id") == 20227], [])

        def second() -> bytes:
            try:
                client.sendall(request)
                return client.recv(4096)
            except (OSError, ssl.SSLError):
                return b""

        self.assertEqual(await deferToThread(second), b"")


class HandshakeForwardedTests(SynchronousTestCase):
    """
    A protocol under the draining wrapper still hears of a TLS handshake
    started later on its connection.
    """

    def test_handshakeForwarded(self) -> None:
        """
        The wrapper provides C{IHandshakeListener} and passes
        C{handshakeCompleted} on: explicit FTPS seals its session's TLS
        cache there (without it, a refused data connection's session
        could be resumed).
        """

        @implementer(IHandshakeListener)
        class Listening(Protocol):
            completed = 0

            def handshakeCompleted(self) -> None:
                self.completed += 1

        protocol = Draining(Factory.forProtocol(Listening)).buildProtocol(None)
        assert protocol is not None
        self.assertTrue(IHandshakeListener.providedBy(protocol))
        protocol.handshakeCompleted()
        self.assertEqual(protocol.wrappedProtocol.completed, 1)


class ClosedWhenIdleTests(SynchronousTestCase):
    """
    Tests for L{LimitedSite.closeIdle}: the keep-alive connections of a
    site whose listener stops close once idle.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        root = Resource()
        root.putChild(b"hello", Data(b"hello", "text/plain"))
        self.site = LimitedSite(root, reactor=self.clock)

    def test_idleClosedAtOnce(self) -> None:
        """
        A keep-alive connection idle between requests is closed at once.
        """
        connection = connectInMemory(self.site, clock=self.clock)
        connection.send(KEEP_ALIVE)
        self.assertIn(b"200 OK", connection.collector.received)
        self.assertIsNone(connection.collector.lostReason)
        self.site.closeIdle()
        connection.pump.flush()
        self.assertIsNotNone(connection.collector.lostReason)
        self.assertEqual(self.site.channels, set())

    def test_requestUnderWay(self) -> None:
        """
        A request whose headers are coming is answered with
        C{Connection: close}, then its connection closes.
        """
        connection = connectInMemory(self.site, clock=self.clock)
        connection.send(KEEP_ALIVE[:-2])
        self.site.closeIdle()
        connection.pump.flush()
        self.assertIsNone(connection.collector.lostReason)
        connection.send(b"\r\n")
        self.assertIn(b"hello", connection.collector.received)
        self.assertIn(b"Connection: close", connection.collector.received)
        self.assertIsNotNone(connection.collector.lostReason)

    def test_newConnectionAnsweredOnce(self) -> None:
        """
        A connection that has sent no request yet (its TLS handshake may
        just have ended) is not closed at once, nor is one made once the
        site closes its idle connections: the first request of each is
        answered, with C{Connection: close}, then it closes.
        """
        early = connectInMemory(self.site, clock=self.clock)
        self.site.closeIdle()
        late = connectInMemory(self.site, clock=self.clock)
        for connection in (early, late):
            self.assertIsNone(connection.collector.lostReason)
            connection.send(KEEP_ALIVE)
            self.assertIn(b"hello", connection.collector.received)
            self.assertIn(b"Connection: close", connection.collector.received)
            self.assertIsNotNone(connection.collector.lostReason)
