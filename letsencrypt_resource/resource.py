"""
The C{lets-encrypt} resource: a Twisted service that keeps every
registered L{letsencrypt_resource.interfaces.ICertificateConsumer} on a
valid certificate.

It is made of parts with one job each, wired by
L{letsencrypt_resource.composition.compose}; the resource owns what it made
for them (its HTTP connections and worker threads), offers their
operations, and stops them in order.  What it keeps goes through L{Records}
over an L{IStorage}: no storage call runs on the reactor thread, and any
store that keeps the contract can hold it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.web.resource import IResource
from zope.interface.registry import Components

from . import events
from .challenge import ChallengeResponder
from .composition import WriteCheck, compose
from .config import ResourceOptions
from .coroutines import deferred
from .managed import ManagedCertificate
from .owned import Owned
from .reporting import unexpected
from .storage.interface import IStorage
from .storage.records import Records
from .writequeue import Runner, WriteQueue

if TYPE_CHECKING:
    from .acmeclient import ACMEClient

#: Seconds between two regular checks of every certificate, by default.
CHECK_INTERVAL = 86400.0


class LetsEncryptResource(MultiService):
    """
    Obtains, renews and hands out certificates for the consumers found in
    a component registry.

    @ivar responder: The HTTP-01 challenges of the orders under way.
    @ivar runInThread: Runs key generation, signing and exports off the
        reactor thread.
    @ivar runWrite: Calls each write of the write queue (a L{Records}
        method, or an export), for a Deferred.
    @ivar storage: Where the resource keeps its state.
    @ivar records: What it keeps, over L{storage}.
    @ivar metrics: Its Prometheus metrics, in a registry of their own
        (C{metrics.registry}), for a host that serves them itself.
    """

    _log = Logger()

    def __init__(
        self,
        options: ResourceOptions,
        registry: Components,
        storage: IStorage,
        reactor: Any,
        httpClient: Any = None,
        *,
        runInThread: Runner | None = None,
        random: Callable[[], float] = random.random,
        automatic: bool = True,
        checkWritable: WriteCheck | None = None,
        closeStorage: bool = False,
    ):
        """
        @param storage: Where the state is kept: an L{IStorage}, such as
            L{letsencrypt_resource.storage.directory.DirectoryStorage} on
            the state directory.

        @param httpClient: The C{twisted.web.iweb.IAgent} for the ACME server,
            left to its caller to close; by default, the resource's own, as
            L{letsencrypt_resource.httpclient.makeHTTPClient} makes it for
            C{options.acmeCAFile}, its connections closed with the service.

        @raise ValueError: when the resource makes its HTTP client and
            C{options.acmeCAFile} holds no certificate.
        @param runInThread: Runs key generation, signing and writes off the
            reactor thread; by default, in
            L{letsencrypt_resource.workers.BackgroundWorkers} of a lower CPU
            priority, stopped with the service.
        @param random: Picks where in an ARI window to renew (0 to 1).
        @param automatic: Whether to provision, check and renew by itself;
            without, it only answers challenges for the orders asked of it,
            as the operations command needs.
        @param checkWritable: Checks, in a worker thread, that a set's
            certificate can be stored before it is ordered (as
            L{letsencrypt_resource.storage.checks.checkCertificateWritable}
            does for the state and store directories); by default, nothing
            is checked.
        @param closeStorage: Whether stopping closes C{storage}, after the
            writes under way have ended.

        @raise TypeError: when C{storage} is not an L{IStorage}.
        """
        if not IStorage.providedBy(storage):
            raise TypeError(
                f"{storage!r} does not provide letsencrypt_resource.storage.interface.IStorage:"
                " pass a storage.directory.DirectoryStorage (a state directory) or another"
            )
        super().__init__()
        self.options = options
        self.name = options.name
        self.storage = storage
        self.records = Records(storage)
        self._owned = Owned(options, reactor, storage, httpClient, runInThread, closeStorage)
        self.runInThread = self._owned.runInThread
        self.runWrite: Runner = maybeDeferred
        self.responder = ChallengeResponder(self.records.challengeLookup)
        parts = compose(
            options,
            registry,
            storage,
            self.records,
            self.responder,
            self._owned.httpClient,
            reactor,
            self._write,
            self._inThread,
            random,
            automatic,
            checkWritable,
            self._log,
            self._owned.clientFor,
        )
        self._writes = parts.writes
        self._provisioning = parts.provisioning
        self._connection = parts.connection
        self.cas = parts.cas
        self._scheduler = parts.scheduler
        self._sets = parts.sets
        self._challengeSite = parts.challengeSite
        self.metrics = parts.metrics
        #: Called after each certificate is handed to the set's consumers.
        self.deliveryListeners = parts.provisioning.deliveryListeners
        #: Called once the start-up has ended, after event 20208 (never
        #: when the resource stops before).
        self.startUpListeners = parts.provisioning.startUp.endListeners
        #: Returns a Deferred that fires once the sets loaded at start are in place.
        self.whenLoaded: Callable[[], Deferred[None]] = parts.sets.whenLoaded
        for service in parts.services:
            service.setServiceParent(self)

    @property
    def managed(self) -> dict[frozenset[str], ManagedCertificate]:
        """
        The domain sets, by their set of names.
        """
        return self._sets.managed

    def _inThread(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Run C{function} with C{args} by L{runInThread} as it is at the call:
        the attribute may be replaced after construction.
        """
        return self.runInThread(function, *args)

    def _write(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Call C{function} with C{args} by L{runWrite} as it is at the call.
        """
        return self.runWrite(function, *args)

    # Life cycle

    def startService(self) -> None:
        """
        Listen for challenges, load the domain sets, then (when automatic)
        provision and check them.
        """
        if self.options.upgradedFromURL:
            events.ACME_URL_UPGRADED.emit(
                self._log, old_url=self.options.upgradedFromURL, new_url=self.options.acmeURL
            )
        super().startService()

    @deferred
    async def stopService(self) -> None:
        """
        Stop the checks and the challenge site, then wait for the writes,
        then close the storage (when the resource owns it) and end the
        worker threads and the HTTP connections the resource owns.

        @return: A Deferred that fires once all of it is done; when a part
            failed to stop (the challenge site's port would not close), it
            fails with that part's error, once the rest is done all the same;
            the errors of other parts that failed too are logged.
        """
        Service.stopService(self)
        # First: the scheduler, stopped before the domain sets, cancels the
        # start-up's provision, whose end must not tell the start-up's end
        # (event 20208) as the services stop.
        self._provisioning.stopped = True
        await _stopInOrder(list(self), self._writes, self._owned, self._log)

    def load(self) -> Deferred[None]:
        """
        Find the consumers in the registry and give each its stored
        certificate, if there is one; no network is used.

        @return: A Deferred that fires once they are loaded.
        """
        return self._sets.load()

    def reloadConsumers(self) -> Deferred[None]:
        """
        Collect the consumers from the registry again, after a host added,
        removed or replaced some: sets still in use keep their certificate
        and renewal state, and new consumers of theirs get the certificate
        in service; sets no longer used are dropped (an order under way for
        one ends without delivering); new sets are loaded from the store,
        put on a provisional certificate when they have none, and checked.
        A set dropped while its attempt runs and added back before it ends
        is taken back as it was, so that its order is not placed twice.

        @return: A Deferred that fires once every new set has a
            certificate; the checks go on after it.
        """
        return self._sets.reloadConsumers()

    def challengeResource(self) -> IResource:
        """
        The resource that answers this resource's HTTP-01 challenges, for a
        host that serves port 80 itself to mount at
        C{/.well-known/acme-challenge/} in its own site; with
        C{challenge_site = no}, the resource opens no site of its own.
        """
        return self._challengeSite.challengeResource()

    def whenSettled(self) -> Deferred[None]:
        """
        A Deferred that fires once every consumer has a certificate and the
        first attempt to get a CA-issued one for each domain set has ended,
        in success or failure.
        """
        return self._scheduler.whenSettled()

    def whenWritten(self) -> Deferred[None]:
        """
        A Deferred that fires once the writes started so far (renewal
        state, exports) have ended.
        """
        return self._writes.whenWritten()

    def saveState(self, certificate: ManagedCertificate) -> Deferred[bool]:
        """
        Save the renewal state of C{certificate} as it is now, after the
        writes before it.

        @return: A Deferred that fires with whether it was written (a
            failure is event 20009, and the write is tried again later); it
            never fails.
        """
        return self._writes.saveState(certificate)

    # Checks and orders

    def check(
        self,
        force: bool = False,
        only: Collection[ManagedCertificate] | None = None,
        reason: str = "forced",
    ) -> Deferred[None]:
        """
        Warn of expiry, learn renewal information and renew what is due,
        now: see L{letsencrypt_resource.scheduler.Scheduler.check}.
        """
        return self._scheduler.check(force, only, reason)

    def acmeClient(self) -> Deferred[ACMEClient]:
        """
        The ACME client, connected and registered once and shared by every
        order; after a failure the next caller tries again.
        """
        return self._connection.acmeClient()

    def forgetAccount(self) -> None:
        """
        Drop the connected account: the next request connects again, with
        the account the storage then holds.
        """
        self._connection.forget()


async def _stopInOrder(
    parts: list[IService], writes: WriteQueue, owned: Owned, log: Logger
) -> None:
    """
    Stop C{parts} in reverse order, then wait for C{writes} and let their
    leases go, then close what the resource C{owned}: see
    L{LetsEncryptResource.stopService}.
    """
    stopped = await DeferredList(
        [maybeDeferred(part.stopService) for part in reversed(parts)], consumeErrors=True
    )
    await writes.whenWritten()
    await writes.leases.letGo()
    await owned.close()
    failures = [result for succeeded, result in stopped if not succeeded]
    for failure in failures[1:]:
        unexpected(log, failure)
    if failures:
        failures[0].raiseException()
