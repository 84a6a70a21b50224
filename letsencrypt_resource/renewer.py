"""
The renewer: one attempt per domain set at a time, a few at once, each
refreshing the set's renewal information when it is time and, when a
certificate is due, taking the set's lease and keeping it while
L{Ordering} orders one; how an attempt ends is recorded by L{Outcomes}.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .acmeerrors import AccountBusy, ACMEProblem
from .attempts import AttemptQueue
from .carotation import CA, CARotation
from .challenge import ChallengeResponder
from .config import ResourceOptions
from .connection import accountForgotten
from .coroutines import deferred
from .leasing import orderLease, takeLease
from .managed import ManagedCertificate
from .ordering import Ordering
from .outcomes import Outcomes
from .renewalinfo import RenewalInfo
from .reporting import unexpected
from .storage.interface import (
    ILease,
    IStorage,
    LeaseLost,
    StaleFence,
    StorageError,
    StorageUnavailable,
)
from .storage.records import Records
from .writequeue import Runner, WriteQueue

if TYPE_CHECKING:
    from .acmeclient import ACMEClient

#: How long a set waits while another user of the storage creates or
#: changes the account.
ACCOUNT_BUSY_WAIT = 60.0
#: How many orders run at once.
CONCURRENT_ORDERS = 2
#: How long the lease on a set is taken for, by the storage's clock; it is
#: renewed every third of it while its order runs (an order may take up to
#: C{issuer.ORDER_TIMEOUT}, 5 minutes), so that a holder that was killed
#: or cut off delays its set's order by this long at most.
ORDER_LEASE = 60.0


class Renewer:
    """
    Runs the renewal attempts of the domain sets.
    """

    def __init__(
        self,
        options: ResourceOptions,
        managed: dict[frozenset[str], ManagedCertificate],
        storage: IStorage,
        checkWritable: Callable[[tuple[str, ...]], None] | None,
        writes: WriteQueue,
        cas: CARotation,
        renewalInfo: RenewalInfo,
        outcomes: Outcomes,
        responder: ChallengeResponder,
        runInThread: Runner,
        reactor: Any,
        log: Logger,
        adoptStored: Callable[[ManagedCertificate], Awaitable[bool]],
    ):
        """
        @param managed: The domain sets managed: no order uses an account
            key revoked as compromised for any of them.
        @param storage: Where the leases of the orders are taken, and the
            challenges published for other nodes to answer.
        @param checkWritable: Checks, in a thread, that a set's
            certificate can be stored, before it is ordered.
        @param cas: The CAs, and which one each attempt orders from.
        @param responder: Where the orders' HTTP-01 challenges go.
        @param log: Where events go.
        @param adoptStored: Reads a set's stored certificate and puts it
            in service when another user of the storage stored one that
            replaces the one in service; whether it did.
        """
        self._options = options
        self._storage = storage
        self._checkWritable = checkWritable
        self._writes = writes
        self._renewalInfo = renewalInfo
        self._outcomes = outcomes
        self._runInThread = runInThread
        self._reactor = reactor
        self._log = log
        self._adoptStored = adoptStored
        self._attempts = AttemptQueue(self._attempt, CONCURRENT_ORDERS, log)
        self._cas = cas
        shared = (managed, Records(storage), writes, outcomes, responder, runInThread, reactor, log)
        self._orderings = {ca.label: Ordering(ca.options, *shared) for ca in cas.all}

    def startAttempt(self, certificate: ManagedCertificate, forced: str | None) -> None:
        """
        Start an attempt for C{certificate}, kept in its C{attempt} until it
        ends; C{forced}, when given, is why it renews whether due or not.
        """
        self._attempts.add(certificate, forced)

    def whenEnded(self) -> Deferred[None]:
        """
        A Deferred that fires once every attempt started so far has ended.
        """
        return self._attempts.whenEnded()

    def stop(self) -> None:
        """
        Cancel every attempt, queued or under way.
        """
        self._attempts.cancelAll()

    @deferred
    async def _attempt(self, certificate: ManagedCertificate, forced: str | None) -> None:
        """
        Refresh the renewal information of C{certificate} when it is time,
        then renew it if it is due, or if C{forced} gives a reason to.

        When only the renewal information was due, not reaching the CA is
        a warning (20161) and no failed attempt.  When the CA no longer
        knows the account, the same key is registered again and the attempt
        goes on once more with it.  An order whose lease was taken over is
        abandoned (event 20200), no failed attempt: its new holder orders.
        While another user of the storage creates or changes the account,
        the set waits L{ACCOUNT_BUSY_WAIT}, no failed attempt either.

        The outcome is recorded under the order's lease, when one was
        taken, which the write queue then keeps until the attempt's writes
        have ended (see L{letsencrypt_resource.writeleases.WriteLeases.releaseAfterWrites}).
        """
        due = forced is not None or certificate.plan().at <= self._reactor.seconds()
        try:
            ca = self._cas.choose(certificate, self._reactor.seconds())
            try:
                await self._attemptOnce(ca, certificate, forced, due)
            except ACMEProblem as error:
                if not accountForgotten(error):
                    raise
                await ca.connection.lost()
                await self._attemptOnce(ca, certificate, forced, due)
        except CancelledError:
            raise
        except (StaleFence, LeaseLost) as error:
            events.ORDER_ABANDONED.emit(self._log, domains=certificate.label, details=str(error))
            self._waitForNextCheck(certificate)
        except AccountBusy as error:
            events.DEBUG.emit(self._log, details=f"{certificate.label}: {error}")
            now = self._reactor.seconds()
            certificate.holdUntil = max(certificate.holdUntil, now + ACCOUNT_BUSY_WAIT)
            _keepForced(certificate, forced)
        except Exception as error:
            if accountForgotten(error):
                await ca.connection.lost()
            _forcedAfterFailure(certificate, forced, error)
            switchAt = self._cas.failed(certificate, error, self._reactor.seconds())
            self._outcomes.failed(certificate, error, switchAt)
        finally:
            self._writes.leases.releaseAfterWrites(certificate)

    def _waitForLease(self, certificate: ManagedCertificate) -> None:
        """
        Look at C{certificate} again once the lease another user of the
        storage holds has ended, at the latest: a holder that stopped
        renewing it has lost it by then; one still ordering has stored
        its certificate, or renewed the lease and is asked again.
        """
        now = self._reactor.seconds()
        certificate.holdUntil = max(certificate.holdUntil, now + ORDER_LEASE)

    def _waitForNextCheck(self, certificate: ManagedCertificate) -> None:
        """
        Look at C{certificate} again at the next regular check, not before:
        another user of the storage orders it.
        """
        now = self._reactor.seconds()
        certificate.holdUntil = max(certificate.holdUntil, now + self._options.checkInterval)

    async def _attemptOnce(
        self, ca: CA, certificate: ManagedCertificate, forced: str | None, due: bool
    ) -> None:
        """
        The work of L{_attempt} with C{ca}, with the account as the storage
        holds it; the renewal information is asked of the CA that issued
        the certificate (see L{RenewalInfo.refreshAt}).
        """
        try:
            client = await ca.connection.acmeClient()
        except CancelledError:
            raise
        except Exception as error:
            if due:
                raise
            self._renewalInfo.failed(certificate, error)
            return
        now = self._reactor.seconds()
        issued = certificate.issued
        if issued is not None and certificate.ariNextCheck <= now:
            issuer = self._cas.issuerOf(certificate)
            await self._renewalInfo.refreshAt(issuer, ca, client, certificate, issued)
        plan = certificate.plan()
        if forced is None and plan.at > self._reactor.seconds():
            self._outcomes.announce(certificate)
            return
        await self._checkStorable(certificate)
        lease = self._writes.leases.takeBack(certificate)
        taken = lease is None
        if lease is not None:
            await lease.renew()
        else:
            # A state write made outside an order holds the set's lease
            # while it runs (see WriteQueue.saveState): let it end first.
            await self._writes.whenWritten(
                ("state", certificate.domains), ("certificate", certificate.domains)
            )
            lease = await takeLease(
                self._storage, orderLease(certificate.domains), ORDER_LEASE, self._log
            )
        if lease is None:
            events.ORDER_BUSY.emit(self._log, domains=certificate.label)
            self._waitForLease(certificate)
            _keepForced(certificate, forced)
            return
        certificate.lease = lease
        if taken and forced is None and await self._storedMeanwhile(certificate):
            return
        await self._renewUnder(lease, ca, client, certificate, forced or plan.reason)

    async def _storedMeanwhile(self, certificate: ManagedCertificate) -> bool:
        """
        Whether another user of the storage stored, before this node took
        the set's lease, a certificate for C{certificate} that is not due:
        read again (its change notice may not have arrived yet) and put in
        service if it replaces the one in service, or put in service by
        that notice while this attempt waited; then no other is ordered
        (event 20226).
        """
        await self._adoptStored(certificate)
        if certificate.plan().at <= self._reactor.seconds():
            return False
        events.ORDER_NOT_NEEDED.emit(self._log, domains=certificate.label)
        self._outcomes.announce(certificate)
        return True

    async def _renewUnder(
        self,
        lease: ILease,
        ca: CA,
        client: ACMEClient,
        certificate: ManagedCertificate,
        reason: str,
    ) -> None:
        """
        Renew C{certificate} under C{lease}: its writes are fenced by it,
        it is renewed while the order runs and once more before the order
        is finalized; L{_attempt} hands it to the write queue at its end.
        """
        lost: list[Failure] = []

        def renew() -> Deferred[None]:
            return lease.renew().addErrback(lost.append)

        renewing = LoopingCall(renew)
        renewing.clock = self._reactor
        renewing.start(ORDER_LEASE / 3, now=False).addErrback(
            lambda failure: unexpected(self._log, failure)
        )

        def beforeFinalize() -> Deferred[None]:
            return fail(lost[0]) if lost else lease.renew()

        try:
            await self._orderings[ca.label].order(client, certificate, reason, beforeFinalize)
        finally:
            renewing.stop()

    async def _checkStorable(self, certificate: ManagedCertificate) -> None:
        """
        Check, in a thread, that a new certificate for C{certificate} can be
        stored, so that no order is placed whose result would be lost; a
        failure is event 20009, and the attempt fails.
        """
        if self._checkWritable is None:
            return
        try:
            await self._runInThread(self._checkWritable, certificate.domains)
        except StorageError as error:
            events.STORE_FAILED.emit(
                self._log, domains=certificate.label, path=error.key, details=error.message
            )
            raise


def _keepForced(certificate: ManagedCertificate, forced: str | None) -> None:
    """
    A forced renewal of C{certificate} could not start, for a passing
    cause: keep it asked for, so that its next attempt renews (see
    L{ManagedCertificate.forcedReason}).
    """
    if forced is not None:
        certificate.forcedReason = forced


def _forcedAfterFailure(
    certificate: ManagedCertificate, forced: str | None, error: Exception
) -> None:
    """
    An attempt of C{certificate} failed with C{error}.  A forced renewal is
    kept when the database could not be reached (retried when it is back,
    see L{letsencrypt_resource.clusterresume}).  After any other failure
    (at the CA, say), a forced renewal, kept or not, is dropped: one rule
    for all of them, a forced renewal that failed is not asked again, and
    the set follows its own plan, retries included.
    """
    if isinstance(error, StorageUnavailable):
        _keepForced(certificate, forced)
    else:
        certificate.forcedReason = None
