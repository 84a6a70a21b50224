"""
Tests for L{letsencrypt_resource.ftpspassive.PassivePort}: the quiet
listening socket of a passive data port, on loopback, with a fake reactor
that records what the port asks of it.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.ftpspassive import PassivePort
from letsencrypt_resource.readturns import PER_TURN, readTurnsOf
from letsencrypt_resource.turnports import TurnServer


class _Reactor(Clock):
    """
    Records the readers added and removed, in order; its calls are a
    C{Clock}'s.
    """

    def __init__(self) -> None:
        super().__init__()
        self.readers: dict[Any, None] = {}

    def addReader(self, reader: Any) -> None:
        self.readers[reader] = None

    def removeReader(self, reader: Any) -> None:
        self.readers.pop(reader, None)

    @property
    def adopted(self) -> list[tuple[str, int]]:
        """
        The client address of each connection adopted and reading.
        """
        return [
            (reader.getPeer().host, reader.getPeer().port)
            for reader in self.readers
            if isinstance(reader, TurnServer)
        ]


class _FailingSocket:
    """
    A listening socket whose accept fails with one error number.
    """

    def __init__(self, number: int):
        self._number = number
        self.closed = False

    def accept(self) -> Any:
        raise OSError(self._number, os.strerror(self._number))

    def close(self) -> None:
        self.closed = True


class PassivePortTests(SynchronousTestCase):
    """
    L{PassivePort} listens, hands connections to the reactor one per read,
    and stops.
    """

    def listen(self, interface: str = "127.0.0.1") -> tuple[_Reactor, PassivePort]:
        """
        A port on any free port of C{interface}, stopped at the end.
        """
        reactor = _Reactor()
        port = PassivePort.listen(reactor, 0, Factory.forProtocol(Protocol), interface)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.closeAdopted, reactor)
        return reactor, port

    @staticmethod
    def closeAdopted(reactor: _Reactor) -> None:
        """
        Close the sockets of the connections C{reactor} reads.
        """
        for reader in reactor.readers:
            if isinstance(reader, TurnServer):
                reader.socket.close()

    def connect(self, port: PassivePort) -> socket.socket:
        """
        A client connection to C{port}, closed at the end.
        """
        address = port.getHost()
        client = socket.create_connection((address.host, address.port))
        self.addCleanup(client.close)
        return client

    def test_oneConnectionPerRead(self) -> None:
        """
        Each read of the port adopts one waiting connection, whatever
        the number waiting: a burst is spread over reactor passes.  The
        connection adopted reads under the reactor's turns.
        """
        reactor, port = self.listen()
        self.assertEqual(list(reactor.readers), [port])
        clients = [self.connect(port) for _ in range(3)]
        port.doRead()
        self.assertEqual(reactor.adopted, [clients[0].getsockname()])
        port.doRead()
        port.doRead()
        self.assertEqual(reactor.adopted, [client.getsockname() for client in clients])
        port.doRead()
        self.assertEqual(len(reactor.adopted), 3)

    def test_acceptsWhenTurnFull(self) -> None:
        """
        A port read when the reactor's turn has no read left still accepts
        (accepting waits for no turn) and keeps reading; the connection
        accepted is the one that waits for its turn.
        """
        reactor, port = self.listen()
        turns = readTurnsOf(reactor)
        client = self.connect(port)
        for _ in range(PER_TURN):
            turns.mayRead(object())  # type: ignore[arg-type]
        port.doRead()
        self.assertEqual(reactor.adopted, [client.getsockname()])
        self.assertIn(port, reactor.readers)

    def test_outOfDescriptors(self) -> None:
        """
        A port whose accept fails for want of file descriptors closes,
        rather than stay readable and spin the reactor; one whose accept
        finds none waiting keeps listening.
        """
        for number, listening in [
            (errno.EMFILE, False),
            (errno.ENFILE, False),
            (errno.EAGAIN, True),
        ]:
            reactor = _Reactor()
            failing = _FailingSocket(number)
            port = PassivePort(reactor, Factory.forProtocol(Protocol), failing)  # type: ignore[arg-type]
            port.startListening()
            port.doRead()
            self.assertEqual(port in reactor.readers, listening, errno.errorcode[number])
            self.assertEqual(failing.closed, not listening, errno.errorcode[number])

    def test_stopListening(self) -> None:
        """
        A stopped port is no longer read and its port is free again;
        stopping it twice does nothing more.
        """
        reactor, port = self.listen()
        number = port.getHost().port
        port.stopListening()
        port.stopListening()
        self.assertEqual(list(reactor.readers), [])
        again = PassivePort.listen(reactor, number, Factory(), "127.0.0.1")
        again.stopListening()

    def test_portTaken(self) -> None:
        """
        A port already listened on cannot be listened on.
        """
        reactor, port = self.listen()
        self.assertRaises(
            CannotListenError,
            PassivePort.listen,
            reactor,
            port.getHost().port,
            Factory(),
            "127.0.0.1",
        )

    def test_addresses(self) -> None:
        """
        The port's address is IPv4 or IPv6 as the interface it listens on.
        """
        _, port = self.listen()
        self.assertIsInstance(port.getHost(), IPv4Address)
        try:
            _, port6 = self.listen("::1")
        except CannotListenError:
            raise self.skipTest("no IPv6 loopback") from None
        self.assertEqual(port6.getHost().host, "::1")
        self.assertIsInstance(port6.getHost(), IPv6Address)
