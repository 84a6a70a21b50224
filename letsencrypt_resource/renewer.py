"""
The renewer: one attempt per domain set at a time, a few at once, each
refreshing the set's renewal information when it is time and ordering a
certificate when it is due -- naming the one it replaces when the CA
allows it, and never with a key revoked as compromised.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .account import AccountBusy
from .acmeclient import ACMEClient, ACMEProblem, certificateID
from .certificates import CertifiedKey
from .challenge import ChallengeResponder
from .config import ResourceOptions
from .connection import AccountConnection, accountForgotten
from .coroutines import deferred
from .issuer import ORDER_TIMEOUT, PendingOrder, obtainCertificate, orderSurvives
from .keygen import generateKey
from .keys import keyType, publicKeyDigest
from .leasing import orderLease, takeLease
from .limiter import Limiter
from .managed import ManagedCertificate
from .outcomes import REASONS, Outcomes
from .renewalinfo import RenewalInfo
from .reporting import unexpected
from .storage.interface import ILease, IStorage, LeaseLost, StaleFence, StorageError
from .storage.records import Records
from .writequeue import Runner, WriteQueue

#: How long a set waits while another user of the storage creates or
#: changes the account.
ACCOUNT_BUSY_WAIT = 60.0
#: How many orders run at once.
CONCURRENT_ORDERS = 2
#: How long the lease on a set is taken for, and renewed for every third of
#: it while its order runs: longer than an order may take.
ORDER_LEASE = 2 * ORDER_TIMEOUT


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
        connection: AccountConnection,
        renewalInfo: RenewalInfo,
        outcomes: Outcomes,
        responder: ChallengeResponder,
        runInThread: Runner,
        reactor: Any,
        log: Logger,
    ):
        """
        @param managed: The domain sets managed: no order uses an account
            key revoked as compromised for any of them.
        @param storage: Where the leases of the orders are taken, and the
            challenges published for other nodes to answer.
        @param checkWritable: Checks, in a thread, that a set's
            certificate can be stored, before it is ordered.
        @param responder: Where the orders' HTTP-01 challenges go.
        @param log: Where events go.
        """
        self._options = options
        self._managed = managed
        self._storage = storage
        self._records = Records(storage)
        self._checkWritable = checkWritable
        self._writes = writes
        self._connection = connection
        self._renewalInfo = renewalInfo
        self._outcomes = outcomes
        self._responder = responder
        self._runInThread = runInThread
        self._reactor = reactor
        self._log = log
        self._orders = Limiter(CONCURRENT_ORDERS)

    def startAttempt(self, certificate: ManagedCertificate, forced: str | None) -> None:
        """
        Start an attempt for C{certificate}, kept in its C{attempt} until it
        ends; C{forced}, when given, is why it renews whether due or not.
        """

        def ended(result: object) -> object:
            certificate.attempt = None
            return result

        certificate.attempt = self._orders.run(self._attempt, certificate, forced)
        certificate.attempt.addBoth(ended)

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
        have ended (see L{WriteQueue.releaseAfterWrites}).
        """
        due = forced is not None or certificate.plan().at <= self._reactor.seconds()
        try:
            try:
                await self._attemptOnce(certificate, forced, due)
            except ACMEProblem as error:
                if not accountForgotten(error):
                    raise
                await self._connection.lost()
                await self._attemptOnce(certificate, forced, due)
        except CancelledError:
            raise
        except (StaleFence, LeaseLost) as error:
            events.ORDER_ABANDONED.emit(self._log, domains=certificate.label, details=str(error))
            self._waitForNextCheck(certificate)
        except AccountBusy as error:
            events.DEBUG.emit(self._log, details=f"{certificate.label}: {error}")
            now = self._reactor.seconds()
            certificate.holdUntil = max(certificate.holdUntil, now + ACCOUNT_BUSY_WAIT)
        except Exception as error:
            if accountForgotten(error):
                await self._connection.lost()
            self._outcomes.failed(certificate, error)
        finally:
            self._writes.releaseAfterWrites(certificate)

    def _waitForNextCheck(self, certificate: ManagedCertificate) -> None:
        """
        Look at C{certificate} again at the next regular check, not before:
        another user of the storage orders it.
        """
        now = self._reactor.seconds()
        certificate.holdUntil = max(certificate.holdUntil, now + self._options.checkInterval)

    async def _attemptOnce(
        self, certificate: ManagedCertificate, forced: str | None, due: bool
    ) -> None:
        """
        The work of L{_attempt}, with the account as the storage holds it.
        """
        try:
            client = await self._connection.acmeClient()
        except CancelledError:
            raise
        except Exception as error:
            if due:
                raise
            self._renewalInfo.failed(certificate, error)
            return
        now = self._reactor.seconds()
        issued = certificate.issued
        if issued is not None and client.offersRenewalInfo:
            if certificate.ariNextCheck <= now:
                await self._renewalInfo.refresh(client, certificate, issued)
        plan = certificate.plan()
        if forced is None and plan.at > self._reactor.seconds():
            self._outcomes.announce(certificate)
            return
        await self._checkStorable(certificate)
        lease = self._writes.takeBack(certificate)
        if lease is not None:
            await lease.renew()
        else:
            # A state write made outside an order holds the set's lease
            # while it runs (see WriteQueue.saveState): let it end first.
            await self._writes.whenWritten()
            lease = await takeLease(
                self._storage, orderLease(certificate.domains), ORDER_LEASE, self._log
            )
        if lease is None:
            events.ORDER_BUSY.emit(self._log, domains=certificate.label)
            self._waitForNextCheck(certificate)
            return
        await self._renewUnder(lease, client, certificate, forced or plan.reason)

    async def _renewUnder(
        self, lease: ILease, client: ACMEClient, certificate: ManagedCertificate, reason: str
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
        certificate.lease = lease

        def beforeFinalize() -> Deferred[None]:
            return fail(lost[0]) if lost else lease.renew()

        try:
            await self._renew(client, certificate, reason, beforeFinalize)
        finally:
            renewing.stop()

    async def _renew(
        self,
        client: ACMEClient,
        certificate: ManagedCertificate,
        reason: str,
        beforeFinalize: Callable[[], object],
    ) -> None:
        events.ORDER_STARTED.emit(
            self._log,
            domains=certificate.label,
            acme_url=self._options.acmeURL,
            reason=REASONS.get(reason, reason),
        )
        profile = self._options.profile
        if profile is not None and profile not in client.profiles:
            raise ProfileNotOffered(profile, sorted(client.profiles))
        self._refuseCompromisedAccountKey(client)
        issued = certificate.issued
        resume = certificate.pendingOrder
        if resume is not None and not self._mayUse(certificate, resume.key):
            resume = certificate.pendingOrder = None
        if resume is not None:
            key = resume.key
        elif self._options.reuseKey and issued and self._mayUse(certificate, issued.key):
            key = issued.key
        else:
            key = await self._runInThread(generateKey, self._options.keyType)

        def created(order: PendingOrder) -> Deferred[bool]:
            certificate.pendingOrder = order
            return self._writes.saveState(certificate)

        replaces = self._replaces(client, certificate)
        order = partial(
            obtainCertificate,
            client,
            self._responder,
            self._reactor,
            certificate.domains,
            key,
            profile=profile,
            created=created,
            publish=partial(self._publish, certificate),
            withdraw=partial(self._withdraw, certificate),
            beforeFinalize=beforeFinalize,
        )
        try:
            try:
                new = await order(replaces=replaces, resume=resume)
            except ACMEProblem as problem:
                # Any refusal of a request (not a failed validation) may be
                # about the certificate named: ask once more without it.
                if replaces is None or problem.status is None:
                    raise
                events.REPLACES_REFUSED.emit(
                    self._log, domains=certificate.label, details=str(problem)
                )
                new = await order()
        except Exception as error:
            if not orderSurvives(error):
                certificate.pendingOrder = None
            raise
        orderedBy = _orderedBy(new, self._options.acmeURL, client)
        await self._outcomes.issued(certificate, new, orderedBy)

    def _publish(
        self, certificate: ManagedCertificate, token: str, keyAuthorization: str
    ) -> Deferred[None]:
        """
        Store the challenge C{token} under the set's lease, so that every
        node's challenge site answers it, before the CA is asked to
        validate it.
        """
        return self._records.saveChallenge(token, keyAuthorization, certificate.lease)

    def _withdraw(self, certificate: ManagedCertificate, token: str) -> Deferred[None]:
        """
        Remove the challenge C{token} once its validation has ended; a
        failure is event 20009 and the order goes on (a token left behind
        answers nothing the CA still asks).
        """

        def failed(failure: Failure) -> None:
            failure.trap(StorageError)
            error = failure.value
            assert isinstance(error, StorageError)
            events.STORE_FAILED.emit(
                self._log, domains=certificate.label, path=error.key, details=error.message
            )

        return self._records.deleteChallenge(token).addErrback(failed)

    def _replaces(self, client: ACMEClient, certificate: ManagedCertificate) -> str | None:
        """
        The RFC 9773 identifier of the certificate a renewal of
        C{certificate} replaces, when the CA may take it: it offers
        renewal information, the certificate has not expired, and it is
        known to have been ordered by this account at this CA (a CA
        refuses to let an account replace another's certificate).
        """
        issued = certificate.issued
        if issued is None or not client.offersRenewalInfo:
            return None
        if issued.notAfter.timestamp() <= self._reactor.seconds():
            return None
        orderedBy = _orderedBy(issued, self._options.acmeURL, client)
        if orderedBy is None or orderedBy != certificate.orderedBy:
            return None
        return orderedBy[0]

    def _mayUse(self, certificate: ManagedCertificate, key: Any) -> bool:
        """
        Whether an order of C{certificate} may be for C{key}: it is of the
        configured type and was never revoked as compromised.
        """
        return keyType(key) == self._options.keyType and not certificate.isCompromised(key)

    def _refuseCompromisedAccountKey(self, client: ACMEClient) -> None:
        """
        @raise CompromisedAccountKey: when the account key is a key revoked
            as compromised, for any domain set.
        """
        digest: str | None = None
        for certificate in self._managed.values():
            if not certificate.compromisedKeys:
                continue
            # Digested once, and only when some key was revoked: this runs
            # before every order, over every set.
            digest = digest or publicKeyDigest(client.accountKey.key)
            if digest in certificate.compromisedKeys:
                raise CompromisedAccountKey(certificate.label, self._options.accountKeyFile)

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


class CompromisedAccountKey(Exception):
    """
    The account key is a key revoked as compromised: no order is placed
    with it.
    """

    def __init__(self, domains: str, accountKeyFile: str | None):
        super().__init__(domains, accountKeyFile)
        self.domains = domains
        self.accountKeyFile = accountKeyFile

    def __str__(self) -> str:
        where = (
            f"option 'account_key': {self.accountKeyFile} holds"
            if self.accountKeyFile
            else "the stored account key is"
        )
        fix = (
            "name another key's account"
            if self.accountKeyFile
            else "run the operations command's 'account rollover'"
        )
        return (
            f"{where} the key of a certificate for {self.domains} that was "
            f"revoked as compromised; {fix}"
        )


class ProfileNotOffered(Exception):
    """
    The configured profile is not one the CA offers.
    """

    def __init__(self, profile: str, offered: list[str]):
        super().__init__(profile, offered)
        self.profile = profile
        self.offered = offered

    def __str__(self) -> str:
        offered = ", ".join(self.offered) if self.offered else "none"
        return f"option 'profile': the CA offers no profile {self.profile!r} (it offers: {offered})"


def _orderedBy(
    issued: CertifiedKey, acmeURL: str, client: ACMEClient
) -> tuple[str, str, str] | None:
    """
    The certificate ID of C{issued} with the CA and account of C{client},
    as L{ManagedCertificate.orderedBy} keeps them; C{None} when the
    certificate has no ID or the account no URL.
    """
    try:
        identifier = certificateID(issued.certificate)
    except ValueError:
        return None
    if client.accountURL is None:
        return None
    return (identifier, acmeURL, client.accountURL)
