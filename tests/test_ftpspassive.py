"""
Tests for L{letsencrypt_resource.ftpspassive.PassivePort}: the quiet
listening socket of a passive data port, on loopback, with a fake reactor
that records what the port asks of it.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.ftpspassive import PassivePort


class _Reactor:
    """
    Records the readers added and removed, and the peer of each connection
    adopted.
    """

    def __init__(self) -> None:
        self.readers: set[Any] = set()
        self.adopted: list[tuple[str, int]] = []

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)

    def adoptStreamConnection(self, fd: int, family: int, factory: Any) -> None:
        with socket.fromfd(fd, family, socket.SOCK_STREAM) as connection:
            self.adopted.append(connection.getpeername()[:2])


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
        port = PassivePort.listen(reactor, 0, Factory(), interface)
        self.addCleanup(port.stopListening)
        return reactor, port

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
        the number waiting: a burst is spread over reactor passes.
        """
        reactor, port = self.listen()
        self.assertEqual(reactor.readers, {port})
        clients = [self.connect(port) for _ in range(3)]
        port.doRead()
        self.assertEqual(reactor.adopted, [clients[0].getsockname()])
        port.doRead()
        port.doRead()
        self.assertEqual(reactor.adopted, [client.getsockname() for client in clients])
        port.doRead()
        self.assertEqual(len(reactor.adopted), 3)

    def test_stopListening(self) -> None:
        """
        A stopped port is no longer read and its port is free again;
        stopping it twice does nothing more.
        """
        reactor, port = self.listen()
        number = port.getHost().port
        port.stopListening()
        port.stopListening()
        self.assertEqual(reactor.readers, set())
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
