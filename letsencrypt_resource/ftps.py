"""
The C{ftps} service type: an FTPS server (explicit or implicit) over a
folder, on a certificate from the resource.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    ITransport,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from . import events
from .alpnpeek import HelloPeekFactory
from .config import ServiceOptions
from .folder import ServedFolder
from .ftpsaccounts import FolderRealm, HtpasswdChecker, UsersFileError, loadAccounts
from .ftpsfiles import ServicePool
from .ftpsoptions import FTPSOptions
from .ftpsprotocol import FTPSProtocol
from .ftpsshell import removeStaleUploads
from .ftpsthrottle import LoginThrottle, WarningBudget, addressKey
from .ftpstls import SessionTLS
from .handshakes import HandshakeForwarding
from .https import HTTPSFileService
from .listening import Listener
from .reactors import Reactor
from .turnports import TurnEndpoint

#: The most sessions open at once from one address.
MAX_SESSIONS_PER_ADDRESS = 10
#: How long a session may stay idle, in seconds.
IDLE_TIMEOUT = 300
#: The threads that check passwords, for each service.
LOGIN_THREADS = 2
#: The threads that read and write the files of transfers, for each
#: service: a few, so that a slow disk holds up a few transfers at most,
#: never the reactor.
FILE_THREADS = 4


class FTPSFactory(ServerFactory):
    """
    Builds the control connections of one FTPS service.
    """

    protocol = FTPSProtocol
    userAnonymous = "anonymous"
    timeOut = IDLE_TIMEOUT
    welcomeMessage = "FTPS service ready"

    def __init__(
        self, service: FTPSService, portal: Portal, options: FTPSOptions, reactor: Reactor
    ):
        self.service = str(service.name)
        self._consumer = service.consumer
        self.portal = portal
        self.reactor = reactor
        self.implicit = options.implicit
        self.allowAnonymous = options.anonymous
        self.passivePorts = options.passivePorts or range(0, 1)
        self.passiveAddress = options.passiveAddress
        self.requireSessionReuse = options.requireSessionReuse
        self.throttle = LoginThrottle(reactor)
        self.warnings = WarningBudget(reactor, self.service)
        #: The sessions of the service, once it listens.
        self.sessions: SessionsPerAddress | None = None

    def holdSession(self, client: str) -> Callable[[], None]:
        """
        Keep a session's slot of the address C{client} taken after the
        session ended, until what is given is called.
        """
        if self.sessions is None:
            return lambda: None
        return self.sessions.hold(client)

    def sessionTLS(self) -> SessionTLS:
        """
        The TLS of a session that starts, on the newest certificate that
        can be presented, answering the service's TLS-ALPN-01 validation
        handshakes if it does.  The service's
        L{letsencrypt_resource.tls.ReloadableServerTLS} builds its context
        first, as for an C{https} service's handshake: a certificate whose
        key, read only now, cannot be used is logged and the earlier one
        stays in service; without an earlier one, the resource is told at
        once (the set goes on a provisional certificate and is ordered
        again).

        @raise letsencrypt_resource.tls.NoCertificateYet: when there is
            none to present.
        """
        tls = self._consumer.tls
        tls.serverConnectionForTLS(None)
        # A context was built: there is a certificate.
        assert tls.certifiedKey is not None
        return SessionTLS(tls.certifiedKey, tls.alpn)

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        protocol: Any = super().buildProtocol(addr)
        protocol.portal = self.portal
        protocol.timeOut = self.timeOut
        return protocol


class _ImplicitFactory(HelloPeekFactory):
    """
    Implicit FTPS: TLS from the first byte on the session's own context,
    TLS-ALPN-01 validations answered as on an https port.  The session's
    TLS is made only once a whole ClientHello is in (see L{HelloPeek
    <letsencrypt_resource.alpnpeek.HelloPeek>}); a connection comes to
    nothing when there is no certificate to present: it is closed then
    (event 20241, rate-limited), before any TLS.
    """

    def __init__(self, ftps: FTPSFactory, tls: Any, reactor: Reactor):
        """
        @param tls: The service's L{letsencrypt_resource.tls.ReloadableServerTLS}.
        """
        super().__init__(
            TLSMemoryBIOFactory(_ImplicitTLS(), False, ftps, clock=reactor),
            lambda: tls.alpn,
            reactor,
            ftps.service,
        )
        self._ftps = ftps

    def connectTLS(self, tls: TLSMemoryBIOProtocol, transport: ITransport) -> None:
        """
        Give the session its TLS, then connect it.

        @raise letsencrypt_resource.tls.NoCertificateYet: when there is no
            certificate to present.
        """
        cast(Any, tls.wrappedProtocol).useTLS(self._ftps.sessionTLS())
        super().connectTLS(tls, transport)

    def noCertificate(self, client: str) -> None:
        self._ftps.warnings.emit(events.FTPS_NO_CERTIFICATE, client=client)


@implementer(IOpenSSLServerConnectionCreator)
class _ImplicitTLS:
    """
    The TLS of implicit FTPS: each control connection on its session's own
    context.
    """

    def serverConnectionForTLS(self, tlsProtocol: Any) -> Any:
        return tlsProtocol.wrappedProtocol.sessionTLS().serverConnectionForTLS(tlsProtocol)


class SessionsPerAddress(WrappingFactory[HandshakeForwarding]):
    """
    Closes at once a connection when C{maxSessions} are open, or when its
    address (an IPv6 /64, see L{addressKey}) already has
    L{MAX_SESSIONS_PER_ADDRESS} open.
    """

    protocol = HandshakeForwarding

    def __init__(self, wrappedFactory: IProtocolFactory, warnings: WarningBudget, maxSessions: int):
        super().__init__(wrappedFactory)
        self._warnings = warnings
        self._maxSessions = maxSessions
        self._open: dict[str, int] = {}
        self._closing: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> Any:
        client = str(getattr(addr, "host", ""))
        host = addressKey(client)
        if len(self.protocols) >= self._maxSessions:
            self._warnings.emit(events.FTPS_SESSIONS_FULL, client=client, limit=self._maxSessions)
            return None
        if self._open.get(host, 0) >= MAX_SESSIONS_PER_ADDRESS:
            self._warnings.emit(
                events.FTPS_SESSION_LIMIT, client=client, limit=MAX_SESSIONS_PER_ADDRESS
            )
            return None
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        protocol = HandshakeForwarding(self, wrapped)
        self._open[host] = self._open.get(host, 0) + 1
        protocol._sessionHost = host  # type: ignore[attr-defined]
        return protocol

    def hold(self, client: str) -> Callable[[], None]:
        """
        Take a slot of the address C{client}, until what is given is
        called (once).
        """
        host = addressKey(client)
        self._open[host] = self._open.get(host, 0) + 1
        released: list[None] = []

        def release() -> None:
            if not released:
                released.append(None)
                self._release(host)

        return release

    def _release(self, host: str) -> None:
        left = self._open.pop(host, 1) - 1
        if left > 0:
            self._open[host] = left

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        self._release(protocol._sessionHost)
        if not self.protocols:
            closing, self._closing = self._closing, []
            for deferred in closing:
                deferred.callback(None)

    def closeAll(self) -> Deferred[None]:
        """
        Cut every open session; the Deferred fires once they are all gone.
        """
        if not self.protocols:
            return succeed(None)
        closing: Deferred[None] = Deferred()
        self._closing.append(closing)
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()
        return closing


class FTPSService(HTTPSFileService):
    """
    Serves C{options.path} over FTPS, as L{HTTPSFileService} serves it over
    HTTPS: the same certificate life, the same folder life.  The accounts
    file is read when the service starts.
    """

    _log = Logger()

    def __init__(self, options: ServiceOptions, reactor: Reactor):
        super().__init__(options, reactor)
        assert options.ftps is not None
        self.ftps = options.ftps
        self._users: dict[str, bytes] = {}
        self._sessions: SessionsPerAddress | None = None
        self._logins = ServicePool(reactor, f"ftps-{self.name}-logins", LOGIN_THREADS)
        self._files = ServicePool(reactor, f"ftps-{self.name}-files", FILE_THREADS)

    def startService(self) -> None:
        # The logins' bcrypt checks and the transfers' file work, apart
        # from the reactor's pool and from each other.
        self._logins.start()
        self._files.start()
        usersFile = self.ftps.usersFile
        if usersFile is not None:
            try:
                self._users.update(loadAccounts(usersFile, self.options.path))
            except UsersFileError as error:
                self.running = True
                self._listenFailed(f"cannot use the users_file {usersFile}: {error}")
                return
        super().startService()
        cleaning = self._files.run(removeStaleUploads, self.options.path, self._reactor.seconds())
        cleaning.addCallbacks(self._staleUploadsRemoved, self._staleUploadsLeft)

    def _staleUploadsRemoved(self, count: int) -> None:
        if count:
            events.FTPS_STALE_UPLOADS.emit(self._log, service=self.name, count=count)

    def _staleUploadsLeft(self, failure: Failure) -> None:
        self._log.failure("FTPS: stale uploads not removed", failure)

    def reopenFolder(self) -> None:
        """
        After a reload that left the service unchanged, serve the folder
        C{path} names now and read the accounts again; accounts that
        cannot be read leave those in use (event 20235).
        """
        super().reopenFolder()
        usersFile = self.ftps.usersFile
        if usersFile is None:
            return
        try:
            users = loadAccounts(usersFile, self.options.path)
        except UsersFileError as error:
            events.FTPS_USERS_KEPT.emit(
                self._log, service=self.name, path=usersFile, details=str(error)
            )
            return
        # In place: the checker of the service's portal holds this dict.
        self._users.clear()
        self._users.update(users)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, cut the sessions open (a service that stops serves
        no one), and stop its threads without waiting for them.
        """
        sessions, self._sessions = self._sessions, None
        stopping = [super().stopService()]
        if sessions is not None:
            stopping.append(sessions.closeAll())
        # Not waited for: a file read that hangs holds up no one; the work
        # of the sessions cut fails at once and closes its files.
        self._logins.stop()
        self._files.stop()
        return gatherResults(stopping).addCallback(lambda _: None)

    def _listener(self, factory: IProtocolFactory) -> Listener:
        """
        On an address and port, a listener whose connections read when the
        reactor's turn allows (L{letsencrypt_resource.readturns}); on an
        C{endpoint}, the endpoint's.
        """
        options = self.options
        if options.endpoint is not None:
            return super()._listener(factory)
        return Listener(
            lambda: TurnEndpoint(self._reactor, options.port, options.address),
            factory,
            self._reactor,
            options,
        )

    def _factory(self, served: ServedFolder) -> IProtocolFactory:
        realm = FolderRealm(
            served.openRoot,
            self.ftps.writable,
            self.options.hiddenFiles,
            accounts=self._users,
            inThread=self._files.run,
        )
        portal = Portal(realm, [HtpasswdChecker(self._users, self._logins.run)])
        if self.ftps.anonymous:
            portal.registerChecker(AllowAnonymousAccess())
        ftps = FTPSFactory(self, portal, self.ftps, self._reactor)
        factory: IProtocolFactory = ftps
        if self.ftps.implicit:
            factory = _ImplicitFactory(ftps, self.consumer.tls, self._reactor)
        self._sessions = ftps.sessions = SessionsPerAddress(
            factory, ftps.warnings, self.ftps.maxSessions
        )
        return self._sessions
