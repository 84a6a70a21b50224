"""
A TCP listening port that opens and closes without a log line.

Twisted's TCP port logs "... starting on PORT" as it opens and "(... Port
PORT Closed)" as it closes, through the legacy log, whose lock the storage's
reader thread contends for at start: with thousands of services, those
lines were a third of the start-up's time once the reactor ran.  Events
20156, 20151 and 20209 say where the listeners listen.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.posixbase import PosixReactorBase

from .reactors import Reactor

#: Connections the kernel holds for a listener until it accepts them, for
#: every TCP listener the services open on an address and port (C{https},
#: the challenge site, FTPS control ports): a burst of 200 FTPS sessions
#: overflowed Twisted's 50 (the kernel logged SYN flooding and some
#: sessions took 20 s to start).
BACKLOG = 256


class QuietPort(tcp.Port):
    """
    Twisted's TCP server port, opened and closed without its log lines;
    the same port otherwise: it accepts, pauses and stops as Twisted's.
    The base of the FTPS services' control ports too
    (L{TurnPort <letsencrypt_resource.turnports.TurnPort>}).
    """

    def startListening(self) -> None:
        """
        Bind and listen on a new socket, then read from it: what Twisted's
        port does, but its "... starting on PORT" line.

        @raise CannotListenError: when the socket cannot be made, bound or
            listened on.
        """
        # Twisted's port keeps a descriptor in reserve, freed to accept and
        # close a connection when the process has none left.
        tcp._reservedFD.reserve()
        try:
            listening = self.createInternetSocket()
        except OSError as error:
            raise CannotListenError(self.interface, self.port, error) from None
        try:
            if self.addressFamily == socket.AF_INET6:
                listening.bind(tcp._resolveIPv6(self.interface, self.port))
            else:
                listening.bind((self.interface, self.port))
            listening.listen(self.backlog)
        except OSError as error:
            listening.close()
            raise CannotListenError(self.interface, self.port, error) from None
        self._realPortNumber = self.port or listening.getsockname()[1]
        self.factory.doStart()  # type: ignore[union-attr]
        self.connected = True
        self.socket = listening
        self.fileno = listening.fileno  # type: ignore[method-assign]
        self.numberAccepts = 100
        self.startReading()

    def createInternetSocket(self) -> socket.socket:
        """
        A socket that does not block and reuses addresses, as Twisted's,
        made so in fewer system calls: non-blocking as it is made, and not
        inherited by child processes already (as every Python socket).
        Each call lets the storage's reader thread take the interpreter
        (see L{letsencrypt_resource.setloading.LOAD_JOBS}).  Where the
        system has no C{SOCK_NONBLOCK} (macOS), the socket is made
        non-blocking after it is made.
        """
        nonBlocking = getattr(socket, "SOCK_NONBLOCK", 0)
        made = socket.socket(self.addressFamily, self.socketType | nonBlocking)
        if not nonBlocking:
            made.setblocking(False)
        made.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return made

    def _logConnectionLostMsg(self) -> None:
        """
        Log nothing as the port closes.
        """


def listenQuietly(
    reactor: Reactor, port: int, factory: IProtocolFactory, interface: str
) -> IListeningPort:
    """
    Listen with C{factory} on TCP C{port} of C{interface}, with a backlog
    of L{BACKLOG}: on a
    L{QuietPort} when the reactor's C{listenTCP} is Twisted's own for
    POSIX (which opens Twisted's port just so); with another reactor's
    (a test's, or one of another platform), through it.

    @raise CannotListenError: when it cannot listen there.
    """
    if type(reactor).listenTCP is not PosixReactorBase.listenTCP:
        listened: IListeningPort = reactor.listenTCP(port, factory, BACKLOG, interface)
        return listened
    quiet = QuietPort(port, factory, BACKLOG, interface, reactor)
    quiet.startListening()
    return quiet
