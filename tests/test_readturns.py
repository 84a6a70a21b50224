"""
Tests for L{letsencrypt_resource.readturns} and
L{letsencrypt_resource.turnports}: at most a few reads of FTPS connections
in one turn of the reactor, the rest in the turns after, none lost; and a
burst of real FTPS sessions through them.
"""

from __future__ import annotations

import io
import socket
import threading
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.quietport import BACKLOG
from letsencrypt_resource.readturns import PER_TURN, ReadTurns, readTurnsOf
from letsencrypt_resource.testing.ftpsclient import ImplicitFTPS, ResumingFTPS, clientContext
from letsencrypt_resource.turnports import TurnEndpoint, TurnPort, TurnServer
from tests.helpers.ftpscase import CONTENT, NAME, PASSWORD, USER, FTPSServiceCase

LOOPBACK = "127.0.0.1"


def endTurn(clock: Clock) -> None:
    """
    End the turn of C{clock}: run the one call L{ReadTurns} keeps for the
    end of a turn (C{Clock.advance(0)} would also run the next turn's).
    """
    [call] = clock.getDelayedCalls()
    clock.calls.remove(call)
    call.called = 1
    call.func(*call.args, **call.kw)


class _Reader:
    """
    A reader that reads when the turns allow, and records its reads.
    """

    def __init__(self, turns: ReadTurns, name: str, reads: list[str]):
        self._turns = turns
        self._name = name
        self._reads = reads
        self.ready = True

    def doRead(self) -> None:
        if self.ready and self._turns.mayRead(self):
            self._reads.append(self._name)
            self.ready = False
        elif self.ready:
            self.ready = False

    def readAgain(self) -> None:
        self.ready = True
        self.doRead()


class ReadTurnsTests(SynchronousTestCase):
    """
    L{ReadTurns} lets a turn read a few times, and the readers refused
    read in the turns after, a few a turn, in the order they came.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.turns = ReadTurns(self.clock, perTurn=2)
        self.reads: list[str] = []

    def reader(self, name: str) -> _Reader:
        return _Reader(self.turns, name, self.reads)

    def test_perTurn(self) -> None:
        """
        A turn may read C{perTurn} times; the readers refused read in the
        next turns, C{perTurn} a turn, first come first served, before a
        reader that came while they waited; none is lost.
        """
        readers = [self.reader(name) for name in "abcde"]
        for reader in readers:
            reader.doRead()
        self.assertEqual(self.reads, ["a", "b"])
        endTurn(self.clock)
        self.assertEqual(self.reads, ["a", "b", "c", "d"])
        late = self.reader("f")
        late.doRead()
        self.assertEqual(self.reads, ["a", "b", "c", "d"])
        endTurn(self.clock)
        self.assertEqual(self.reads, ["a", "b", "c", "d", "e", "f"])
        # One more turn starts the count again; then nothing is left to do.
        endTurn(self.clock)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.turns.mayRead(late))

    def test_toldReadCounted(self) -> None:
        """
        Readers told to read again may read in that turn even when a new
        reader found it full: their reads were counted when they were
        told.  Told once, each reads once.
        """
        readers = [self.reader(name) for name in "abcd"]
        for reader in readers:
            reader.doRead()
        told: list[_Reader] = []
        for reader in readers[2:]:
            reader.readAgain = lambda reader=reader: told.append(reader)  # type: ignore[method-assign]
        endTurn(self.clock)
        self.assertEqual(told, readers[2:])
        self.assertFalse(self.turns.mayRead(self.reader("new")))
        self.assertEqual([self.turns.mayRead(each) for each in told], [True, True])
        self.assertEqual([self.turns.mayRead(each) for each in told], [False, False])

    def test_readAgainFails(self) -> None:
        """
        A reader that fails to read again when told (the error is logged)
        leaves the readers after it their turns.
        """
        readers = [self.reader(name) for name in "abcde"]
        for reader in readers:
            reader.doRead()

        def fails() -> None:
            raise OSError("closed")

        readers[2].readAgain = fails  # type: ignore[method-assign]
        endTurn(self.clock)
        endTurn(self.clock)
        self.assertEqual(self.reads, ["a", "b", "d", "e"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_turnEndCancelled(self) -> None:
        """
        When the call that ends a turn is cancelled (trial cancels those
        left at the end of a test), the next read refused schedules a new
        one, and the readers refused still read.
        """
        readers = [self.reader(name) for name in "abc"]
        readers[0].doRead()
        [call] = self.clock.getDelayedCalls()
        call.cancel()
        for reader in readers[1:]:
            reader.doRead()
        self.assertEqual(self.reads, ["a", "b"])
        endTurn(self.clock)
        self.assertEqual(self.reads, ["a", "b", "c"])

    def test_sharedPerReactor(self) -> None:
        """
        The FTPS connections on one reactor share one L{ReadTurns};
        another reactor has its own.
        """
        clock = Clock()
        self.assertIs(readTurnsOf(clock), readTurnsOf(clock))
        self.assertIsNot(readTurnsOf(clock), readTurnsOf(Clock()))


class _Reactor(Clock):
    """
    The readers a transport or a port adds and removes; its calls are a
    C{Clock}'s.
    """

    def __init__(self) -> None:
        super().__init__()
        self.readers: set[Any] = set()

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)

    def removeWriter(self, writer: Any) -> None:
        pass


class _Received(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


class TurnServerTests(SynchronousTestCase):
    """
    A L{TurnServer} refused a read stops reading, its bytes left in the
    kernel; it reads them in a later turn, unless it was paused meanwhile.
    """

    def setUp(self) -> None:
        self.reactor = _Reactor()
        listening = socket.create_server((LOOPBACK, 0))
        self.addCleanup(listening.close)
        self.client = socket.create_connection(listening.getsockname())
        self.addCleanup(self.client.close)
        accepted, _ = listening.accept()
        self.addCleanup(accepted.close)
        accepted.setblocking(False)
        self.protocol = _Received()
        self.server = TurnServer.adopt(
            self.reactor,
            accepted.fileno(),
            accepted.family,
            Factory.forProtocol(lambda: self.protocol),
        )
        self.addCleanup(self.server.socket.close)
        self.turns = readTurnsOf(self.reactor)

    def fillTurn(self) -> None:
        """
        Take every read of the current turn.
        """
        filler = _Reader(self.turns, "filler", [])
        while self.turns.mayRead(filler):
            pass
        filler.ready = False

    def waitForBytes(self) -> None:
        """
        Wait until the server's socket holds what the client sent.
        """
        self.server.socket.setblocking(True)
        self.server.socket.recv(1, socket.MSG_PEEK)
        self.server.socket.setblocking(False)

    def test_readInLaterTurn(self) -> None:
        """
        A read refused takes nothing from the socket and stops reading;
        the next turn adds the connection back, and its read delivers the
        bytes.
        """
        self.assertIn(self.server, self.reactor.readers)
        self.client.sendall(b"USER anonymous\r\n")
        self.waitForBytes()
        self.fillTurn()
        self.assertIsNone(self.server.doRead())
        self.assertEqual(self.protocol.received, [])
        self.assertNotIn(self.server, self.reactor.readers)
        # The server resumes its reading while refused: not yet.
        self.server.resumeProducing()
        self.assertNotIn(self.server, self.reactor.readers)
        endTurn(self.reactor)
        self.assertIn(self.server, self.reactor.readers)
        self.server.doRead()
        self.assertEqual(self.protocol.received, [b"USER anonymous\r\n"])

    def test_pausedWhileWaiting(self) -> None:
        """
        A connection paused while it waited for its turn is not read when
        the turn comes, and reads again once resumed.
        """
        self.client.sendall(b"NOOP\r\n")
        self.waitForBytes()
        self.fillTurn()
        self.server.doRead()
        self.server.pauseProducing()
        endTurn(self.reactor)
        self.assertNotIn(self.server, self.reactor.readers)
        self.server.resumeProducing()
        self.assertIn(self.server, self.reactor.readers)
        self.server.doRead()
        self.assertEqual(self.protocol.received, [b"NOOP\r\n"])


class _Refusing(Factory):
    """
    Refuses the connections from one port of the client in two, as the
    per-address and session limits refuse a flood of connections.
    """

    protocol = Protocol

    def buildProtocol(self, addr: Any) -> Any:
        if addr.port % 2:
            return None
        return super().buildProtocol(addr)


class TurnPortTests(SynchronousTestCase):
    """
    A L{TurnPort} accepts whatever waits at every read, as Twisted's port
    does, even when the turn has no read left; its connections are
    L{TurnServer}s.
    """

    def setUp(self) -> None:
        self.reactor = _Reactor()
        self.port = TurnPort(0, _Refusing(), BACKLOG, LOOPBACK, self.reactor)
        self.port.startListening()
        self.addCleanup(self.closeAll)

    def closeAll(self) -> None:
        for reader in self.reactor.readers:
            reader.socket.close()

    def connect(self, count: int) -> list[socket.socket]:
        address = self.port.getHost()
        clients = [socket.create_connection((address.host, address.port)) for _ in range(count)]
        for client in clients:
            self.addCleanup(client.close)
        return clients

    def accepted(self) -> list[Any]:
        return [reader for reader in self.reactor.readers if reader is not self.port]

    def test_acceptsWhenTurnFull(self) -> None:
        """
        With the turn's reads taken and readers waiting for later turns,
        one read of the port takes every connection waiting: those the
        factory refuses are closed, the others become L{TurnServer}s; the
        port keeps reading.  (A port that waited its turn behind the reads
        let a flood of refused connections fill its backlog.)
        """
        turns = readTurnsOf(self.reactor)
        filler = _Reader(turns, "filler", [])
        while turns.mayRead(filler):
            pass
        clients = self.connect(12)
        self.port.doRead()
        kept = sorted(each.getsockname()[1] for each in clients if each.getsockname()[1] % 2 == 0)
        self.assertEqual(sorted(each.getPeer().port for each in self.accepted()), kept)
        self.assertTrue(all(isinstance(each, TurnServer) for each in self.accepted()))
        self.assertIn(self.port, self.reactor.readers)


class TurnEndpointTests(SynchronousTestCase):
    """
    L{TurnEndpoint} listens with a L{TurnPort} on a real reactor, and as
    Twisted's TCP endpoint on a reactor in memory.
    """

    def test_inMemory(self) -> None:
        """
        On a reactor in memory, it listens as C{TCP4ServerEndpoint} does,
        with the larger backlog.
        """
        reactor = MemoryReactorClock()
        factory = Factory.forProtocol(Protocol)
        self.successResultOf(TurnEndpoint(reactor, 2121, LOOPBACK).listen(factory))
        self.assertEqual(reactor.tcpServers, [(2121, factory, BACKLOG, LOOPBACK)])

    def test_turnPort(self) -> None:
        """
        On a reactor that reads sockets, it listens with a L{TurnPort}.
        """
        from twisted.internet import reactor

        port = self.successResultOf(
            TurnEndpoint(reactor, 0, LOOPBACK).listen(Factory.forProtocol(Protocol))
        )
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, TurnPort)
        self.assertIsInstance(port, tcp.Port)
        self.assertEqual(port.getHost().host, LOOPBACK)


class SessionBurstTests(FTPSServiceCase):
    """
    A burst of sessions, more than a turn reads, on the real reactor with
    real clients: every session starts and every transfer completes (the
    reads the turns held back are all read later).
    """

    implicit = False

    def burst(self, count: int) -> list[bytes | str]:
        """
        Start C{count} sessions at once, each from its own loopback
        address (the service allows 10 per address), each logging in and
        downloading; what each got, or its error.
        """
        outcomes: list[bytes | str] = [b""] * count
        start = threading.Barrier(count)

        def session(index: int) -> None:
            kind = ImplicitFTPS if self.implicit else ResumingFTPS
            client = kind(clientContext(self.caFile), NAME, resume=True)
            try:
                start.wait(30)
                client.connect(self.host, self.port, source_address=(f"127.0.3.{index + 1}", 0))
                client.login(USER, PASSWORD)
                client.prot_p()
                received = io.BytesIO()
                client.retrbinary("RETR own.txt", received.write)
                client.quit()
                outcomes[index] = received.getvalue()
            except Exception as error:
                outcomes[index] = repr(error)
            finally:
                client.close()

        threads = [threading.Thread(target=session, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return outcomes

    def countRefused(self) -> list[bool]:
        """
        Count the reads the reactor's turns refuse: one C{False} each.
        """
        turns = readTurnsOf(reactor)
        refused: list[bool] = []
        mayRead = turns.mayRead

        def counting(reader: Any) -> bool:
            allowed = mayRead(reader)
            if not allowed:
                refused.append(allowed)
            return allowed

        self.patch(turns, "mayRead", counting)
        return refused

    async def test_burst(self) -> None:
        """
        Three turns' worth of sessions at once all log in and download,
        and the turns held some of their reads back (they act: with no
        bound, none would be refused).
        """
        service = self.startService()
        self.assertIsInstance(service.listeningPort, TurnPort)
        refused = self.countRefused()
        count = 3 * PER_TURN
        outcomes = await self.inThread(self.burst, count)
        self.assertEqual(outcomes, [CONTENT] * count)
        self.assertNotEqual(refused, [])


class ImplicitSessionBurstTests(SessionBurstTests):
    """
    The burst on implicit FTPS, whose sessions build their TLS context as
    they are accepted.
    """

    implicit = True


class ServiceListenerTests(FTPSServiceCase):
    """
    An FTPS service on an address and port listens with a L{TurnPort} and
    its larger backlog; on an C{endpoint}, with the endpoint's own port.
    """

    def test_addressAndPort(self) -> None:
        """
        On an address and port: a L{TurnPort}, backlog L{BACKLOG}.
        """
        port = self.startService().listeningPort
        self.assertIsInstance(port, TurnPort)
        assert isinstance(port, TurnPort)
        self.assertEqual(port.backlog, BACKLOG)

    def test_endpoint(self) -> None:
        """
        On an C{endpoint}: Twisted's TCP port, not a L{TurnPort}.
        """
        port = self.startService(endpoint=f"tcp:0:interface={LOOPBACK}").listeningPort
        self.assertIsInstance(port, tcp.Port)
        self.assertNotIsInstance(port, TurnPort)
