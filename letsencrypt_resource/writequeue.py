"""
The ordered write queue: every write of the resource to its storage
(renewal state, certificates, the provisional signer, the account) and to
the store directory (exports, in a worker thread), one at a time in the
order made, and the failed ones tried again at the retry pace (kept by
L{WriteRetries}); the order leases they are made under are kept by
L{WriteLeases} until they have ended.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .certificates import CertifiedKey
from .keys import PrivateKey
from .limiter import Limiter
from .managed import ManagedCertificate
from .ownleasewrites import Superseded, saveStateAlone, storeIfNewer
from .reporting import unexpected
from .storage.export import UnreadableCertificate
from .storage.export import exportCertificate as exportInFolder
from .storage.interface import ILease, LeaseLost, StaleFence, StorageError
from .storage.records import Records
from .writeleases import WriteLeases
from .writeretries import WriteRetries

#: Runs a CPU-heavy or blocking function off the reactor thread.
Runner = Callable[..., Deferred]
#: Called with what a write returned, once it worked.
Done = Callable[[object], object]


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
        C{args}; the queue keeps it (see L{WriteLeases.releaseAfterWrites})
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

    @ivar retries: The failed writes, to be tried again.
    @ivar leases: The order leases kept while writes made under them
        have not ended.
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
            woken up at L{WriteRetries.retryAt}.
        """
        self._records = records
        self._runWrite = runWrite
        self._runInThread = runInThread
        self._log = log
        self._failed = failed
        self._writes = Limiter(1)
        self._writing: dict[Deferred[bool], Hashable] = {}
        self.retries = WriteRetries(reactor, checkInterval)
        # The latest write of each key that has not ended (queued or running).
        self._inFlight: dict[Hashable, Write] = {}
        self.leases = WriteLeases(self.retries.under, log)

    def whenWritten(self, *keys: Hashable) -> Deferred[None]:
        """
        A Deferred that fires once the writes started so far (only those of
        C{keys}, when given) have ended, and those they started in turn (a
        stored certificate saves the renewal state).  Cancelling it leaves
        the writes to end.
        """

        def pending() -> list[Deferred[bool]]:
            return [w for w, key in self._writing.items() if not keys or key in keys]

        async def waiting() -> None:
            while writings := pending():
                await gatherResults([_endOf(writing) for writing in writings], consumeErrors=True)

        return Deferred.fromCoroutine(waiting())

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
                Write(
                    certificate.label,
                    saveStateAlone,
                    (self._records, self._log, domains, certificate.state()),
                ),
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
        L{letsencrypt_resource.account.forgetRegistration}).
        """
        return self._write(
            "account",
            Write("the ACME account", _forgetRegistration, (self._records, acmeURL, key)),
        )

    def export(
        self, directory: str, certificate: ManagedCertificate, issued: CertifiedKey, done: Done
    ) -> Deferred[bool]:
        """
        Write C{issued}, the certificate of C{certificate}, to C{directory},
        in a worker thread; C{done} is called with the folder once written.
        """

        def exportCertificate(*args: object) -> Deferred[str]:
            return self._runInThread(exportInFolder, *args)

        write = Write(
            certificate.label, exportCertificate, (directory, certificate.domains, issued)
        )
        return self._write(("export", certificate.domains), attrs.evolve(write, done=done))

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
            earlier = self.retries.succeeded(key)
            failed = write.failed or (earlier.failed if earlier is not None else None)
            if failed:
                events.STORE_RECOVERED.emit(self._log, domains=write.label, path=failed)
            write.done(result)
            return True

        def storeFailed(failure: Failure) -> bool:
            failure.trap(StorageError)
            error = failure.value
            assert isinstance(error, StorageError)
            if _dropped(error, write.label, self._log):
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
                    attrs.evolve(
                        write,
                        function=storeIfNewer,
                        args=(self._records, self._log, *write.args),
                        fence=None,
                    ),
                )
                return False
            events.STORE_FAILED.emit(
                self._log, domains=write.label, path=error.key, details=error.message
            )
            self.retries.failed(key, attrs.evolve(write, failed=error.key))
            # It has ended: the wake-up _failed asks for must count it as
            # retryable (see hasRetries), even when it is the only one.
            if self._inFlight.get(key) is write:
                del self._inFlight[key]
            self._failed()
            return False

        def bug(failure: Failure) -> bool:
            unexpected(self._log, failure)
            return False

        def ended(result: bool) -> bool:
            self._writing.pop(writing, None)
            if self._inFlight.get(key) is write:
                del self._inFlight[key]
            if write.fence is not None:
                self.leases.written(write.fence)
            return result

        self._inFlight[key] = write
        args = write.args if write.fence is None else (*write.args, write.fence)
        if write.fence is not None:
            self.leases.writing(write.fence)
        writing = self._writes.run(self._runWrite, write.function, *args)
        writing.addCallbacks(written, storeFailed)
        writing.addErrback(bug)
        self._writing[writing] = key
        writing.addBoth(ended)
        shielded: Deferred[bool] = Deferred()
        writing.chainDeferred(shielded)
        return shielded

    def retry(self, now: float) -> None:
        """
        Try the failed writes again, when it is time (see
        L{WriteRetries.due}).
        """
        for key, write in self.retries.due(now, self._inFlight):
            if write.fence is not None:
                # Kept from expiring between retries; when it was taken
                # over meanwhile, the write is refused as stale.
                write.fence.renew().addErrback(lambda _: None)
            self._write(key, write)

    def hasRetries(self) -> bool:
        """
        Whether some failed write waits for L{WriteRetries.retryAt}.
        """
        return bool(self.retries.waiting(self._inFlight))


async def _forgetRegistration(records: Records, acmeURL: str, key: PrivateKey) -> None:
    """
    L{letsencrypt_resource.account.forgetRegistration}, imported at its
    first call: only an account that connected is forgotten, so the
    modules that speak ACME are loaded (see
    L{letsencrypt_resource.acmeloading}).
    """
    from .account import forgetRegistration

    await forgetRegistration(records, acmeURL, key)


def _dropped(error: StorageError, label: str, log: Logger) -> bool:
    """
    Whether the write of C{label} that failed with C{error} is dropped, not
    tried again, as writing it again would not help: one superseded by a
    newer holder's (event 20201), and the export of a certificate whose
    record no longer parses (event 20268).
    """
    if isinstance(error, Superseded):
        events.CERTIFICATE_WRITE_STALE.emit(
            log, domains=label, details=f"not stored: {error.message}"
        )
    elif isinstance(error, UnreadableCertificate):
        events.CERTIFICATE_NOT_EXPORTED.emit(
            log, domains=label, path=error.key, details=error.message
        )
    else:
        return False
    return True


def _endOf(writing: Deferred[bool]) -> Deferred[None]:
    """
    A Deferred that fires once C{writing} has ended; cancelling it leaves
    C{writing} alone.
    """
    ended: Deferred[None] = Deferred()

    def end(result: object) -> object:
        ended.callback(None)
        return result

    writing.addBoth(end)
    return ended
