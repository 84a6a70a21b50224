"""
Putting certificates in service: provisional certificates, from the
installation's signer, for sets that have no certificate yet, and the
delivery of each certificate to the consumers of its set and its export
to the store directory.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from . import events
from .certificates import CertifiedKey
from .config import ResourceOptions
from .coroutines import deferred
from .deploy import DeployHooks
from .interfaces import ICertificateConsumer, IReportsUnusableCertificates
from .keys import PrivateKey, generateKey
from .managed import ManagedCertificate
from .provisional import makeProvisional, makeSigner, signerProblem
from .reporting import unexpected, utc
from .startupcollection import pausedCollection
from .startupreport import ResourceStartUp
from .storage.interface import StorageError
from .storage.records import Records
from .writequeue import Runner, WriteQueue

#: How many sets one turn of the reactor puts on provisional certificates
#: (see L{Provisioning.provision}): about 20 ms at 0.3 ms a set; at
#: 10,000 sets, one turn for all held the reactor for seconds.
PROVISION_BATCH = 64


async def inTurns(
    reactor: IReactorTime, certificates: list[ManagedCertificate], stopped: Callable[[], bool]
) -> AsyncIterator[list[ManagedCertificate]]:
    """
    C{certificates} by batches of L{PROVISION_BATCH}, one a turn of
    C{reactor}, until C{stopped} says the resource has stopped: its
    services are stopping, a later batch is not delivered.
    """
    for start in range(0, len(certificates), PROVISION_BATCH):
        if start:
            await deferLater(reactor, 0)
        if stopped():
            return
        yield certificates[start : start + PROVISION_BATCH]


def _inUse(consumer: ICertificateConsumer, certificate: ManagedCertificate) -> dict[str, Any]:
    """
    The fields of event 20016 or 20153: C{consumer} is on the certificate
    of C{certificate}.
    """
    return {"service": consumer.name, "domains": certificate.label}


class Provisioning:
    """
    Hands certificates to consumers: provisional ones until the CA has
    issued theirs, then the CA-issued ones.
    """

    def __init__(
        self,
        options: ResourceOptions,
        managed: dict[frozenset[str], ManagedCertificate],
        records: Records,
        writes: WriteQueue,
        runInThread: Runner,
        reactor: Any,
        log: Logger,
        deploys: DeployHooks | None = None,
        automatic: bool = True,
    ):
        """
        @param managed: The domain sets managed: the signer may sign for
            every name of theirs.
        @param log: Where events go.
        @param deploys: Runs the deploy command after each new certificate
            is stored and exported.
        @param automatic: Whether the sets without a certificate once
            loaded are put on provisional ones (see L{loaded}).
        """
        self._options = options
        self._managed = managed
        self._records = records
        self._writes = writes
        self._runInThread = runInThread
        self._reactor = reactor
        self._log = log
        self._signer: CertifiedKey | None = None
        # The key of the provisional certificates, in memory only.
        self._key: PrivateKey | None = None
        self._signerLock = DeferredLock()
        self._deploys = deploys
        self._automatic = automatic
        #: Whether the resource has stopped (see L{inTurns}).
        self.stopped = False
        #: Until every set loaded at start is in service (see L{tell}).
        self.startUp = ResourceStartUp(log, options.debug, reactor.seconds())
        # The sets loaded at start without a certificate (see L{loaded}).
        self._startWaits: list[ManagedCertificate] | None = None
        #: Called after each certificate is put in service (see L{deliver}).
        self.deliveryListeners: list[Callable[[], object]] = []
        #: Called with each set whose certificate turned out unusable at
        #: its first use, once it is on a provisional one (see L{unusable}).
        self.unusableListeners: list[Callable[[ManagedCertificate], object]] = []

    @deferred
    async def provision(self, certificates: list[ManagedCertificate]) -> None:
        """
        Put each of C{certificates} that has no certificate on a
        provisional one, of this start's provisional key, signed when it
        is first needed (see L{makeProvisional}): nothing is signed here,
        so thousands of sets are in service at once; L{PROVISION_BATCH}
        a turn of the reactor, the collector paused (see L{pausedCollection}).
        """
        now = utc(self._reactor.seconds())
        try:
            signer, key = await self._signerLock.run(self._currentSigner, now)
            with pausedCollection():
                async for batch in inTurns(self._reactor, certificates, lambda: self.stopped):
                    for certificate in batch:
                        if certificate.current is None:
                            provisional = makeProvisional(signer, certificate.domains, now, key)
                            self.deliver(certificate, provisional)
        finally:
            self._provisioned(certificates)

    def _provisioned(self, certificates: list[ManagedCertificate]) -> None:
        """
        A provision of C{certificates} ended: it ends the start-up when it
        covered every set loaded at start without a certificate.
        """
        waits, covered = self._startWaits, {id(c) for c in certificates}
        if waits is not None and all(c.current is not None or id(c) in covered for c in waits):
            self._startWaits = None
            self._endStartUp()

    def tell(self, event: events.EventType, fields: Callable[[], dict[str, Any]]) -> None:
        """
        Log C{event} with the fields C{fields} makes, or count it while the
        start-up is under way (see L{ResourceStartUp.tell}).
        """
        self.startUp.tell(event, fields)

    def loaded(self) -> None:
        """
        The sets found at start are loaded: the start-up ends now, unless
        some have no certificate and are to be put on provisional ones
        (L{provision} ends it then).
        """
        waits = [c for c in self._managed.values() if c.current is None]
        if not self._automatic or not waits:
            self._endStartUp()
        elif not self.startUp.ended:
            self._startWaits = waits

    def _endStartUp(self) -> None:
        # Not once stopped (during the load or the provision): no 20208.
        if not self.startUp.ended and not self.stopped:
            waiting = sum(c.current is None for c in self._managed.values())
            self.startUp.end(self._reactor.seconds(), waiting)

    @deferred
    async def _currentSigner(self, now: datetime.datetime) -> tuple[CertifiedKey, PrivateKey]:
        """
        The signer for provisional certificates of every set managed, made
        or loaded when the one in use may not sign for them, and the
        provisional key of this start, made in a worker thread with the
        first signer and again with each new one; run under
        C{_signerLock}, so that overlapping provisions make one of each.
        The signer's names are checked in a worker thread: with thousands
        of names, that takes a tenth of a second.
        """
        names = sorted({name for c in self._managed.values() for name in c.domains})
        if self._signer is None or await self._runInThread(signerProblem, self._signer, names, now):
            self._signer = await self._loadOrMakeSigner(now, names)
            self._key = await self._runInThread(generateKey, "ecdsa-p256")
        assert self._key is not None
        return self._signer, self._key

    async def _loadOrMakeSigner(self, now: datetime.datetime, names: list[str]) -> CertifiedKey:
        """
        The stored signer when it may sign for C{names}, else a new one that
        may, stored in its place.
        """
        problem: str | None = "none was stored"
        try:
            pem = await self._records.loadProvisionalSigner()
            if pem is not None:
                stored = CertifiedKey.fromPEM(pem)
                problem = await self._runInThread(signerProblem, stored, names, now)
                if problem is None:
                    return stored
        except (StorageError, ValueError) as error:
            events.STORED_STATE_IGNORED.emit(
                self._log, domains="the provisional signer", details=str(error)
            )
            problem = "the stored one is damaged"
        signer = await self._runInThread(makeSigner, self._options.name, names, now)
        # Services start on it whether or not it can be saved now.
        self._writes.saveSigner(signer)
        events.PROVISIONAL_SIGNER_MADE.emit(
            self._log,
            count=len(names),
            not_after=signer.notAfter.isoformat(),
            reason=problem,
        )
        return signer

    def deliver(
        self,
        certificate: ManagedCertificate,
        certifiedKey: CertifiedKey,
        consumers: list[ICertificateConsumer] | None = None,
    ) -> None:
        """
        Put C{certifiedKey} in service for C{certificate}: hand it to
        C{consumers}, by default every consumer of the set.
        """
        certificate.current = certifiedKey
        for listener in list(self.deliveryListeners):
            listener()
        event = events.PROVISIONAL_IN_USE if certifiedKey.provisional else events.CERTIFICATE_IN_USE
        for consumer in certificate.consumers if consumers is None else consumers:
            if IReportsUnusableCertificates.providedBy(consumer):
                consumer.reportUnusableTo(self.unusable)
            try:
                consumer.useCertificate(certifiedKey)
            except Exception:
                self._log.failure(
                    "Service {service} refused the certificate for {domains}",
                    service=consumer.name,
                    domains=certificate.label,
                )
                continue
            self.tell(event, functools.partial(_inUse, consumer, certificate))

    def unusable(self, domains: tuple[str, ...], certifiedKey: CertifiedKey) -> None:
        """
        A consumer of C{domains} cannot present C{certifiedKey}, read from
        the storage with its key left for its first use, and has nothing
        else to present: when it is still the set's certificate, the set
        is put on a provisional certificate (event 20260), then its
        L{unusableListeners} are called (an order starts at once).  Only
        a key that does not match its certificate (or does not parse)
        counts: a context refused for another reason (a local OpenSSL
        policy, say) would refuse every new certificate as well, and
        ordering again would only spend the CA's rate limits.
        """
        certificate = self._managed.get(frozenset(domains))
        if certificate is None or certificate.current is not certifiedKey:
            return
        if certifiedKey.provisional or certifiedKey.keyMatches:
            return
        events.CERTIFICATE_UNUSABLE.emit(self._log, domains=certificate.label)
        certificate.current = None
        provisioned = self.provision([certificate])
        provisioned.addErrback(lambda failure: unexpected(self._log, failure))
        provisioned.addCallback(
            lambda _: [listener(certificate) for listener in self.unusableListeners]
        )
        provisioned.addErrback(lambda failure: unexpected(self._log, failure))

    def dropped(self, certificate: ManagedCertificate) -> None:
        """
        C{certificate}'s set is no longer used: its deploy command is not
        run again.
        """
        if self._deploys is not None:
            self._deploys.forget(certificate)

    def export(self, certificate: ManagedCertificate, deploy: bool = False) -> None:
        """
        Write the certificate in service to the store directory, if one is
        configured; a failure is tried again at the write retry pace (see
        L{WriteQueue}).

        @param deploy: Whether the certificate is new: the deploy command
            runs once it is written.
        """
        directory = self._options.storeDirectory
        if directory is None or (issued := certificate.issued) is None:
            return
        deploys = self._deploys
        if deploy and deploys is not None:
            deploys.want(certificate)

        def exported(folder: object) -> None:
            if deploy and deploys is not None:
                deploys.deploy(certificate, issued, str(folder))

        self._writes.export(directory, certificate, issued, exported)

    def stored(self, certificate: ManagedCertificate, issued: CertifiedKey) -> None:
        """
        The new certificate C{issued} of C{certificate} is stored: without a
        store directory, the deploy command runs now (with one, once it is
        exported: see L{export}).
        """
        if self._options.storeDirectory is None and self._deploys is not None:
            self._deploys.deploy(certificate, issued, None)
