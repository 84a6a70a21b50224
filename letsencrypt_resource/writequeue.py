"""
The ordered write queue: every write of the resource to its storage
(renewal state, certificates, the provisional signer, the account) and to
the store directory (exports, in a worker thread), one at a time in the
order made, and the failed ones tried again at the retry pace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .account import forgetRegistration
from .certificates import CertifiedKey
from .coroutines import deferred
from .keys import PrivateKey
from .leasing import orderLease, releaseQuietly, underOwnLease
from .limiter import Limiter
from .managed import ManagedCertificate
from .policy import retryDelay
from .reporting import unexpected
from .storage.export import exportCertificate as exportInFolder
from .storage.interface import ILease, LeaseLost, StaleFence, StorageError
from .storage.records import Records, certificateKey

#: Runs a CPU-heavy or blocking function off the reactor thread.
Runner = Callable[..., Deferred]


@attrs.frozen
class Write:
    """
    One write to the storage or the store directory.

    @ivar label: What it is for, for events.
    @ivar function: Does it, with C{args}: returns a Deferred, which fails
        with L{StorageError} when it cannot.
    @ivar done: Called with what C{function} returned, once it worked.
    @ivar failed: The path of its last failure, if it failed before.
    @ivar fence: The lease it is made under, passed to C{function} after
        C{args}; the queue keeps it (see L{WriteQueue.releaseAfterWrites})
        while the write has not ended.
    """

    label: str
    function: Callable[..., object]
    args: tuple[object, ...]
    done: Callable[[object], object] = lambda result: None
    failed: str | None = None
    fence: ILease | None = None


class WriteQueue:
    """
    The writes to the storage, in the background, one at a time so that
    they land in the order they were made.

    @ivar retryAt: When the failed writes are due to be tried again.
    """

    def __init__(
        self,
        records: Records,
        runWrite: Runner,
        runInThread: Runner,
        reactor: Any,
        checkInterval: float,
        log: Logger,
        failed: Callable[[], None],
    ):
        """
        @param runWrite: Calls a write's function with its arguments, for
            a Deferred of its result.
        @param runInThread: Runs the exports, in a worker thread.
        @param checkInterval: The longest wait between two rounds of retries.
        @param log: Where events go.
        @param failed: Called after a write failed, to have the queue
            woken up at L{retryAt}.
        """
        self._records = records
        self._runWrite = runWrite
        self._runInThread = runInThread
        self._reactor = reactor
        self._checkInterval = checkInterval
        self._log = log
        self._failed = failed
        self._writes = Limiter(1)
        self._writing: set[Deferred[bool]] = set()
        # Writes that failed, the latest per key, to be tried again at
        # retryAt; _rounds counts the rounds that failed.
        self._unwritten: dict[Hashable, Write] = {}
        # The latest write of each key that has not ended (queued or running).
        self._inFlight: dict[Hashable, Write] = {}
        # The order leases handed over by their attempts, with their sets,
        # and how many writes made under each have not ended.
        self._held: dict[ILease, ManagedCertificate] = {}
        self._fenced: Counter[ILease] = Counter()
        self.retryAt = 0.0
        self._rounds = 0

    def whenWritten(self) -> Deferred[None]:
        """
        A Deferred that fires once the writes started so far have ended,
        and those they started in turn (a stored certificate saves the
        renewal state).  Cancelling it leaves the writes to end.
        """

        def shielded(writing: Deferred[bool]) -> Deferred[None]:
            ended: Deferred[None] = Deferred()

            def end(result: object) -> object:
                ended.callback(None)
                return result

            writing.addBoth(end)
            return ended

        async def waiting() -> None:
            while self._writing:
                await gatherResults(
                    [shielded(writing) for writing in self._writing], consumeErrors=True
                )

        return Deferred.fromCoroutine(waiting())

    def releaseAfterWrites(self, certificate: ManagedCertificate) -> None:
        """
        Take over the lease of C{certificate}'s order, now that its attempt
        has ended: it is kept, and renewed before each retry, until no
        write made under it is queued, running or waiting for a retry;
        then it is released and C{certificate.lease} cleared.  A write
        tried again after its attempt keeps the fence it was made under,
        and no other user of the storage orders the set while its
        certificate waits to be stored.
        """
        lease = certificate.lease
        if lease is not None:
            self._held[lease] = certificate
            self._releaseIfDone(lease)

    def takeBack(self, certificate: ManagedCertificate) -> ILease | None:
        """
        The lease C{certificate}'s order still holds (an attempt going on
        once more, or one whose writes L{releaseAfterWrites} keeps it for),
        for a new order to run under: the queue no longer releases it.
        """
        lease = certificate.lease
        if lease is not None:
            self._held.pop(lease, None)
        return lease

    def letGo(self) -> Deferred[None]:
        """
        Release every lease the queue keeps, at stop: writes still waiting
        for a retry are not tried again.
        """
        held, self._held = self._held, {}
        releasing = []
        for lease, certificate in held.items():
            if certificate.lease is lease:
                certificate.lease = None
            releasing.append(releaseQuietly(lease, self._log))
        return gatherResults(releasing).addCallback(lambda _: None)

    def _releaseIfDone(self, lease: ILease) -> None:
        """
        Release C{lease} if it is kept and no write under it is left.
        """
        if lease not in self._held or self._fenced[lease]:
            return
        if any(write.fence is lease for write in self._unwritten.values()):
            return
        certificate = self._held.pop(lease)
        del self._fenced[lease]
        if certificate.lease is lease:
            certificate.lease = None
        releaseQuietly(lease, self._log)

    def saveState(self, certificate: ManagedCertificate) -> Deferred[bool]:
        """
        Save the renewal state of C{certificate} as it is now, under the
        lease of its order, if one runs or its writes are pending; else
        under the set's lease taken for the write, and not at all when
        another user of the storage holds it (the holder's state is the
        newer: see the storage documentation's rule).
        """
        domains = certificate.domains
        if certificate.lease is None:
            return self._write(
                ("state", domains),
                Write(certificate.label, self._saveStateAlone, (domains, certificate.state())),
            )
        return self._write(
            ("state", domains),
            Write(
                certificate.label,
                self._records.saveRenewalState,
                (domains, certificate.state()),
                fence=certificate.lease,
            ),
        )

    @deferred
    async def _saveStateAlone(self, domains: tuple[str, ...], state: dict[str, Any]) -> None:
        """
        Save C{state} for C{domains} under the set's lease taken for it,
        unless another user of the storage holds that lease.
        """

        async def save(lease: ILease) -> None:
            await self._records.saveRenewalState(domains, state, lease)

        await underOwnLease(self._records.storage, orderLease(domains), self._log, save)

    def saveCertificate(
        self,
        certificate: ManagedCertificate,
        issued: CertifiedKey,
        done: Callable[[object], object],
    ) -> Deferred[bool]:
        """
        Store C{issued} as the certificate of C{certificate}, under the
        lease of its order, if one runs; C{done} is called with its key
        once it is stored.
        """
        return self._write(
            ("certificate", certificate.domains),
            Write(
                certificate.label,
                self._records.saveCertificate,
                (certificate.domains, issued),
                done=done,
                fence=certificate.lease,
            ),
        )

    @deferred
    async def _storeIfNewer(self, domains: tuple[str, ...], issued: CertifiedKey) -> str:
        """
        Store C{issued} for C{domains} under the set's lease taken for it,
        unless the storage holds a certificate that ends no earlier.

        @raise StorageError: when another user of the storage holds the
            lease (the write is tried again at the retry pace), or the
            storage holds a newer certificate (the write is moot).
        """

        async def store(lease: ILease) -> str:
            try:
                stored = await self._records.loadCertificate(domains)
            except StorageError:
                stored = None
            if stored is not None and stored.notAfter >= issued.notAfter:
                raise _Superseded(certificateKey(domains), "the storage holds a newer one")
            return await self._records.saveCertificate(domains, issued, lease)

        free, key = await underOwnLease(
            self._records.storage, orderLease(domains), self._log, store
        )
        if not free or key is None:
            raise StorageError(
                certificateKey(domains), "another user of the storage holds its lease"
            )
        return key

    def saveSigner(self, signer: CertifiedKey) -> Deferred[bool]:
        """
        Store the provisional signer C{signer}.
        """
        return self._write(
            "signer",
            Write("the provisional signer", self._records.saveProvisionalSigner, (signer.toPEM(),)),
        )

    def forgetAccount(self, acmeURL: str, key: PrivateKey) -> Deferred[bool]:
        """
        Store the account at C{acmeURL}, of C{key}, as unregistered (see
        L{forgetRegistration}).
        """
        return self._write(
            "account",
            Write("the ACME account", forgetRegistration, (self._records, acmeURL, key)),
        )

    def export(
        self, directory: str, certificate: ManagedCertificate, issued: CertifiedKey
    ) -> Deferred[bool]:
        """
        Write C{issued}, the certificate of C{certificate}, to C{directory},
        in a worker thread.
        """

        def exportCertificate(*args: object) -> Deferred[str]:
            return self._runInThread(exportInFolder, *args)

        return self._write(
            ("export", certificate.domains),
            Write(certificate.label, exportCertificate, (directory, certificate.domains, issued)),
        )

    def _write(self, key: Hashable, write: Write) -> Deferred[bool]:
        """
        Run C{write}, after the writes before it.

        A L{StorageError} is event 20009, and the write is kept to be tried
        again at the retry pace (the latest one per C{key}: a newer write
        of the same thing replaces it, and while one is under way the
        failed one waits); a write that works after a failure of its
        C{key} is event 20185.  A write refused because its lease was taken
        over (L{StaleFence}, event 20189) is dropped: a newer holder wrote;
        but a certificate is not (event 20201): it is stored under a lease
        taken anew, unless the storage holds one that ends no earlier.

        @return: A Deferred that fires with whether it was written; it
            never fails, and cancelling it leaves the write to end (stopping
            waits for it).
        """

        def written(result: object) -> bool:
            # Writes run in order: one that worked makes any earlier failed
            # write of the same thing moot.
            earlier = self._unwritten.pop(key, None)
            if not self._unwritten:
                self._rounds = 0
            failed = write.failed or (earlier.failed if earlier is not None else None)
            if failed:
                events.STORE_RECOVERED.emit(self._log, domains=write.label, path=failed)
            write.done(result)
            return True

        def storeFailed(failure: Failure) -> bool:
            failure.trap(StorageError)
            error = failure.value
            assert isinstance(error, StorageError)
            if isinstance(error, _Superseded):
                events.CERTIFICATE_WRITE_STALE.emit(
                    self._log, domains=write.label, details=f"not stored: {error.message}"
                )
                return False
            if isinstance(error, (StaleFence, LeaseLost)) and write.fence is not None:
                if write.function != self._records.saveCertificate:
                    return False
                events.CERTIFICATE_WRITE_STALE.emit(
                    self._log,
                    domains=write.label,
                    details="storing it under a new lease unless a newer one is stored",
                )
                self._write(
                    key,
                    attrs.evolve(write, function=self._storeIfNewer, fence=None),
                )
                return False
            events.STORE_FAILED.emit(
                self._log, domains=write.label, path=error.key, details=error.message
            )
            self._unwritten[key] = attrs.evolve(write, failed=error.key)
            self.retryAt = self._reactor.seconds() + retryDelay(
                self._rounds + 1, self._checkInterval
            )
            # It has ended: the wake-up _failed asks for must count it as
            # retryable (see _retryable), even when it is the only one.
            if self._inFlight.get(key) is write:
                del self._inFlight[key]
            self._failed()
            return False

        def bug(failure: Failure) -> bool:
            unexpected(self._log, failure)
            return False

        def ended(result: bool) -> bool:
            self._writing.discard(writing)
            if self._inFlight.get(key) is write:
                del self._inFlight[key]
            if write.fence is not None:
                self._fenced[write.fence] -= 1
                self._releaseIfDone(write.fence)
            return result

        self._inFlight[key] = write
        args = write.args if write.fence is None else (*write.args, write.fence)
        if write.fence is not None:
            self._fenced[write.fence] += 1
        writing = self._writes.run(self._runWrite, write.function, *args)
        writing.addCallbacks(written, storeFailed)
        writing.addErrback(bug)
        self._writing.add(writing)
        writing.addBoth(ended)
        shielded: Deferred[bool] = Deferred()
        writing.chainDeferred(shielded)
        return shielded

    def retry(self, now: float) -> None:
        """
        Try the failed writes again, when it is time; one whose key has a
        newer write under way waits for it instead (run after it, it
        would put older data back): that write's end replaces it or makes
        it moot.
        """
        if now < self.retryAt:
            return
        retrying = self._retryable()
        if retrying:
            self._rounds += 1
        for key, write in retrying.items():
            del self._unwritten[key]
            if write.fence is not None:
                # Kept from expiring between retries; when it was taken
                # over meanwhile, the write is refused as stale.
                write.fence.renew().addErrback(lambda _: None)
            self._write(key, write)

    def hasRetries(self) -> bool:
        """
        Whether some failed write waits for L{retryAt}.
        """
        return bool(self._retryable())

    def _retryable(self) -> dict[Hashable, Write]:
        """
        The failed writes with no newer write of their key under way.
        """
        return {k: w for k, w in self._unwritten.items() if k not in self._inFlight}


class _Superseded(StorageError):
    """
    A certificate was not stored: the storage holds one that ends no
    earlier.
    """
