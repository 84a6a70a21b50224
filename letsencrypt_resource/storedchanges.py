"""
The stored certificates of the domain sets taken into service: the checks
a stored certificate passes, at start and when another user of the storage
stores one while the resource runs, and the watch that sees those.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .certificates import CertifiedKey
from .chaincheck import chainProblem
from .config import ResourceOptions
from .managed import ManagedCertificate
from .provisioning import Provisioning
from .reporting import unexpected
from .setloading import Refusal, storedRefusal
from .storage.interface import StorageError
from .storage.records import Records, certificateKey

#: The keys of the certificates, watched for other users' changes.
CERTIFICATES = "certificates/"


class StoredChanges:
    """
    Puts the domain sets' stored certificates in service when they pass,
    and watches the certificates other users of the storage store.
    """

    def __init__(
        self,
        options: ResourceOptions,
        records: Records,
        managed: dict[frozenset[str], ManagedCertificate],
        provisioning: Provisioning,
        reactor: Any,
        log: Logger,
    ):
        """
        @param managed: The domain sets, by their set of names (shared with
            L{letsencrypt_resource.domainsets.DomainSets}).
        @param log: Where events go.
        """
        self._options = options
        self._records = records
        self._managed = managed
        self._provisioning = provisioning
        self._reactor = reactor
        self._log = log
        self._watching: Deferred[Callable[[], None]] | None = None
        self._watchAgain: IDelayedCall | None = None
        #: The serial of the stored certificate last refused as compromised,
        #: by set: it is read again at each attempt, and reported once.
        self._refusedCompromised: dict[frozenset[str], int] = {}
        #: The sets by the key of their certificate, made at the first change
        #: reported after the sets changed (see L{setsChanged}).
        self._byKey: dict[str, ManagedCertificate] | None = None

    def start(self) -> None:
        """
        Watch the certificates other users of the storage store; when the
        watch cannot be set up, try again at the next regular check.
        """
        self._watching = self._records.storage.watch(CERTIFICATES, self._changed)
        self._watching.addErrback(self._watchFailed)

    def stop(self) -> None:
        """
        Stop watching, and trying to.
        """
        watching, self._watching = self._watching, None
        if watching is not None:
            watching.addCallback(lambda stop: stop())
        if self._watchAgain is not None and self._watchAgain.active():
            self._watchAgain.cancel()

    def _unexpected(self, failure: Failure) -> None:
        unexpected(self._log, failure)

    def _watchFailed(self, failure: Failure) -> Callable[[], None]:
        if self._watching is None:
            # Stopped meanwhile: the storage may have closed under it.
            return lambda: None
        self._unexpected(failure)
        self._watchAgain = self._reactor.callLater(self._options.checkInterval, self._rewatch)
        return lambda: None

    def _rewatch(self) -> None:
        """
        Set the watch up again, then catch up: read every set's stored
        certificate, as the changes missed meanwhile went unseen.
        """
        self._watchAgain = None
        self.start()

        def catchUp(stop: Callable[[], None]) -> Callable[[], None]:
            for certificate in list(self._managed.values()):
                self._loadWatched(certificate)
            return stop

        assert self._watching is not None
        self._watching.addCallback(catchUp)

    def _changed(self, key: str) -> None:
        """
        Another user of the storage changed the certificate at C{key}: read
        it, and put it in service for its set when it passes the checks a
        stored certificate passes at start (its key, its names, not expired
        nor revoked as compromised), its chain and times are those of a
        CA's certificate (see L{chainProblem}), and it ends later than the
        one in service.
        """
        if self._byKey is None:
            self._byKey = {certificateKey(c.domains): c for c in self._managed.values()}
        certificate = self._byKey.get(key)
        if (
            certificate is not None
            and self._managed.get(frozenset(certificate.domains)) is certificate
        ):
            self._loadWatched(certificate)

    def setsChanged(self) -> None:
        """
        The domain sets were loaded, or a reload added or dropped some: the
        index of their certificates' keys is made again at the next change
        reported, once, rather than every set compared with each change
        (10,000 changes caught up after an outage, at 10,000 sets).
        """
        self._byKey = None

    def _loadWatched(self, certificate: ManagedCertificate) -> None:
        """
        Read C{certificate}'s stored certificate, which another user of the
        storage may have changed, and put it in service if it passes.
        """
        loading = Deferred.fromCoroutine(self.adopt(certificate))
        loading.addErrback(self._unexpected)

    async def adopt(self, certificate: ManagedCertificate) -> bool:
        """
        Put C{certificate}'s stored certificate in service, when another
        user of the storage stored one that replaces the one in service
        (see L{acceptable}) and its chain and times pass L{chainProblem}.

        @return: Whether it did.
        """
        try:
            stored = await self._records.loadCertificate(certificate.domains)
        except StorageError as error:
            self.ignored(certificate, error)
            return False
        if stored is None or not self.acceptable(certificate, stored):
            return False
        if not await self._chainAccepted(certificate, stored):
            return False
        self.putInService(certificate, stored, deploy=True)
        return True

    async def _chainAccepted(self, certificate: ManagedCertificate, stored: CertifiedKey) -> bool:
        """
        Whether C{stored}, which another user of the storage stored for
        C{certificate}, passes L{chainProblem}; event 20203 when not.
        """
        try:
            pem = await self._records.loadProvisionalSigner()
            signer = CertifiedKey.fromPEM(pem).certificate if pem else None
        except (StorageError, ValueError):
            signer = None
        now = datetime.datetime.fromtimestamp(self._reactor.seconds(), datetime.timezone.utc)
        problem = chainProblem(stored, now, signer)
        if problem is not None:
            events.STORED_CERTIFICATE_REFUSED.emit(
                self._log, domains=certificate.label, details=problem
            )
        return problem is None

    def ignored(self, certificate: ManagedCertificate, error: StorageError) -> None:
        """
        Report that a record of C{certificate} cannot be read (event 20163).
        """
        events.STORED_STATE_IGNORED.emit(self._log, domains=certificate.label, details=str(error))

    def acceptable(self, certificate: ManagedCertificate, stored: CertifiedKey) -> bool:
        """
        Whether C{stored}, the stored certificate of C{certificate}, is to
        be put in service (see L{storedRefusal}); reported when it is not,
        but for being no newer than the one in service, and a key revoked
        as compromised once per certificate.
        """
        refusal = storedRefusal(certificate, stored, self._reactor.seconds())
        if refusal is Refusal.COMPROMISED:
            serial = stored.certificate.serial_number
            if self._refusedCompromised.get(frozenset(certificate.domains)) != serial:
                self._refusedCompromised[frozenset(certificate.domains)] = serial
                events.COMPROMISED_CERTIFICATE_IGNORED.emit(self._log, domains=certificate.label)
        elif refusal is Refusal.KEY_UNREADABLE:
            events.STORED_STATE_IGNORED.emit(
                self._log, domains=certificate.label, details=refusal.value
            )
        elif refusal is Refusal.OTHER_NAMES:
            events.STORED_STATE_IGNORED.emit(
                self._log,
                domains=certificate.label,
                details=f"the stored certificate is for {', '.join(stored.domains)}",
            )
        return refusal is None

    def putInService(
        self, certificate: ManagedCertificate, stored: CertifiedKey, deploy: bool = False
    ) -> None:
        """
        Give C{stored} to C{certificate}'s consumers, and export it.

        @param deploy: Whether it is new, stored by another user of the
            storage while the resource runs: the deploy command runs once
            it is exported.
        """
        self._provisioning.tell(
            events.STORED_CERTIFICATE_LOADED,
            lambda: {"domains": certificate.label, "not_after": stored.notAfter.isoformat()},
        )
        # A forced renewal that could not start is answered by this one.
        certificate.forcedReason = None
        if deploy:
            # An order found in the shared renewal state, read while another
            # node ran it, is that node's and has ended: resuming it would
            # fetch the certificate in service again, not renew.
            certificate.pendingOrder = None
        self._provisioning.deliver(certificate, stored)
        self._provisioning.export(certificate, deploy)
        if deploy:
            # Without a store directory, the command runs now on this node
            # too, not only on the node that ordered it.
            self._provisioning.stored(certificate, stored)
