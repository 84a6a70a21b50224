"""
Build the whole server from a configuration: the component registry, the
TLS services and the C{lets-encrypt} resource.

This is also the worked example of embedding: a host server with services
of its own registers them as L{ICertificateConsumer} utilities the same way.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.web.client import HTTPConnectionPool
from zope.interface.registry import Components

from .config import Configuration, ConfigurationError, ResourceOptions
from .control import ControlService, LockWatch, StateLock, checkControlFolder
from .httpclient import loadCABundle, makeHTTPClient
from .https import HTTPSFileService
from .keys import loadAccountKey
from .interfaces import ICertificateConsumer
from .operations import Operations
from .resource import LetsEncryptResource
from .store import EXPORTED_FILES, DirectoryStore, checkStorage, removeTemporaryFiles


def checkFileSystem(configuration: Configuration) -> None:
    """
    The checks of a configuration that read the file system.

    @raise ConfigurationError: when a served folder is missing, the ACME
        CA bundle cannot be used, or the state directory, the store
        directory or the control socket's folder cannot be written safely.
    """
    for service in configuration.services:
        if not os.path.isdir(service.path):
            raise ConfigurationError(
                service.section, "path", f"{service.path} is not an existing folder"
            )
    resource = configuration.resource
    if resource is not None and resource.acmeCAFile is not None:
        try:
            loadCABundle(resource.acmeCAFile)
        except ValueError as error:
            raise ConfigurationError(resource.section, "acme_ca_file", str(error))
    if resource is not None and resource.accountKeyFile is not None:
        try:
            loadAccountKey(resource.accountKeyFile)
        except ValueError as error:
            raise ConfigurationError(resource.section, "account_key", str(error))
    if resource is not None:
        checkStorage(resource)
        checkControlFolder(resource)


def makeResource(
    options: ResourceOptions, registry: Components, reactor: Any, automatic: bool = True
) -> tuple[LetsEncryptResource, HTTPConnectionPool]:
    """
    The resource for C{options}, finding its consumers in C{registry}, with
    its own HTTP connection pool (to close when it stops).  The caller holds
    the state directory's lock: files that a crash left half-written there,
    and in the store directory, are removed.
    """
    trusted = loadCABundle(options.acmeCAFile) if options.acmeCAFile else None
    http, pool = makeHTTPClient(reactor, trusted)
    store = DirectoryStore(options.stateDirectory, options.storeDirectory)
    store.removeTemporaryFiles()
    if options.storeDirectory is not None:
        removeTemporaryFiles(options.storeDirectory, only=EXPORTED_FILES)
    resource = LetsEncryptResource(
        options,
        registry,
        store,
        reactor,
        http,
        automatic=automatic,
    )
    return resource, pool


class ServerService(MultiService):
    """
    The services of one configuration.

    @ivar registry: Where the TLS services are registered as consumers.
    @ivar resource: The C{lets-encrypt} resource, if enabled.
    @ivar fileServices: The C{https} services.
    """

    def __init__(
        self, configuration: Configuration, reactor: Any, lock: StateLock | None = None
    ):
        """
        @param lock: The state directory's lock, already taken; by default
            it is taken here.

        @raise StateDirectoryLocked: when another process uses the state
            directory.
        """
        super().__init__()
        self.registry = Components("letsencrypt-resource")
        self.fileServices = []
        for options in configuration.services:
            service = HTTPSFileService(options, reactor)
            self.registry.registerUtility(
                service.consumer, ICertificateConsumer, name=options.section
            )
            service.setServiceParent(self)
            self.fileServices.append(service)
        self.resource = None
        self._lock = lock
        resourceOptions = configuration.resource
        if resourceOptions is not None:
            if self._lock is None:
                self._lock = StateLock(resourceOptions.stateDirectory)
                self._lock.acquire()
            LockWatch(self._lock, reactor).setServiceParent(self)
            self.resource, self._pool = makeResource(
                resourceOptions, self.registry, reactor
            )
            self.resource.setServiceParent(self)
            ControlService(
                resourceOptions.stateDirectory,
                Operations(self.resource, reactor),
                reactor,
            ).setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        # What start-up built lives as long as the server: out of the
        # collector's reach, full collections stay short while orders run.
        # Collect first, so that no start-up garbage is kept for good.
        gc.collect()
        gc.freeze()

    def stopService(self) -> Deferred[None]:
        stopped = super().stopService()
        if self.resource is not None:
            stopped.addBoth(lambda _: self._pool.closeCachedConnections())
        if self._lock is not None:
            stopped.addBoth(lambda _: self._lock.release())
        return stopped
