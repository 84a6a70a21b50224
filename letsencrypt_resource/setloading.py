"""
How the domain sets are made from their consumers and take back what the
storage holds for them: the rules the resource loads its sets by (see
L{letsencrypt_resource.domainsets}), shared with the operations command's
status when no server runs (see L{letsencrypt_resource.statusreader}), so
that both read the same sets the same way.

Which records are trusted: a renewal state that parses, restored under the
rules of L{letsencrypt_resource.renewalstate}; a stored certificate that
parses (its key left for its first use when the state vouches for the
record, see L{storedDigest <letsencrypt_resource.renewalstate.storedDigest>},
and the certificate too when the state records its facts, see
L{storedRecord <letsencrypt_resource.renewalstate.storedRecord>}) and passes
L{storedRefusal}; the saved waits
then brought back within bounds (L{letsencrypt_resource.retrywaits.capWaits}).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .certificates import CertifiedKey, InvalidCertificate
from .config import ResourceOptions
from .coroutines import deferred
from .interfaces import ICertificateConsumer
from .managed import ManagedCertificate
from .renewalstate import storedRecord
from .reporting import unexpected, when
from .retrywaits import capWaits
from .startupcollection import pausedCollection
from .storage.interface import StorageError
from .storage.records import Records, StoredSet

#: How many batches of domain sets are read from the storage at once: one,
#: read while no other is taken back.  A storage's reader thread and the
#: reactor's take turns with the interpreter at each system call the reader
#: makes (five per file): read beside the sets taken back, at 10,000 sets,
#: the files took seven times as long to read, and the reactor thread was
#: switched out some 8,000 times (bench/twistdscale.py).  On a PostgreSQL
#: storage, whose reads are round trips to the database rather than system
#: calls on files, one job puts those round trips one after another too (157
#: queries at 10,000 sets); the loader cannot tell which storage it reads, as
#: most are wrapped (sealed, cached, a cluster's), so one job reads either.
LOAD_JOBS = 1
#: How many domain sets a batch holds: their records are read together
#: (see L{Records.loadSets}).
LOAD_BATCH = 64


def settingsFingerprint(options: ResourceOptions) -> str:
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


def collectSets(
    consumers: Iterable[tuple[str, ICertificateConsumer]], settings: str
) -> dict[frozenset[str], ManagedCertificate]:
    """
    The domain sets of C{consumers}, by their set of names: the consumers
    are taken in the order of their registered names (the first of the
    pair), and a set keeps the names as its first consumer lists them.

    @param settings: The L{settingsFingerprint} of the resource's options.
    """
    managed: dict[frozenset[str], ManagedCertificate] = {}
    for _, consumer in sorted(consumers, key=lambda pair: pair[0]):
        key = frozenset(consumer.domains)
        if key not in managed:
            managed[key] = ManagedCertificate(tuple(consumer.domains), settings)
        managed[key].consumers.append(consumer)
    return managed


class Refusal(enum.Enum):
    """
    Why a stored certificate is not put in service (see L{storedRefusal}).
    """

    #: It has expired, or does not replace the CA-issued one in service.
    NOT_NEWER = "not newer"
    #: The set has keys revoked as compromised, and its key cannot be read
    #: or is not the certificate's.
    KEY_UNREADABLE = "the stored key cannot be read or is not the certificate's"
    #: Its key was revoked as compromised.
    COMPROMISED = "its key was revoked as compromised"
    #: It is not for the set's names.
    OTHER_NAMES = "not for its names"


def storedRefusal(
    certificate: ManagedCertificate, stored: CertifiedKey, now: float
) -> Refusal | None:
    """
    Why C{stored}, the stored certificate of C{certificate}, is not to be
    put in service at C{now}; C{None} when it is: it has not expired,
    replaces the CA-issued certificate in service (see L{_newer}), its key
    is not revoked as compromised, and it is for the set's names.
    """
    if not _newer(certificate, stored, now):
        return Refusal.NOT_NEWER
    if certificate.compromisedKeys:
        # The key is read here, at its first use (see CertifiedKey.key).
        if not stored.keyMatches:
            return Refusal.KEY_UNREADABLE
        if certificate.isCompromised(stored.key):
            return Refusal.COMPROMISED
    if not stored.carries(certificate.domains):
        return Refusal.OTHER_NAMES
    return None


def _newer(certificate: ManagedCertificate, stored: CertifiedKey, now: float) -> bool:
    """
    Whether C{stored} has not expired at C{now} and replaces the CA-issued
    certificate in service for C{certificate}, if any: it ends later, or,
    being another certificate (another serial), no earlier.  Times are in
    whole seconds: a forced renewal or a revoke's replacement may end in
    the very second the certificate it replaces ends.
    """
    notAfter = stored.validity[1]
    issued = certificate.issued
    if issued is not None:
        ends = issued.validity[1]
        if notAfter < ends or (notAfter == ends and not _another(stored, issued)):
            return False
    return notAfter > now


def _another(stored: CertifiedKey, issued: CertifiedKey) -> bool:
    """
    Whether C{stored} is another certificate than C{issued}, which ends in
    the same second: another serial.  Both may have been taken on their
    recorded facts and parse only now (see L{RecordedCertificate
    <letsencrypt_resource.certificates.RecordedCertificate>}): a stored
    certificate that cannot be read replaces nothing; one that can replaces
    an C{issued} that cannot.
    """
    try:
        serial = stored.certificate.serial_number
    except InvalidCertificate:
        return False
    try:
        return serial != issued.certificate.serial_number
    except InvalidCertificate:
        return True


class StoredTaker(Protocol):
    """
    What a L{SetLoader} does with the records it reads.
    """

    def ignored(self, certificate: ManagedCertificate, error: StorageError) -> None:
        """
        A record of C{certificate} cannot be read or parsed: C{error}.
        """

    def acceptable(self, certificate: ManagedCertificate, stored: CertifiedKey) -> bool:
        """
        Whether C{stored}, C{certificate}'s stored certificate, is to be
        put in service (L{storedRefusal} says none).
        """

    def putInService(self, certificate: ManagedCertificate, stored: CertifiedKey) -> None:
        """
        Put C{stored} in service for C{certificate}.
        """


class SetLoader:
    """
    Reads the records of domain sets and has each take back its own.
    """

    def __init__(
        self, records: Records, taker: StoredTaker, reactor: Any, maximum: float, log: Logger
    ):
        """
        @param taker: What to do with each record read.
        @param reactor: Gives the time.
        @param maximum: The check interval: the longest saved wait kept.
        @param log: Where events go.
        """
        self._records = records
        self._taker = taker
        self._reactor = reactor
        self._maximum = maximum
        self._log = log

    @deferred
    async def loadAll(self, certificates: list[ManagedCertificate]) -> None:
        """
        Load C{certificates} by batches of L{LOAD_BATCH}, L{LOAD_JOBS}
        batches at a time: each job takes the next batch once it is done
        with one, so that nothing is made for a set before its turn; an
        unexpected error is logged and the other sets loaded.  The storage
        is told first which records will be read, in which order (see
        L{Records.planSets}).

        The garbage collector's automatic collections pause meanwhile (see
        L{pausedCollection <letsencrypt_resource.startupcollection.pausedCollection>}).
        """
        with pausedCollection():
            await self._loadAll(certificates)

    async def _loadAll(self, certificates: list[ManagedCertificate]) -> None:
        self._records.planSets([c.domains for c in certificates])
        pending = (
            certificates[start : start + LOAD_BATCH]
            for start in range(0, len(certificates), LOAD_BATCH)
        )

        async def job() -> None:
            for batch in pending:
                await self._loadBatch(batch)

        jobs = min(LOAD_JOBS, -(-len(certificates) // LOAD_BATCH))
        await gatherResults([Deferred.fromCoroutine(job()) for _ in range(jobs)])

    async def _loadBatch(self, batch: list[ManagedCertificate]) -> None:
        """
        Read the records of the sets of C{batch} together, and take each
        set's back; when they cannot be read together for an unexpected
        error, each set's alone, so that the error is logged for its set
        only.
        """
        try:
            stored = await self._records.loadSets([c.domains for c in batch])
        except Exception:
            if len(batch) == 1:
                unexpected(self._log, Failure())
                return
            for certificate in batch:
                await self._loadBatch([certificate])
            return
        for certificate, records in zip(batch, stored, strict=True):
            try:
                self.takeStored(certificate, records)
            except Exception:
                unexpected(self._log, Failure())

    def takeStored(self, certificate: ManagedCertificate, records: StoredSet) -> None:
        """
        Take back the saved renewal state and the stored certificate of
        C{certificate}, read as C{records}; a damaged record is reported
        and ignored, so the set is renewed.
        """
        taker = self._taker
        try:
            state = records.renewalState()
        except StorageError as error:
            taker.ignored(certificate, error)
            state = None
        if state is not None:
            certificate.restore(state)
        try:
            stored = records.certifiedKey(*storedRecord(state))
        except StorageError as error:
            taker.ignored(certificate, error)
        else:
            if stored is not None and taker.acceptable(certificate, stored):
                taker.putInService(certificate, stored)
        now = self._reactor.seconds()
        # Only a saved next attempt after 0 can be brought forward: the
        # saved retry time is worked out, for the event, then alone.
        saved = certificate.retryAt() if certificate.nextAttempt > 0 else 0.0
        if capWaits(certificate, now, self._maximum):
            events.STORED_WAIT_CAPPED.emit(
                self._log,
                domains=certificate.label,
                saved=when(saved),
                when=when(certificate.retryAt()),
            )
