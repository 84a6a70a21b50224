"""
One order of a domain set's certificate, under the lease its attempt
holds: with a key of the configured type never revoked as compromised,
naming the certificate it replaces when the CA allows it, and its
challenges published in the storage for every node to answer.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .acmeerrors import ACMEProblem, ChallengeNotOffered, orderSurvives
from .certificates import CertifiedKey
from .challenge import ChallengeResponder
from .config import ResourceOptions, canonicalURL
from .keygen import generateKey
from .keys import keyType, publicKeyDigest
from .managed import REASONS, ManagedCertificate
from .outcomes import Outcomes
from .pendingorder import PendingOrder
from .storage.interface import StorageError
from .storage.records import Records
from .writequeue import Runner, WriteQueue

if TYPE_CHECKING:
    from .acmeclient import ACMEClient


class Ordering:
    """
    Places the orders of the domain sets and records what they issue.
    """

    def __init__(
        self,
        options: ResourceOptions,
        managed: dict[frozenset[str], ManagedCertificate],
        records: Records,
        writes: WriteQueue,
        outcomes: Outcomes,
        responder: ChallengeResponder,
        runInThread: Runner,
        reactor: Any,
        log: Logger,
    ):
        """
        @param managed: The domain sets managed: no order uses an account
            key revoked as compromised for any of them.
        @param records: Where the challenges are published for other nodes
            to answer.
        @param responder: Where the orders' challenges go.
        @param runInThread: Runs key generation.
        @param log: Where events go.
        """
        self._options = options
        self._managed = managed
        self._records = records
        self._writes = writes
        self._outcomes = outcomes
        self._responder = responder
        self._runInThread = runInThread
        self._reactor = reactor
        self._log = log

    async def order(
        self,
        client: ACMEClient,
        certificate: ManagedCertificate,
        reason: str,
        beforeFinalize: Callable[[], object],
    ) -> None:
        """
        Order a certificate for C{certificate} with C{client}, for
        C{reason} (a key of L{REASONS}), and record what is issued (see
        L{Outcomes.issued}); C{beforeFinalize} is called, and awaited,
        before the order is finalized.  An order that may be resumed is
        kept in C{certificate.pendingOrder}.

        C{client} is connected: the modules that speak ACME are loaded (see
        L{letsencrypt_resource.acmeloading}).
        """
        from .issuer import obtainCertificate

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
        elif (
            self._options.reuseKey
            and issued
            and issued.keyMatches  # the key, read at its first use, may not parse
            and self._mayUse(certificate, issued.key)
        ):
            key = issued.key
        else:
            key = await self._runInThread(generateKey, self._options.keyType)

        def created(order: PendingOrder) -> Deferred[bool]:
            certificate.pendingOrder = order
            return self._writes.saveState(certificate)

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
        types = self._options.challengeTypes
        for position, challengeType in enumerate(types):
            try:
                new = await self._orderWith(
                    partial(order, challengeType=challengeType), client, certificate, resume
                )
                break
            except (ACMEProblem, ChallengeNotOffered) as error:
                if position + 1 == len(types) or not _validationFailed(error):
                    raise
                events.CHALLENGE_FALLBACK.emit(
                    self._log,
                    domains=certificate.label,
                    failed=challengeType,
                    next=types[position + 1],
                    details=str(error),
                )
                resume = None
        orderedBy = _orderedBy(new, self._options.acmeURL, client)
        await self._outcomes.issued(certificate, new, orderedBy)

    async def _orderWith(
        self,
        order: Callable[..., Deferred[CertifiedKey]],
        client: ACMEClient,
        certificate: ManagedCertificate,
        resume: PendingOrder | None,
    ) -> CertifiedKey:
        """
        C{order} the certificate, naming the certificate it replaces when
        the CA may take it, and once more without when the CA refuses; an
        order that cannot be resumed is dropped from C{certificate}.
        """
        replaces = self._replaces(client, certificate)
        try:
            try:
                return await order(replaces=replaces, resume=resume)
            except ACMEProblem as problem:
                # Any refusal of a request (not a failed validation) may be
                # about the certificate named: ask once more without it.
                if replaces is None or problem.status is None:
                    raise
                events.REPLACES_REFUSED.emit(
                    self._log, domains=certificate.label, details=str(problem)
                )
                return await order()
        except Exception as error:
            if not orderSurvives(error):
                certificate.pendingOrder = None
            raise

    def _publish(
        self, certificate: ManagedCertificate, token: str, keyAuthorization: str
    ) -> Deferred[None]:
        """
        Store the challenge C{token} under the set's lease, so that every
        node's challenge site answers it, before the CA is asked to
        validate it; nothing when no other process uses the storage.
        """
        if not self._records.sharesChallenges:
            return succeed(None)
        return self._records.saveChallenge(token, keyAuthorization, certificate.lease)

    def _withdraw(self, certificate: ManagedCertificate, token: str) -> Deferred[None]:
        """
        Remove the challenge C{token} once its validation has ended; a
        failure is event 20009 and the order goes on (a token left behind
        answers nothing the CA still asks).
        """
        if not self._records.sharesChallenges:
            return succeed(None)

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
        if orderedBy is None or not _sameOrderer(orderedBy, certificate.orderedBy):
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


def _validationFailed(error: Exception) -> bool:
    """
    Whether C{error} ended an order because a validation failed, or the CA
    offered no challenge of the type asked: another type may succeed.  A
    problem the CA answered a request with (it has an HTTP status) is no
    validation failure.
    """
    return isinstance(error, ChallengeNotOffered) or (
        isinstance(error, ACMEProblem) and error.status is None
    )


def _sameOrderer(orderedBy: tuple[str, str, str], recorded: tuple[str, str, str] | None) -> bool:
    """
    Whether C{orderedBy} and the C{recorded} L{ManagedCertificate.orderedBy}
    name the same certificate, account and CA, its directory URL written in
    any of its equivalent forms (see L{canonicalURL}).
    """

    def normal(value: tuple[str, str, str]) -> tuple[str, str, str]:
        identifier, acmeURL, account = value
        return (identifier, canonicalURL(acmeURL), account)

    return recorded is not None and normal(orderedBy) == normal(recorded)


def _orderedBy(
    issued: CertifiedKey, acmeURL: str, client: ACMEClient
) -> tuple[str, str, str] | None:
    """
    The certificate ID of C{issued} with the CA and account of C{client},
    as L{ManagedCertificate.orderedBy} keeps them; C{None} when the
    certificate has no ID or the account no URL.
    """
    from .acmeclient import certificateID

    try:
        identifier = certificateID(issued.certificate)
    except ValueError:
        return None
    if client.accountURL is None:
        return None
    return (identifier, acmeURL, client.accountURL)
