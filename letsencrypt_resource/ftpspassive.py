"""
The passive data commands of the FTPS protocol (PASV, EPSV; PORT and EPRT
refused): one passive port at a time per session, bound on the control
connection's local address within the service's range, for one TLS
connection from the control connection's peer, and closed as soon as that
connection comes or fails to come in time.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReadDescriptor
from twisted.protocols.ftp import (
    CANT_OPEN_DATA_CNX,
    ENTERING_EPSV_MODE,
    ENTERING_PASV_MODE,
    EPSV_ALL_OK,
    BadCmdSequenceError,
    PASVIPv6NotImplementedError,
    PortConnectionError,
    encodeHostPort,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from . import events
from .ftpsdata import PeerOnlyTLSFactory, SecureDTPFactory
from .reactors import Reactor
from .turnports import TurnServer

#: The reply to PASV or EPSV when no passive port is free.
NO_PASSIVE_PORT = "425 No passive port free, try again later."

#: Why C{accept} fails when no connection can be taken until some other
#: file closes.
_NO_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: How many connections may wait to be accepted on a passive port (one is
#: expected; those from another address are closed at once).
BACKLOG = 8


@implementer(IListeningPort, IReadDescriptor)
class PassivePort:
    """
    A passive data port: a listening socket whose connections go to a
    factory, as Twisted's TCP port, but quiet (Twisted's logs two lines
    per port, that is per transfer) and taking at most one connection per
    reactor pass.
    """

    def __init__(self, reactor: Reactor, factory: IProtocolFactory, listening: socket.socket):
        self._reactor = reactor
        self._factory = factory
        self._socket = listening
        self._listening = False

    @classmethod
    def listen(
        cls, reactor: Reactor, port: int, factory: IProtocolFactory, interface: str = ""
    ) -> PassivePort:
        """
        Listen on C{port} (0 for any) of the numeric address C{interface}.

        @raise CannotListenError: when that port cannot be listened on.
        """
        try:
            family, _, _, _, address = socket.getaddrinfo(
                interface or "0.0.0.0",
                port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_NUMERICHOST | socket.AI_PASSIVE,
            )[0]
            listening = socket.socket(family, socket.SOCK_STREAM)
        except OSError as error:
            raise CannotListenError(interface, port, error) from error
        try:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind(address)
            listening.listen(BACKLOG)
        except OSError as error:
            listening.close()
            raise CannotListenError(interface, port, error) from error
        listening.setblocking(False)
        passive = cls(reactor, factory, listening)
        passive.startListening()
        return passive

    def startListening(self) -> None:
        self._listening = True
        self._reactor.addReader(self)

    def doRead(self) -> None:
        """
        Accept one connection and give it to the factory, which closes it
        by building no protocol for it.  Its reads go through the reactor's
        turns (L{letsencrypt_resource.readturns}); accepting does not wait.
        Out of file descriptors, the port closes: the socket would stay
        readable and the reactor would spin on it until the data factory's
        timeout, which now tells the client no connection came.
        """
        try:
            connection, _ = self._socket.accept()
        except OSError as error:
            if error.errno in _NO_RESOURCES:
                self.stopListening()
            # Otherwise none waiting, or one gone before it was taken.
            return
        with connection:
            connection.setblocking(False)
            TurnServer.adopt(self._reactor, connection.fileno(), connection.family, self._factory)

    def stopListening(self) -> None:
        if self._listening:
            self._listening = False
            self._reactor.removeReader(self)
            self._socket.close()

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor dropped the port (it is shutting down).
        """
        self.stopListening()

    def getHost(self) -> IPv4Address | IPv6Address:
        host, port = self._socket.getsockname()[:2]
        if self._socket.family == socket.AF_INET6:
            return IPv6Address("TCP", host, port)
        return IPv4Address("TCP", host, port)

    def fileno(self) -> int:
        return self._socket.fileno()

    def logPrefix(self) -> str:
        return "FTPS passive port"


class PassiveCommands:
    """
    PASV and EPSV for an C{FTP} subclass with a C{sessionTLS()}, whose
    factory has the service's passive options.
    """

    if TYPE_CHECKING:
        # Given by twisted.protocols.ftp.FTP and the protocol.
        dtpFactory: Any
        dtpInstance: Any
        dtpPort: Any
        dtpTimeout: int
        passivePortRange: Any
        factory: Any
        transport: Any
        _epsvAll: bool

        def sessionTLS(self) -> Any: ...

        def reply(self, key: str, *args: Any) -> None: ...

        def sendLine(self, line: bytes | str) -> None: ...

        def getDTPPort(self, factory: Any, interface: str = "") -> Any: ...

        def _validateNetworkProtocol(self, protocol: str) -> None: ...

    def ftp_PORT(self, address: str) -> None:
        self.sendLine("502 Active mode is not supported: use PASV or EPSV.")

    def ftp_EPRT(self, address: str) -> None:
        self.sendLine("502 Active mode is not supported: use PASV or EPSV.")

    def ftp_PASV(self) -> Deferred[Any] | None:
        if self._epsvAll:
            return fail(BadCmdSequenceError("may not send PASV after EPSV ALL"))
        host = self.factory.passiveAddress or _ipv4(self.transport.getHost().host)
        if host is None:
            return fail(PASVIPv6NotImplementedError())
        port = self._listenForData()
        if port is None:
            self.sendLine(NO_PASSIVE_PORT)
            return None
        self.reply(ENTERING_PASV_MODE, encodeHostPort(host, port))
        return self._dataConnected()

    def ftp_EPSV(self, protocol: str = "") -> Any:
        if protocol.upper() == "ALL":
            self._epsvAll = True
            return EPSV_ALL_OK
        if protocol:
            self._validateNetworkProtocol(protocol)
        port = self._listenForData()
        if port is None:
            self.sendLine(NO_PASSIVE_PORT)
            return None
        self.reply(ENTERING_EPSV_MODE, port)
        return self._dataConnected()

    def _listenForData(self) -> int | None:
        """
        Open a passive data port on the control connection's local address,
        for a TLS connection from its peer, and give its number, or
        C{None} when no port of the range is free (event 20238).
        """
        if self.dtpFactory is not None:
            self.cleanupDTP()
        factory = self.factory
        peer = self.transport.getPeer().host
        dtpFactory = SecureDTPFactory(
            self, factory.reactor, factory.requireSessionReuse, factory.warnings
        )
        tls = PeerOnlyTLSFactory(self.sessionTLS(), dtpFactory, peer, factory.warnings)
        self.passivePortRange = factory.passivePorts
        try:
            port = self.getDTPPort(tls, interface=self.transport.getHost().host)
        except CannotListenError as error:
            factory.warnings.emit(events.FTPS_NO_PASSIVE_PORT, client=peer, details=str(error))
            return None
        self.dtpPort, self.dtpFactory = port, dtpFactory
        dtpFactory.setTimeout(self.dtpTimeout)
        return int(port.getHost().port)

    def closePassivePort(self) -> None:
        """
        Stop listening on the passive data port, if open.
        """
        port, self.dtpPort = self.dtpPort, None
        if port is not None:
            port.stopListening()

    def cleanupDTP(self) -> None:
        """
        Close the passive port and cut the data connection, unless it is
        closing already (a download sending its last bytes), quietly:
        Twisted's logs the port at each PASV.  Called at the next PASV or
        EPSV, once no transfer runs, and when the session ends: a data
        connection never outlives its session.
        """
        self.closePassivePort()
        dtpFactory, self.dtpFactory = self.dtpFactory, None
        if dtpFactory is not None:
            dtpFactory.stopFactory()
        dtp, self.dtpInstance = self.dtpInstance, None
        if dtp is not None and dtp.isConnected and not dtp.transport.disconnecting:
            dtp.transport.abortConnection()

    def _dataConnected(self) -> Deferred[None]:
        """
        Hold the next command until the data connection comes, or answer
        425 when it does not in time.
        """

        def timedOut(failure: Failure) -> Any:
            failure.trap(PortConnectionError)
            return (CANT_OPEN_DATA_CNX,)

        assert self.dtpFactory is not None
        return self.dtpFactory.deferred.addCallbacks(lambda _: None, timedOut)


def _ipv4(host: str) -> str | None:
    """
    C{host} as the IPv4 address a PASV reply can carry, or C{None} for an
    IPv6 address.
    """
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address):
        return str(address.ipv4_mapped) if address.ipv4_mapped is not None else None
    return host
