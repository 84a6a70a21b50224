"""
The renewer: one attempt per domain set at a time, a few at once, each
refreshing the set's renewal information when it is time and ordering a
certificate when it is due -- naming the one it replaces when the CA
allows it, and never with a key revoked as compromised.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.logger import Logger

from . import events
from .acmeclient import ACMEClient, ACMEProblem, certificateID
from .certificates import CertifiedKey
from .challenge import ChallengeResponder
from .config import ResourceOptions
from .connection import AccountConnection, accountForgotten
from .interfaces import ICertificateStore
from .issuer import PendingOrder, obtainCertificate, orderSurvives
from .keygen import generateKey
from .keys import keyType, publicKeyDigest
from .limiter import Limiter
from .managed import ManagedCertificate
from .outcomes import REASONS, Outcomes
from .renewalinfo import RenewalInfo
from .store import StoreError
from .writequeue import Runner, WriteQueue

#: How many orders run at once.
CONCURRENT_ORDERS = 2


class Renewer:
    """
    Runs the renewal attempts of the domain sets.
    """

    def __init__(
        self,
        options: ResourceOptions,
        managed: dict[frozenset[str], ManagedCertificate],
        store: ICertificateStore,
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
        @param responder: Where the orders' HTTP-01 challenges go.
        @param log: Where events go.
        """
        self._options = options
        self._managed = managed
        self._store = store
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

    @inlineCallbacks
    def _attempt(self, certificate: ManagedCertificate, forced: str | None) -> Deferred[None]:
        """
        Refresh the renewal information of C{certificate} when it is time,
        then renew it if it is due, or if C{forced} gives a reason to.

        When only the renewal information was due, not reaching the CA is
        a warning (20161) and no failed attempt.  When the CA no longer
        knows the account, the same key is registered again and the attempt
        goes on once more with it.
        """
        due = forced is not None or certificate.plan().at <= self._reactor.seconds()
        try:
            try:
                yield self._attemptOnce(certificate, forced, due)
            except ACMEProblem as error:
                if not accountForgotten(error):
                    raise
                self._connection.lost()
                yield self._attemptOnce(certificate, forced, due)
        except CancelledError:
            raise
        except Exception as error:
            if accountForgotten(error):
                self._connection.lost()
            self._outcomes.failed(certificate, error)

    @inlineCallbacks
    def _attemptOnce(
        self, certificate: ManagedCertificate, forced: str | None, due: bool
    ) -> Deferred[None]:
        """
        The work of L{_attempt}, with the account as the store holds it.
        """
        try:
            client = yield self._connection.acmeClient()
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
                yield self._renewalInfo.refresh(client, certificate, issued)
        plan = certificate.plan()
        if forced is None and plan.at > self._reactor.seconds():
            self._outcomes.announce(certificate)
            return
        yield self._checkWritable(certificate)
        yield self._renew(client, certificate, forced or plan.reason)

    @inlineCallbacks
    def _renew(
        self, client: ACMEClient, certificate: ManagedCertificate, reason: str
    ) -> Deferred[None]:
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
            key = yield self._runInThread(generateKey, self._options.keyType)

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
        )
        try:
            try:
                new = yield order(replaces=replaces, resume=resume)
            except ACMEProblem as problem:
                # Any refusal of a request (not a failed validation) may be
                # about the certificate named: ask once more without it.
                if replaces is None or problem.status is None:
                    raise
                events.REPLACES_REFUSED.emit(
                    self._log, domains=certificate.label, details=str(problem)
                )
                new = yield order()
        except Exception as error:
            if not orderSurvives(error):
                certificate.pendingOrder = None
            raise
        orderedBy = _orderedBy(new, self._options.acmeURL, client)
        yield self._outcomes.issued(certificate, new, orderedBy)

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

    @inlineCallbacks
    def _checkWritable(self, certificate: ManagedCertificate) -> Deferred[None]:
        """
        Check, in a thread, that a new certificate for C{certificate} can be
        stored, so that no order is placed whose result would be lost; a
        failure is event 20009, and the attempt fails.
        """
        try:
            yield self._runInThread(self._store.checkCertificateWritable, certificate.domains)
        except StoreError as error:
            events.STORE_FAILED.emit(
                self._log, domains=certificate.label, path=error.path, details=error.message
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
