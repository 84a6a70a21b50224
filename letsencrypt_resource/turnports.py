"""
TCP connections whose reads go through the reactor's
L{letsencrypt_resource.readturns.ReadTurns}: the connections of the FTPS
service's control port (on an address and port) and of its passive data
ports.  The ports themselves accept without waiting for a turn.

The bound sits under TLS: a TLS handshake, a command line, a session's end
all begin with a read of the socket.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, execute
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.posixbase import PosixReactorBase
from zope.interface import implementer

from .quietport import BACKLOG, QuietPort
from .readturns import readTurnsOf


class TurnServer(tcp.Server):
    """
    A TCP connection that reads only when the turn allows: refused, it
    stops reading until told to read again.  The reading that others ask
    for (pausing, resuming, closing) is kept apart, and applies once it
    reads again.
    """

    _refused = False
    _wantsReading = False

    @classmethod
    def adopt(cls, reactor: Any, fd: int, family: int, factory: IProtocolFactory) -> Any:
        """
        Take over the connected socket C{fd}, as the reactor's
        C{adoptStreamConnection} does for its own connections.
        """
        return cls._fromConnectedSocket(fd, family, factory, reactor)

    def doRead(self) -> Any:
        if not readTurnsOf(self.reactor).mayRead(self):
            self._refused = True
            self.reactor.removeReader(self)
            return None
        return super().doRead()

    def readAgain(self) -> None:
        self._refused = False
        if self._wantsReading:
            self.reactor.addReader(self)

    def startReading(self) -> None:
        self._wantsReading = True
        if not self._refused:
            super().startReading()

    def stopReading(self) -> None:
        self._wantsReading = False
        super().stopReading()


class TurnPort(QuietPort):
    """
    A TCP port whose connections are L{TurnServer}s.  The port itself
    accepts as Twisted's does, every pass of the reactor and as many as
    wait: accepting is cheap, and a port that waited its turn behind the
    connections' reads let a flood of connections refused at once fill
    its backlog, and legitimate ones could not connect.  What costs, a
    connection's first reads (its TLS handshake), waits for its turn.
    """

    transport = TurnServer


@implementer(IStreamServerEndpoint)
class TurnEndpoint:
    """
    Listens on a TCP port of an address with a L{TurnPort}.
    """

    def __init__(self, reactor: Any, port: int, interface: str):
        self._reactor = reactor
        self._port = port
        self._interface = interface

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        if not isinstance(self._reactor, PosixReactorBase):
            # A reactor that reads no socket itself (a test's in memory).
            return TCP4ServerEndpoint(self._reactor, self._port, BACKLOG, self._interface).listen(
                protocolFactory
            )
        return execute(self._listenNow, protocolFactory)

    def _listenNow(self, factory: IProtocolFactory) -> IListeningPort:
        port = TurnPort(self._port, factory, BACKLOG, self._interface, self._reactor)
        port.startListening()
        return port
