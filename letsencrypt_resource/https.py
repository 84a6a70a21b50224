"""
The C{https} service type: a read-only HTTPS file service over a folder,
on a certificate from the resource.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from . import events, listening
from .alpnpeek import HelloPeekFactory
from .certificates import CertifiedKey
from .config import ServiceOptions
from .firsthandshakes import firstHandshakesOf
from .folder import ServedFolder
from .httplimits import LimitedSite
from .listening import Listener
from .ratedcount import RatedCount
from .reactors import Reactor
from .sharedfolders import SharedFolders
from .startupreport import ListeningStartUp
from .tls import TLSCertificateConsumer


class FileSite(LimitedSite):
    """
    The file service's site: with C{debug}, each request is logged as event
    20000; without, requests are not logged.
    """

    _log = Logger()
    #: Wrapped in the service's TLS factories, which say nothing either.
    noisy = False

    def __init__(self, service: str, debug: bool, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._service = service
        self._debug = debug

    def log(self, request: Any) -> None:
        if self._debug:
            events.DEBUG.emit(
                self._log,
                details=(
                    f"{self._service}: {request.method.decode('ascii', 'replace')} "
                    f"{request.uri.decode('ascii', 'replace')} -> {request.code} "
                    f"for {request.getClientAddress().host}"
                ),
            )


#: Seconds between two events 20210 of one service: its site is built
#: again at each connection, and any peer may connect.
BUILD_FAILURE_PERIOD = 60.0


class OnFirstConnection(Factory):
    """
    Stands for the factory C{build} makes, made at the first connection
    (and started then): with thousands of services, building each one's
    site and TLS factories as it started to listen was a fifth of its cost,
    and most services never see a connection soon after start.

    When it cannot be made or started, the connection is closed (event
    20210, at most once in L{BUILD_FAILURE_PERIOD} seconds) and the service
    keeps listening: it is made again at the next connection, so that a
    passing failure ends without a reload.
    """

    noisy = False
    _log = Logger()

    def __init__(self, build: Callable[[], IProtocolFactory], clock: IReactorTime, service: str):
        """
        @param clock: Spaces the events 20210.
        @param service: The service's name, for them.
        """
        self._build = build
        self._built: IProtocolFactory | None = None
        self._service = service
        self._clock = clock
        # Made at the first failure: most services never see one.
        self._notBuilt: RatedCount | None = None

    def buildProtocol(self, addr: IAddress) -> Any:  # type: ignore[override]
        """
        The protocol of the factory it stands for; C{None} when that cannot
        be made, and Twisted's port closes the connection.
        """
        try:
            built = self.built()
        except Exception as error:
            self._cannotBuild(error)
            return None
        return built.buildProtocol(addr)

    def built(self) -> IProtocolFactory:
        """
        The factory it stands for, made and started at the first call; kept
        once it has started.
        """
        built = self._built
        if built is None:
            built = self._build()
            built.doStart()
            self._built = built
        return built

    def _cannotBuild(self, error: Exception) -> None:
        """
        Tell that a connection was closed for C{error}: event 20210, at
        most once in L{BUILD_FAILURE_PERIOD} seconds, with the connections
        closed since the last one (those closed sooner are told when the
        period ends, or when it stops) and the last one's error.  No
        traceback: any peer can connect.
        """
        text = f"{type(error).__name__}: {error}"
        if self._notBuilt is None:
            self._notBuilt = RatedCount(self._clock, BUILD_FAILURE_PERIOD)
        self._notBuilt.add(
            lambda closed: events.SITE_NOT_BUILT.emit(
                self._log, service=self._service, error=text, closed=closed
            )
        )

    def doStop(self) -> None:
        """
        Stop, and stop the factory it stands for, if it was made; tell the
        connections closed and not told yet (event 20210).
        """
        super().doStop()
        if self._notBuilt is not None:
            self._notBuilt.flush()
        built, self._built = self._built, None
        if built is not None:
            built.doStop()


class HTTPSFileService(Service):
    """
    Serves C{options.path} over HTTPS on C{options.endpoint}, or on
    C{options.address}:C{options.port}.

    It listens once its consumer has a first certificate (provisional or
    CA-issued) and follows every later one in place. It opens its folder
    when it starts listening and closes it when it stops: see
    L{ServedFolder} for a folder replaced while it serves.

    @ivar consumer: Its L{TLSCertificateConsumer}, to register.
    @ivar folders: Where it opens its folder, shared with the other
        services of its server (see L{SharedFolders}); its own by default.
    @ivar startUp: The start-up of the server it started with, if it has
        not listened yet: it is told, instead of event 20156.
    @ivar closed: Fires once its port has closed, after a stop (the stop's
        own Deferred fires later, once its connections have ended).
    """

    _log = Logger()

    def __init__(self, options: ServiceOptions, reactor: Reactor):
        self.options = options
        self.name = options.name
        self.consumer = TLSCertificateConsumer(
            options.name, options.domains, firstHandshakesOf(reactor)
        )
        self._reactor = reactor
        self._port: Listener | None = None
        self._served: ServedFolder | None = None
        self._site: FileSite | None = None
        self.closed: Deferred[None] = succeed(None)
        # Gives up the wait for the first certificate (see startService).
        self._giveUp: Callable[[], None] | None = None
        self.startUp: ListeningStartUp | None = None
        self.folders = SharedFolders()

    def startService(self) -> None:
        super().startService()
        # The folder is opened now, right after the checks of the
        # configuration, not when the first certificate comes: no later
        # swap of the path for a link can slip in between.
        try:
            self._served = self.folders.open(self.options.path, self.options.hiddenFiles)
        except OSError as error:
            self._listenFailed(f"cannot open the folder {self.options.path}: {error.strerror}")
            return
        self._giveUp = self.consumer.onFirstCertificate(self._listen)

    def _listen(self, certifiedKey: CertifiedKey) -> None:
        served = self._served
        assert served is not None
        factory = self._factory(served)
        self._port = self._listener(factory)
        self._port.listen(self._listening, partial(self._notListening, served=served))

    def _listener(self, factory: IProtocolFactory) -> Listener:
        """
        The listener of C{factory}, where the service's options say.
        """
        return Listener.on(self._reactor, self.options, factory)

    def _factory(self, served: ServedFolder) -> IProtocolFactory:
        """
        The factory of the service's listener, serving C{served}: its site
        and TLS factories built at its first connection (see
        L{OnFirstConnection}).
        """
        return OnFirstConnection(lambda: self._built(served), self._reactor, str(self.name))

    def _built(self, served: ServedFolder) -> IProtocolFactory:
        """
        The site serving C{served}, behind the service's TLS.
        """
        site = self._site = FileSite(
            self.options.name, self.options.debug, served, reactor=self._reactor
        )
        tls = self.consumer.tls
        factory = TLSMemoryBIOFactory(tls, False, site, clock=self._reactor)
        peek = HelloPeekFactory(factory, lambda: tls.alpn, self._reactor, str(self.name))
        # No "Starting factory" and "Stopping factory" lines from Twisted:
        # event 20156 says that the service listens, and with thousands of
        # services those lines were a third of the start-up's log.
        peek.noisy = False
        return peek

    def _listening(self, port: IListeningPort) -> None:
        address, number = listening.listeningPlace(self.options, port)
        startUp, self.startUp = self.startUp, None
        if startUp is None or startUp.told:
            events.SERVICE_LISTENING.emit(
                self._log, service=self.name, address=address, port=number
            )
        else:
            startUp.listened(
                self.options.debug,
                self._reactor.seconds(),
                service=self.name,
                address=address,
                port=number,
            )

    def _notListening(self, failure: Failure, served: ServedFolder) -> None:
        if failure.check(CancelledError):
            return
        if self._served is served:
            self._served = None
            self.folders.close(served)
        self._listenFailed(listening.failureDetails(failure))

    def _listenFailed(self, details: str) -> None:
        """
        Tell that the service cannot listen, for C{details}: event 20157.
        """
        address, port = listening.place(self.options)
        events.SERVICE_LISTEN_FAILED.emit(
            self._log, service=self.name, address=address, port=port, details=details
        )
        startUp, self.startUp = self.startUp, None
        if startUp is not None:
            startUp.failed(self._reactor.seconds())

    def reopenFolder(self) -> None:
        """
        Open the folder C{path} now names and serve it from now on: after a
        reload whose checks passed, so that a deployment that points a link
        at a new folder takes effect.  When it cannot be opened, the folder
        opened before stays (and answers 404 while C{path} names another).
        """
        if self._served is not None:
            self._served.reopen()

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting at once; close the idle connections, and those with
        a request under way once it is answered.  The folder stays served
        until they have ended (for at most the drain's grace), so that none
        answers 404 meanwhile.  C{closed} fires once the port has closed.
        """
        super().stopService()
        giveUp, self._giveUp = self._giveUp, None
        if giveUp is not None:
            giveUp()
        served, self._served = self._served, None
        port, self._port = self._port, None
        site, self._site = self._site, None
        if port is None:
            self.closed = succeed(None)
            drained: Deferred[None] = succeed(None)
        else:
            stopping = port.stop()
            self.closed, drained = stopping.closed, stopping.drained
        if site is not None:
            site.closeIdle()
        if served is not None:
            drained.addCallback(lambda _: self.folders.close(served))
        return drained
