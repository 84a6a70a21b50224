"""
The domain sets managed: collected from the consumers in the registry,
each with the renewal state and certificate the storage holds for it, at
start and again when the host reloads its consumers; and, while the
resource runs, each certificate another user of the storage stores for a
set, put in service once it passes the checks an order's would.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface.registry import Components

from .config import ResourceOptions
from .coroutines import deferred
from .interfaces import ICertificateConsumer
from .managed import ManagedCertificate
from .provisioning import Provisioning
from .reporting import unexpected
from .scheduler import Scheduler
from .setloading import SetLoader, collectSets, settingsFingerprint
from .storage.records import Records
from .storedchanges import StoredChanges


class DomainSets(Service):
    """
    Loads the domain sets when the resource starts, and has the
    certificates other users of the storage store for them while it runs
    taken (L{StoredChanges}).

    @ivar managed: The domain sets, by their set of names; the same
        dictionary for the resource's whole life, shared with the parts
        that look at every set.
    """

    def __init__(
        self,
        options: ResourceOptions,
        registry: Components,
        records: Records,
        managed: dict[frozenset[str], ManagedCertificate],
        provisioning: Provisioning,
        scheduler: Scheduler,
        changes: StoredChanges,
        reactor: Any,
        log: Logger,
    ):
        """
        @param registry: Holds the consumers.
        @param managed: Where the domain sets go, empty.
        @param changes: Puts the stored certificates in service, and
            watches those other users of the storage store.
        @param log: Where events go.
        """
        self._options = options
        self._registry = registry
        self._records = records
        self._provisioning = provisioning
        self._scheduler = scheduler
        self._reactor = reactor
        self._log = log
        self.managed = managed
        # Sets a reload dropped while their attempt runs: taken back, with
        # that attempt, if a later reload adds them again before it ends.
        self._dropped: dict[frozenset[str], ManagedCertificate] = {}
        self._loading: Deferred[None] = succeed(None)
        self._changes = changes
        self._loader = SetLoader(records, changes, reactor, options.checkInterval, log)

    def startService(self) -> None:
        super().startService()
        self._provisioning.stopped = False
        self._loading = self.load()
        self._loading.addErrback(self._unexpected)
        self._changes.start()

    def stopService(self) -> None:
        super().stopService()
        self._provisioning.stopped = True
        self._changes.stop()

    def _unexpected(self, failure: Failure) -> None:
        unexpected(self._log, failure)

    def whenLoaded(self) -> Deferred[None]:
        """
        A Deferred that fires once the load started at start has ended.
        """
        loaded: Deferred[None] = Deferred()

        def ended(result: object) -> object:
            loaded.callback(None)
            return result

        self._loading.addBoth(ended)
        return loaded

    @deferred
    async def load(self) -> None:
        """
        Find the consumers in the registry and give each its stored
        certificate, if there is one; no network is used.  However it
        ends, the provisioning is told it has (so that the start-up ends,
        even when the load failed).
        """
        try:
            collected = self._collectConsumers()
            self.managed.clear()
            self.managed.update(collected)
            self._changes.setsChanged()
            await self._loader.loadAll(list(self.managed.values()))
        finally:
            self._provisioning.loaded()

    @deferred
    async def reloadConsumers(self) -> None:
        """
        Collect the consumers from the registry again (see
        L{letsencrypt_resource.resource.LetsEncryptResource.reloadConsumers}).
        """
        try:
            await self._reloadConsumers()
        except Exception:
            unexpected(self._log, Failure())

    async def _reloadConsumers(self) -> None:
        collected = self._collectConsumers()
        for key in set(self.managed) - set(collected):
            self._drop(key)
        added = []
        loading = []
        for key, fresh in collected.items():
            certificate = self.managed.get(key)
            if certificate is None and key in self._dropped:
                certificate = self.managed[key] = self._dropped.pop(key)
                added.append(certificate)
            if certificate is None:
                self.managed[key] = fresh
                added.append(fresh)
                loading.append(fresh)
                continue
            newcomers = [c for c in fresh.consumers if c not in certificate.consumers]
            certificate.consumers = fresh.consumers
            if certificate.current is not None and newcomers:
                self._provisioning.deliver(certificate, certificate.current, newcomers)
        self._changes.setsChanged()
        await self._loader.loadAll(loading)
        needProvisional = [c for c in added if c.current is None]
        if needProvisional:
            await self._provisioning.provision(needProvisional)
        if added:
            self._scheduler.check(only=added)

    def _drop(self, key: frozenset[str]) -> None:
        """
        Stop managing the set C{key}; keep it aside while its attempt runs.
        """
        certificate = self.managed.pop(key)
        certificate.consumers = []
        self._provisioning.dropped(certificate)
        attempt = certificate.attempt
        if attempt is None:
            return
        self._dropped[key] = certificate

        def ended(result: object) -> object:
            if self._dropped.get(key) is certificate:
                del self._dropped[key]
            return result

        attempt.whenEnded().addCallback(ended)

    def _collectConsumers(self) -> dict[frozenset[str], ManagedCertificate]:
        return collectSets(
            self._registry.getUtilitiesFor(ICertificateConsumer),
            settingsFingerprint(self._options),
        )
