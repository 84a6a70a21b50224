"""
The domain sets managed: collected from the consumers in the registry,
each with the renewal state and certificate the store holds for it, at
start and again when the host reloads its consumers.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface.registry import Components

from . import events
from .config import ResourceOptions
from .interfaces import ICertificateConsumer, ICertificateStore
from .managed import ManagedCertificate
from .provisioning import Provisioning
from .reporting import unexpected, when
from .scheduler import Scheduler
from .store import StoreError


class DomainSets(Service):
    """
    Loads the domain sets when the resource starts.

    @ivar managed: The domain sets, by their set of names; the same
        dictionary for the resource's whole life, shared with the parts
        that look at every set.
    """

    def __init__(
        self,
        options: ResourceOptions,
        registry: Components,
        store: ICertificateStore,
        managed: dict[frozenset[str], ManagedCertificate],
        provisioning: Provisioning,
        scheduler: Scheduler,
        reactor: Any,
        log: Logger,
    ):
        """
        @param registry: Holds the consumers.
        @param managed: Where the domain sets go, empty.
        @param log: Where events go.
        """
        self._options = options
        self._registry = registry
        self._store = store
        self._provisioning = provisioning
        self._scheduler = scheduler
        self._reactor = reactor
        self._log = log
        self.managed = managed
        # Sets a reload dropped while their attempt runs: taken back, with
        # that attempt, if a later reload adds them again before it ends.
        self._dropped: dict[frozenset[str], ManagedCertificate] = {}

    def startService(self) -> None:
        super().startService()
        self.load()

    def load(self) -> None:
        """
        Find the consumers in the registry and give each its stored
        certificate, if there is one; no network is used.
        """
        collected = self._collectConsumers()
        self.managed.clear()
        self.managed.update(collected)
        for certificate in self.managed.values():
            self._loadStored(certificate)

    def reloadConsumers(self) -> Deferred[None]:
        """
        Collect the consumers from the registry again (see
        L{letsencrypt_resource.resource.LetsEncryptResource.reloadConsumers}).
        """
        collected = self._collectConsumers()
        for key in set(self.managed) - set(collected):
            self._drop(key)
        added = []
        for key, fresh in collected.items():
            certificate = self.managed.get(key)
            if certificate is None and key in self._dropped:
                certificate = self.managed[key] = self._dropped.pop(key)
                added.append(certificate)
            if certificate is None:
                self.managed[key] = fresh
                self._loadStored(fresh)
                added.append(fresh)
                continue
            newcomers = [c for c in fresh.consumers if c not in certificate.consumers]
            certificate.consumers = fresh.consumers
            if certificate.current is not None and newcomers:
                self._provisioning.deliver(certificate, certificate.current, newcomers)
        needProvisional = [c for c in added if c.current is None]
        provisioned = (
            self._provisioning.provision(needProvisional) if needProvisional else succeed(None)
        )

        def checkAdded(_: object) -> None:
            if added:
                self._scheduler.check(only=added)

        return provisioned.addCallback(checkAdded).addErrback(
            lambda failure: unexpected(self._log, failure)
        )

    def _drop(self, key: frozenset[str]) -> None:
        """
        Stop managing the set C{key}; keep it aside while its attempt runs.
        """
        certificate = self.managed.pop(key)
        certificate.consumers = []
        attempt = certificate.attempt
        if attempt is None:
            return
        self._dropped[key] = certificate

        def ended(result: object) -> object:
            if self._dropped.get(key) is certificate:
                del self._dropped[key]
            return result

        attempt.addBoth(ended)

    def _collectConsumers(self) -> dict[frozenset[str], ManagedCertificate]:
        managed: dict[frozenset[str], ManagedCertificate] = {}
        settings = _settingsFingerprint(self._options)
        consumers = sorted(self._registry.getUtilitiesFor(ICertificateConsumer), key=lambda p: p[0])
        for _, consumer in consumers:
            key = frozenset(consumer.domains)
            if key not in managed:
                managed[key] = ManagedCertificate(tuple(consumer.domains), settings)
            managed[key].consumers.append(consumer)
        return managed

    def _loadStored(self, certificate: ManagedCertificate) -> None:
        """
        Take back the saved renewal state and the stored certificate of
        C{certificate}; a damaged file is reported and ignored, so the set
        is renewed.
        """
        try:
            state = self._store.loadRenewalState(certificate.domains)
        except StoreError as error:
            events.STORED_STATE_IGNORED.emit(
                self._log, domains=certificate.label, details=str(error)
            )
            state = None
        if state is not None:
            certificate.restore(state)
        self._loadStoredCertificate(certificate)
        now = self._reactor.seconds()
        saved = certificate.retryAt()
        if certificate.capWaits(now, self._options.checkInterval):
            events.STORED_WAIT_CAPPED.emit(
                self._log,
                domains=certificate.label,
                saved=when(saved),
                when=when(certificate.retryAt()),
            )

    def _loadStoredCertificate(self, certificate: ManagedCertificate) -> None:
        """
        Put C{certificate}'s stored certificate in service, when it is valid
        and for its names.
        """
        try:
            stored = self._store.loadCertificate(certificate.domains)
        except StoreError as error:
            events.STORED_STATE_IGNORED.emit(
                self._log, domains=certificate.label, details=str(error)
            )
            return
        if stored is None or stored.notAfter.timestamp() <= self._reactor.seconds():
            return
        if certificate.isCompromised(stored.key):
            events.COMPROMISED_CERTIFICATE_IGNORED.emit(self._log, domains=certificate.label)
            return
        if set(stored.domains) != set(certificate.domains):
            events.STORED_STATE_IGNORED.emit(
                self._log,
                domains=certificate.label,
                details=f"the stored certificate is for {', '.join(stored.domains)}",
            )
            return
        events.STORED_CERTIFICATE_LOADED.emit(
            self._log, domains=certificate.label, not_after=stored.notAfter.isoformat()
        )
        self._provisioning.deliver(certificate, stored)
        self._provisioning.export(certificate)


def _settingsFingerprint(options: ResourceOptions) -> str:
    """
    A digest of the options that orders depend on: when they change, a
    saved retry wait no longer applies.
    """
    settings = (
        options.acmeURL,
        options.keyType,
        options.profile,
        options.agreeTOS,
        options.contacts,
        options.accountKeyFile,
        options.eabKid,
        options.eabHMACKey,
    )
    return hashlib.sha256(repr(settings).encode("utf-8")).hexdigest()[:16]
