"""
The passive data commands of the FTPS protocol (PASV, EPSV; PORT and EPRT
refused): one passive port at a time per session, bound on the control
connection's local address within the service's range, for one TLS
connection from the control connection's peer, and closed as soon as that
connection comes or fails to come in time.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
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

from . import events
from .ftpsdata import PeerOnlyTLSFactory, SecureDTPFactory

#: The reply to PASV or EPSV when no passive port is free.
NO_PASSIVE_PORT = "425 No passive port free, try again later."


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
