"""
Build the whole server from a configuration: the component registry, the
TLS services and the C{lets-encrypt} resource.

This is also the worked example of embedding: a host server with services
of its own registers them as L{ICertificateConsumer} utilities the same way.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import (
    Deferred,
    DeferredLock,
    gatherResults,
    maybeDeferred,
)
from twisted.logger import Logger
from zope.interface.registry import Components

from . import deployrun, events
from .acmeloading import missingPackages
from .alpn import ALPNAnswers, ServedNames
from .clusterresume import resumeWhenBack
from .config import (
    Configuration,
    ConfigurationError,
    ResourceOptions,
    ServiceOptions,
    checkComponents,
    checkServedPaths,
    loadConfiguration,
)
from .consumerregistry import ConsumerRegistry
from .control import ControlService, LockWatch, StateLock
from .deploycommand import findProgram
from .heartbeat import heartbeatOf
from .httpclient import loadCABundle
from .https import HTTPSFileService
from .interfaces import ICertificateConsumer
from .keys import loadAccountKey
from .listening import inheritedSocketProblem
from .nodestorage import makeStorage, stopReactor
from .operations import Operations
from .reactors import Reactor
from .reload import planReload
from .resource import LetsEncryptResource
from .sharedfolders import SharedFolders
from .startupcollection import frozeStartUp, pausedCollection
from .startupreport import ListeningStartUp
from .statechecks import checkCluster, checkState
from .storage.checks import checkCertificateWritable
from .storage.directory import removeTemporaryFiles
from .storage.export import EXPORTED_FILES


def checkServices(configuration: Configuration) -> None:
    """
    The checks of what the services serve.

    @raise ConfigurationError: when a served folder is missing or, once
        links are followed, holds secrets.
    """
    # Checked once for each folder: 10,000 services may serve one.
    folders: set[str] = set()
    for service in configuration.services:
        if service.path in folders:
            continue
        if not os.path.isdir(service.path):
            raise ConfigurationError(
                service.section, "path", f"{service.path} is not an existing folder"
            )
        folders.add(service.path)
    checkServedPaths(configuration, os.path.realpath)


def checkCA(configuration: Configuration) -> None:
    """
    The checks of what reaching the CA uses.

    @raise ConfigurationError: when the ACME CA bundle or the account key
        cannot be used, or a package that ACME needs is not installed (a
        server without it could not order any certificate).
    """
    resource = configuration.resource
    if resource is not None and missingPackages():
        raise ConfigurationError(
            resource.section,
            None,
            "the Python packages that ACME needs are not installed: "
            + ", ".join(missingPackages()),
        )
    bundles: list[tuple[str, str | None]] = []
    if resource is not None:
        bundles = [(resource.section, resource.acmeCAFile)]
        bundles += [(ca.section, ca.acmeCAFile) for ca in resource.fallbackCAs]
    for section, bundle in bundles:
        if bundle is not None:
            try:
                loadCABundle(bundle)
            except ValueError as error:
                raise ConfigurationError(section, "acme_ca_file", str(error)) from None
    if resource is not None and resource.accountKeyFile is not None:
        try:
            loadAccountKey(resource.accountKeyFile)
        except ValueError as error:
            raise ConfigurationError(resource.section, "account_key", str(error)) from None


def checkListeners(configuration: Configuration) -> None:
    """
    The checks of what the listeners take from the process: the sockets
    that C{systemd:} endpoints name were passed to it.

    @raise ConfigurationError: naming the C{endpoint} whose socket is
        missing.
    """
    resource = configuration.resource
    listeners: list[ResourceOptions | ServiceOptions] = list(configuration.services)
    if resource is not None and resource.challengeSite:
        listeners.insert(0, resource)
    for options in listeners:
        if options.endpoint is None:
            continue
        problem = inheritedSocketProblem(options.endpoint)
        if problem is not None:
            raise ConfigurationError(options.section, "endpoint", problem)


def checkDeployCommand(configuration: Configuration) -> None:
    """
    The check of the deploy command: its program is an executable file,
    found on the server's C{PATH} when it is a bare name, and C{setsid(1)},
    which starts it, is there.

    @raise ConfigurationError: naming C{deploy_command}.
    """
    resource = configuration.resource
    if resource is None or resource.deployCommand is None:
        return
    program = resource.deployCommand[0]
    if findProgram(program, os.environ.get("PATH")) is None:
        where = "is not an executable file" if os.path.isabs(program) else "is not found on PATH"
        raise ConfigurationError(
            resource.section, "deploy_command", f"the program {program!r} {where}"
        )
    if not os.access(deployrun.SETSID, os.X_OK):
        raise ConfigurationError(
            resource.section,
            "deploy_command",
            f"it is run by {deployrun.SETSID} (util-linux), which is not an executable file",
        )


#: Every check that reads the file system or the process, for a server.
ALL_CHECKS: tuple[Callable[[Configuration], None], ...] = (
    checkServices,
    checkCA,
    checkState,
    checkListeners,
    checkCluster,
    checkDeployCommand,
)


def checkFileSystem(configuration: Configuration) -> None:
    """
    The checks of a configuration that read the file system: L{ALL_CHECKS}.

    @raise ConfigurationError: at the first problem found.
    """
    for check in ALL_CHECKS:
        check(configuration)


def readConfiguration(
    path: str, checks: tuple[Callable[[Configuration], None], ...] = ALL_CHECKS
) -> Configuration:
    """
    Read the configuration file at C{path} and make every check of it that
    reads the file system, or only C{checks} for a command that uses less
    than a server does.

    @raise ConfigurationError: at the first problem found.
    """
    configuration = loadConfiguration(path)
    for check in checks:
        check(configuration)
    return configuration


def makeResource(
    options: ResourceOptions,
    registry: Components,
    reactor: Reactor,
    automatic: bool = True,
    lock: StateLock | None = None,
    onRefused: Callable[[], object] | None = None,
) -> LetsEncryptResource:
    """
    The resource for C{options}, finding its consumers in C{registry}, with
    its own HTTP connection pool, closed when it stops, and its state in a
    L{DirectoryStorage <letsencrypt_resource.storage.directory.DirectoryStorage>}
    on the state directory (or, for a cluster, a
    L{ClusterStorage <letsencrypt_resource.storage.cluster.ClusterStorage>}
    caching in it; see L{makeStorage}), closed when it stops.  The
    caller holds the state directory's lock: files that a crash left
    half-written there, and in the store directory, are removed.

    @param lock: That lock, under which the storage gives its leases; by
        default the storage takes it while it holds a lease.
    @param onRefused: Called when the cluster's database refuses this
        node's key file; by default, the reactor stops.
    @raise ValueError: when C{options.acmeCAFile} holds no certificate.
    """
    removeTemporaryFiles(options.stateDirectory)
    if options.storeDirectory is not None:
        removeTemporaryFiles(options.storeDirectory, only=EXPORTED_FILES)
    storage = makeStorage(options, reactor, lock, onRefused or stopReactor(reactor))
    resource = LetsEncryptResource(
        options,
        registry,
        storage,
        reactor,
        automatic=automatic,
        checkWritable=partial(
            checkCertificateWritable, options.stateDirectory, options.storeDirectory
        ),
        closeStorage=True,
    )
    resumeWhenBack(resource, storage, reactor)
    return resource


class ServerService(MultiService):
    """
    The services of one configuration.

    @ivar configuration: The configuration running.
    @ivar path: The configuration file that L{reload} reads, if any.
    @ivar registry: Where the TLS services are registered as consumers.
    @ivar resource: The C{lets-encrypt} resource, if enabled.
    @ivar fileServices: The C{https} and C{ftps} services.
    """

    _log = Logger()

    def __init__(
        self,
        configuration: Configuration,
        reactor: Reactor,
        lock: StateLock | None = None,
        path: str | None = None,
        resourceFactory: Callable[..., LetsEncryptResource] = makeResource,
    ):
        """
        @param lock: The state directory's lock, already taken; by default
            it is taken here.
        @param path: The file C{configuration} was read from.
        @param resourceFactory: Makes the resource, as L{makeResource} does,
            from the resource options, the registry and the reactor, and
            the state directory's lock as C{lock}.

        @raise StateDirectoryLocked: when another process uses the state
            directory.
        """
        super().__init__()
        self.configuration = configuration
        self.path = path
        self._reactor = reactor
        self._reloading = DeferredLock()
        self.registry = ConsumerRegistry("letsencrypt-resource")
        self.fileServices: list[HTTPSFileService] = []
        self._servedNames = ServedNames()
        self._folders = SharedFolders()
        # Automatic collection paused from the start until the load ends.
        self._collectionPaused = ExitStack()
        self.resource = None
        with self.registry.registering():
            for options in configuration.services:
                self._addService(options)
        self._lock = lock
        resourceOptions = configuration.resource
        if resourceOptions is not None:
            if self._lock is None:
                self._lock = StateLock(resourceOptions.stateDirectory)
                self._lock.acquire()
            LockWatch(self._lock, reactor).setServiceParent(self)
            self.resource = resourceFactory(
                resourceOptions, self.registry, reactor, lock=self._lock
            )
            self.resource.setServiceParent(self)
            for service in self.fileServices:
                self._answerALPN(service)
            ControlService(
                resourceOptions.stateDirectory,
                Operations(self.resource, reactor),
                reactor,
            ).setServiceParent(self)
            if resourceOptions.clusterDatabase is not None:
                heartbeatOf(self.resource, reactor).setServiceParent(self)

    def _addService(self, options: ServiceOptions) -> None:
        kind = _ftpsService() if options.ftps is not None else HTTPSFileService
        service = kind(options, self._reactor)
        service.folders = self._folders
        self.registry.registerUtility(service.consumer, ICertificateConsumer, name=options.section)
        service.setServiceParent(self)
        self.fileServices.append(service)
        self._servedNames.add(service.consumer.domains)
        self._answerALPN(service)

    def _answerALPN(self, service: HTTPSFileService) -> None:
        """
        Let C{service}'s TLS contexts answer the resource's TLS-ALPN-01
        validation handshakes, when there is a resource.
        """
        if self.resource is not None:
            responder = self.resource.responder
            answers = ALPNAnswers(
                responder.lookupALPN, self._reactor, responder.lookupShared, self._servedNames
            )
            service.consumer.tls.answerALPN(answers)

    def _removeService(self, service: HTTPSFileService) -> Deferred[None]:
        startUp, service.startUp = service.startUp, None
        if startUp is not None:
            startUp.gone(self._reactor.seconds())
        self.registry.unregisterUtility(
            service.consumer, ICertificateConsumer, name=service.options.section
        )
        self.fileServices.remove(service)
        self._servedNames.remove(service.consumer.domains)
        # Its connections drain in the background: its port is free, for
        # the service that replaces it, once closed.
        maybeDeferred(service.disownServiceParent)
        return service.closed

    def reload(self) -> Deferred[None]:
        """
        Read the configuration file again and apply it, one reload at a
        time: services added are started, services removed are stopped,
        services whose options changed are started again with them, and
        the others go on untouched, open connections included.  A file
        that is not valid changes nothing (event 20197); changes to the
        resource section wait for a restart (event 20198).

        @return: A Deferred that fires once the changes are applied; it
            never fails.
        """
        if self.path is None:
            raise RuntimeError("this server was built without a configuration file")
        reloading = self._reloading.run(self._reload, self.path)
        return reloading.addErrback(
            lambda failure: self._log.failure(
                "Unexpected error while reloading {path}", failure, path=self.path
            )
        )

    async def _reload(self, path: str) -> None:
        events.RELOAD_STARTED.emit(self._log, path=path)
        failing = "the configuration cannot be checked"
        try:
            configuration = readConfiguration(path)
            # Resource changes wait for a restart: the new services are to
            # run beside the resource as it runs, so they are checked
            # against it as well (a served folder must not hold its state,
            # nor a listener take its challenge port or its name).
            applied = attrs.evolve(configuration, resource=self.configuration.resource)
            if applied != configuration:
                checkComponents(applied)
                checkFileSystem(applied)
            if any(options.ftps is not None for options in configuration.services):
                # Loaded before anything changes: a failure refuses the
                # reload instead of leaving it half done.
                failing = "the FTPS service cannot be loaded"
                _ftpsService()
        except ConfigurationError as error:
            events.RELOAD_REFUSED.emit(self._log, path=path, details=str(error))
            return
        except Exception as error:
            events.RELOAD_REFUSED.emit(self._log, path=path, details=f"{failing}: {error!r}")
            return
        plan = planReload(self.configuration, configuration)
        if plan.restartSection is not None:
            events.RESTART_NEEDED.emit(
                self._log,
                section=plan.restartSection,
                path=path,
                options=", ".join(plan.restartOptions),
            )
        stopping = [s for s in self.fileServices if s.options.section in plan.stop]
        # The ports of the services stopped are free before others start.
        await gatherResults([self._removeService(s) for s in stopping])
        if not self.running:
            return
        for options in plan.start:
            self._addService(options)
        # A service started again shares the folder its old self, still
        # draining, opened before the reload: opened again, like the others.
        reopened = {*plan.unchanged, *(o.section for o in plan.start)}
        for service in self.fileServices:
            if service.options.section in reopened:
                service.reopenFolder()
        self.configuration = applied
        if self.resource is not None:
            await self.resource.reloadConsumers()
        events.RELOADED.emit(
            self._log,
            path=path,
            added=_sections(plan.added),
            removed=_sections(plan.removed),
            changed=_sections(plan.changed),
            unchanged=_sections(plan.unchanged),
        )

    def startService(self) -> None:
        if self._lock is not None:
            # twistd took the lock in the process that has since forked.
            self._lock.recordHolder()
        # One event 20209 once every service listens or cannot, not one
        # 20156 for each.
        startUp = ListeningStartUp(self._log, len(self.fileServices), self._reactor.seconds())
        for service in self.fileServices:
            service.startUp = startUp
        if self.resource is None:
            super().startService()
            _freezeStartUp()
            return
        # The domain sets, loaded from the storage after the start, are
        # most of what start-up builds: automatic collection stays paused
        # until they are frozen, not resumed as the load ends (one more
        # pass over all of them, 0.15 s at 10,000 sets).
        paused = self._collectionPaused
        paused.enter_context(pausedCollection())
        # Event 20209 waits for no service longer than the resource's
        # start-up (one whose set waits for a certificate may never listen).
        self.resource.startUpListeners.append(lambda: startUp.cut(self._reactor.seconds()))
        super().startService()
        self.resource.whenLoaded().addCallback(lambda _: _freezeAndResume(paused))

    def stopService(self) -> Deferred[None]:
        # A load still under way at a stop keeps its own pause.
        self._collectionPaused.close()
        stopped = super().stopService()
        if self._lock is not None:
            stopped.addBoth(lambda _: self._lock.release())
        return stopped


def _ftpsService() -> type[HTTPSFileService]:
    """
    The FTPS service type: only a server with FTPS services loads it (0.1 s
    of CPU at start); a reload that adds the first one loads it then.
    """
    from .ftps import FTPSService

    return FTPSService


def _freezeStartUp() -> None:
    """
    What start-up built lives as long as the server: out of the
    collector's reach, full collections stay short while orders run.
    Collect first, so that no garbage made since the last freeze is kept
    for good; but not where
    L{ResumeCollection <letsencrypt_resource.startupcollection.ResumeCollection>}
    froze what building the server made without collecting (under
    twistd): see L{frozeStartUp <letsencrypt_resource.startupcollection.frozeStartUp>}.
    """
    if not frozeStartUp():
        gc.collect()
    gc.freeze()


def _freezeAndResume(paused: ExitStack) -> None:
    """
    Freeze what start-up built (L{_freezeStartUp}), then end the pause of
    automatic collection C{paused} holds.
    """
    with paused:
        _freezeStartUp()


def _sections(sections: tuple[str, ...]) -> str:
    return ", ".join(sections) or "none"
