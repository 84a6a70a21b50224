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
from functools import lru_cache
from types import ModuleType

from twisted.internet import abstract, base, tcp
from twisted.internet.address import IPv4Address, IPv6Address
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


def nonBlockingStream(sockets: ModuleType) -> tuple[int, int]:
    """
    What the socket module C{sockets} offers to make a socket non-blocking
    as it is made: its C{SOCK_NONBLOCK} where the system has it (not
    macOS), else 0; and the type of a L{QuietPort}'s socket, a stream with
    that flag.
    """
    flag: int = getattr(sockets, "SOCK_NONBLOCK", 0)
    return flag, sockets.SOCK_STREAM | flag


#: L{nonBlockingStream} of this system, found once at import, not for
#: each socket.
_NON_BLOCKING, _NON_BLOCKING_STREAM = nonBlockingStream(socket)


class QuietPort(tcp.Port):
    """
    Twisted's TCP server port, opened and closed without its log lines;
    the same port otherwise: it accepts, pauses and stops as Twisted's.
    The base of the FTPS services' control ports too
    (L{TurnPort <letsencrypt_resource.turnports.TurnPort>}).
    """

    def __init__(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
        reactor: Reactor | None = None,
    ):
        """
        The port Twisted's makes, with what it finds out about C{interface}
        (its address family) found once for each distinct address
        (L{addressFamily}), not once a port: with thousands of services on
        a few addresses, building Twisted's binding and parsing the address
        each time was a fifth of listening.
        """
        base.BasePort.__init__(self, reactor=reactor)
        self.port = port
        self.interface = interface
        self._reuseAddress = True
        self._reusePort = False
        self.factory = factory  # type: ignore[assignment]
        self.backlog = backlog
        self.addressFamily, self._addressType = addressFamily(interface)

    def startListening(self) -> None:
        """
        Bind and listen on a new socket, then read from it: what Twisted's
        port does, but its "... starting on PORT" line.

        @raise CannotListenError: when the socket cannot be made, bound or
            listened on, or the reactor cannot read it; the socket made is
            closed on any failure, and the factory stopped again when it
            was started.
        """
        # Twisted's port keeps a descriptor in reserve, freed to accept and
        # close a connection when the process has none left.
        tcp._reservedFD.reserve()
        try:
            listening = self.createInternetSocket()
        except OSError as error:
            raise CannotListenError(self.interface, self.port, error) from None
        started = False
        try:
            if self.addressFamily == socket.AF_INET6:
                host, flow, scope = resolvedIPv6(self.interface)
                listening.bind((host, self.port, flow, scope))
            else:
                listening.bind((self.interface, self.port))
            listening.listen(self.backlog)
            self._realPortNumber = self.port or listening.getsockname()[1]
            self.factory.doStart()  # type: ignore[union-attr]
            started = True
            self.connected = True
            self.socket = listening
            self.fileno = listening.fileno  # type: ignore[method-assign]
            self.numberAccepts = 100
            self.startReading()
        except BaseException as error:
            # Whatever failed (the bind, the listen, the reactor's taking
            # the socket, the factory's start), the socket is not left
            # bound until the collector finds it: a reload could not
            # listen there again, and clients would wait on a backlog
            # nobody accepts.
            self._abandon(listening, started)
            if isinstance(error, OSError):
                raise CannotListenError(self.interface, self.port, error) from None
            # What Twisted's port raises as it is (a port over 65535's
            # OverflowError, for an embedder's).
            raise

    def _abandon(self, listening: socket.socket, started: bool) -> None:
        """
        Undo a L{startListening} that failed: close C{listening}, forget
        it (as Twisted's port forgets its socket once closed), and stop
        the factory when it was C{started}.
        """
        listening.close()
        self._realPortNumber = None
        if self.connected:
            self.connected = False
            del self.socket
            del self.fileno
        if started:
            self.factory.doStop()  # type: ignore[union-attr]

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
        made = socket.socket(self.addressFamily, _NON_BLOCKING_STREAM)
        try:
            if not _NON_BLOCKING:
                made.setblocking(False)
            made.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except BaseException:
            made.close()
            raise
        return made

    def _logConnectionLostMsg(self) -> None:
        """
        Log nothing as the port closes.
        """


@lru_cache(maxsize=256)
def addressFamily(
    interface: str,
) -> tuple[socket.AddressFamily, type[IPv4Address] | type[IPv6Address]]:
    """
    The address family of a port on C{interface}, and the type of its
    addresses, as Twisted's TCP port finds them: IPv6 for an IPv6 address,
    else IPv4.  Kept for the last 256 addresses asked.
    """
    if abstract.isIPv6Address(interface):
        return socket.AF_INET6, IPv6Address
    return socket.AF_INET, IPv4Address


def resolvedIPv6(interface: str) -> tuple[str, int, int]:
    """
    The host, flow information and scope of the IPv6 address C{interface}
    as a socket binds it, as Twisted's port resolves it.  An address with
    a scope (C{fe80::1%eth0}) is resolved at each call: the scope's
    interface may be made again (a VPN, a VLAN, a veth) with a new index
    while the process runs.  One without is resolved once for each
    distinct address (the last 256 are kept): with thousands of services
    on C{::1}, resolving it for each was 0.07 s of CPU at 10,000.

    @raise OSError: when it is not a numeric IPv6 address, or its scope
        names no interface.
    """
    if "%" in interface:
        return _resolveIPv6(interface)
    return _resolveUnscoped(interface)


def _resolveIPv6(interface: str) -> tuple[str, int, int]:
    """
    Resolve C{interface} as L{resolvedIPv6} says, now.
    """
    host, _, flow, scope = tcp._resolveIPv6(interface, 0)
    return host, flow, scope


#: L{_resolveIPv6} of the last 256 addresses asked, for addresses without
#: a scope: their resolution never changes.
_resolveUnscoped = lru_cache(maxsize=256)(_resolveIPv6)


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
