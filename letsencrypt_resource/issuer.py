"""
One certificate order, from new order to downloaded chain, over HTTP-01
or TLS-ALPN-01.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, cast
from urllib.parse import urlsplit

from acme import challenges, messages
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    FirstError,
    gatherResults,
    maybeDeferred,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .acmeclient import REQUEST_TIMEOUT, ACMEClient, ReplacingOrder
from .acmeerrors import (
    ORDER_TIMEOUT,
    ACMEProblem,
    ACMEProtocolError,
    CertificateMismatch,
    ChallengeNotOffered,
    OrderTimedOut,
)
from .acmeerrors import orderSurvives as orderSurvives
from .alpn import serverName, sharedKey, sharedRecord
from .alpnchallenge import TLSALPN01
from .certificates import CertifiedKey, InvalidCertificate
from .challenge import ChallengeResponder
from .domains import domainsLabel, isIPAddress
from .keys import PrivateKey, makeCSR
from .pendingorder import PendingOrder

#: The first wait between two polls when the server gives no Retry-After;
#: each later wait is half as long again, up to L{MAX_POLL_DELAY}.
FIRST_POLL_DELAY = 0.02
MAX_POLL_DELAY = 5.0


#: The challenge types an order can answer, by name.
CHALLENGE_TYPES: dict[str, type[challenges.KeyAuthorizationChallenge]] = {
    "http-01": challenges.HTTP01,
    "tls-alpn-01": TLSALPN01,
}


_log = Logger()

#: The order statuses from which an order can still end in a certificate.
_RESUMABLE = (
    messages.STATUS_PENDING,
    messages.STATUS_READY,
    messages.STATUS_PROCESSING,
    messages.STATUS_VALID,
)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


async def _resumeOrder(
    client: ACMEClient, pending: PendingOrder, domains: tuple[str, ...]
) -> messages.Order | None:
    """
    Fetch C{pending}'s order to go on with it: 20191; or, when it cannot
    end in a certificate for C{domains}, C{None}: 20192.

    Only a URL of the CA's own is fetched, whatever the state says.

    @raise ACMEProtocolError: when the CA cannot be reached: the order is
        kept for the next attempt.
    """
    label = domainsLabel(domains)
    if _origin(pending.url) != _origin(client.directory["newOrder"]):
        reason = "its URL is not on the CA's server"
    else:
        try:
            order, _ = await client.fetch(pending.url, messages.Order)
        except ACMEProblem as problem:
            reason = f"the CA refused it: {problem}"
        else:
            names = {identifier.value for identifier in order.identifiers}
            if names != set(domains):
                reason = f"it is for {', '.join(sorted(names))}"
            elif order.status not in _RESUMABLE:
                reason = f"it is {order.status.name}"
            else:
                events.ORDER_RESUMED.emit(
                    _log, domains=label, order=pending.url, status=order.status.name
                )
                return order
    events.ORDER_DROPPED.emit(_log, domains=label, order=pending.url, details=reason)
    return None


async def _pollOrder(
    client: ACMEClient,
    clock: IReactorTime,
    url: str,
    order: messages.Order,
    retryAfter: float | None,
    waitWhile: tuple[messages.Status, ...],
    deadline: float,
) -> messages.Order:
    delay = FIRST_POLL_DELAY
    while order.status in waitWhile:
        wait = retryAfter if retryAfter is not None else delay
        if clock.seconds() + wait > deadline:
            raise OrderTimedOut(order.status.name, ORDER_TIMEOUT)
        await deferLater(clock, wait, lambda: None)
        delay = min(delay * 1.5, MAX_POLL_DELAY)
        order, retryAfter = await client.fetch(url, messages.Order)
    return order


def _challengeProblem(authorization: messages.Authorization) -> messages.Error:
    """
    The problem of an invalid authorization, naming its identifier: its
    challenges' errors (the http-01 one first), or, when the CA gave none,
    a problem of no type that says so.
    """
    failed = sorted(
        (c for c in authorization.challenges if c.error is not None),
        key=lambda c: not isinstance(c.chall, challenges.HTTP01),
    )
    problem = failed[0].error if failed else None
    if problem is None:
        problem = messages.Error(
            typ="about:blank",
            detail="the authorization is invalid and the CA gave no problem",
        )
    return problem.update(identifier=authorization.identifier)


async def _orderProblem(client: ACMEClient, url: str, order: messages.Order) -> Exception:
    """
    Why an order became invalid: the problem of each authorization that
    failed (status invalid), whatever the others' status; a compound
    problem when several failed; else the order's own problem, if any.
    """
    failed: list[messages.Error] = []
    statuses: list[str] = []
    for authorizationURL in order.authorizations:
        authorization, _ = await client.fetch(authorizationURL, messages.Authorization)
        statuses.append(f"{authorization.identifier.value} {authorization.status.name}")
        if authorization.status == messages.STATUS_INVALID:
            failed.append(_challengeProblem(authorization))
    if len(failed) == 1:
        return ACMEProblem(failed[0])
    if failed:
        return ACMEProblem(
            messages.Error.with_code(
                "compound",
                detail=f"validation failed for {len(failed)} names",
                subproblems=tuple(failed),
            )
        )
    if order.error is not None:
        return ACMEProblem(order.error)
    return ACMEProtocolError(
        url,
        "the order is invalid and the CA gave no reason; its authorizations: "
        + (", ".join(statuses) or "none"),
    )


async def _startValidation(
    client: ACMEClient,
    responder: ChallengeResponder,
    url: str,
    tokens: list[str],
    publish: Callable[[str, str], object],
    challengeType: str,
) -> None:
    authorization, _ = await client.fetch(url, messages.Authorization)
    if authorization.status == messages.STATUS_VALID:
        return
    for challenge in authorization.challenges:
        if isinstance(challenge.chall, CHALLENGE_TYPES[challengeType]):
            break
    else:
        raise ChallengeNotOffered(
            url,
            f"the CA offers no {challengeType} challenge for {authorization.identifier.value}",
        )
    chall = challenge.chall
    answer = chall.response(client.accountKey)
    keyAuthorization = chall.key_authorization(client.accountKey)
    identifier = authorization.identifier.value
    if isinstance(chall, TLSALPN01):
        # Published under a key other nodes find from the SNI name.
        token = sharedKey(serverName(identifier))
        record = sharedRecord(identifier, keyAuthorization)
        responder.addALPN(token, identifier, keyAuthorization)
    else:
        token = chall.encode("token")
        record = keyAuthorization
        responder.add(token, keyAuthorization)
    tokens.append(token)
    await maybeDeferred(publish, token, record)
    if challenge.status == messages.STATUS_PENDING:
        await client.answerChallenge(challenge.uri, answer)


def _firstFailure(failure: Failure) -> Failure:
    """
    The failure of the first of several jobs that failed, out of the
    C{FirstError} that C{gatherResults} wraps it in.
    """
    return cast(FirstError, failure.value).subFailure


async def _validateAll(
    client: ACMEClient,
    responder: ChallengeResponder,
    urls: list[str],
    tokens: list[str],
    publish: Callable[[str, str], object],
    challengeType: str,
) -> None:
    """
    Start the validation of each authorization at C{urls}, at once, with
    its challenge of C{challengeType}; when
    one fails, cancel the others and wait for every one to end, so that
    C{tokens} holds every token published (none is added after) before
    failing with the first failure.
    """
    validations = [
        Deferred.fromCoroutine(
            _startValidation(client, responder, url, tokens, publish, challengeType)
        )
        for url in urls
    ]
    try:
        await gatherResults(validations, consumeErrors=True).addErrback(_firstFailure)
    except BaseException:
        for validation in validations:
            validation.cancel()
        await DeferredList(validations, consumeErrors=True)
        raise


def obtainCertificate(
    client: ACMEClient,
    responder: ChallengeResponder,
    clock: IReactorTime,
    domains: tuple[str, ...],
    key: PrivateKey,
    *,
    challengeType: str = "http-01",
    profile: str | None = None,
    replaces: str | None = None,
    resume: PendingOrder | None = None,
    created: Callable[[PendingOrder], object] = lambda order: None,
    publish: Callable[[str, str], object] = lambda token, keyAuthorization: None,
    withdraw: Callable[[str], object] = lambda token: None,
    beforeFinalize: Callable[[], object] = lambda: None,
) -> Deferred[CertifiedKey]:
    """
    Order a certificate for C{domains} and the public half of C{key}, or
    go on with the order C{resume} when it can still end in one.

    Answers each challenge of C{challengeType} (a key of
    L{CHALLENGE_TYPES}) through C{responder}, polls the order
    (honouring Retry-After), finalizes it with a CSR and downloads the chain,
    all within L{ORDER_TIMEOUT} plus one request's time-out.

    @param profile: The CA's certificate profile to ask for.
    @param replaces: The RFC 9773 identifier of the certificate this one
        replaces, for CAs that offer renewal information.
    @param resume: An order an earlier attempt left, for C{key}: fetched
        and continued from where it is when it is pending, ready,
        processing or valid; otherwise a new order is placed.
    @param created: Called with each new order as soon as the CA created
        it, before any validation; the order waits for the Deferred it may
        return (to save it, for instance).
    @param publish: Called with each challenge's token and key
        authorization once C{responder} has it, before the CA is asked to
        validate it; the order waits for the Deferred it may return (to
        make it readable by other nodes, for instance).
    @param withdraw: Called with each token published once the
        validations have ended; the order waits for it in the same way.
    @param beforeFinalize: Called before the order is finalized; the order
        waits for the Deferred it may return, and ends with its failure,
        unfinalized, if it fails.

    @raise ACMEProblem: when the CA refuses the order or a validation fails.
    @raise OrderTimedOut: when the order takes longer than L{ORDER_TIMEOUT}.
    @raise CertificateMismatch: when the issued certificate is not for
        C{key} and C{domains}.
    """

    def timedOut(result: object, timeout: float) -> NoReturn:
        raise OrderTimedOut("unfinished", ORDER_TIMEOUT)

    ordering = Deferred.fromCoroutine(
        _obtain(
            client,
            responder,
            clock,
            domains,
            key,
            challengeType=challengeType,
            profile=profile,
            replaces=replaces,
            resume=resume,
            created=created,
            publish=publish,
            withdraw=withdraw,
            beforeFinalize=beforeFinalize,
        )
    )
    # The polls keep to ORDER_TIMEOUT; this bounds the rest (request
    # retries included) to one request time-out more.
    return ordering.addTimeout(ORDER_TIMEOUT + REQUEST_TIMEOUT, clock, onTimeoutCancel=timedOut)


async def _obtain(
    client: ACMEClient,
    responder: ChallengeResponder,
    clock: IReactorTime,
    domains: tuple[str, ...],
    key: PrivateKey,
    *,
    challengeType: str,
    profile: str | None = None,
    replaces: str | None = None,
    resume: PendingOrder | None = None,
    created: Callable[[PendingOrder], object],
    publish: Callable[[str, str], object],
    withdraw: Callable[[str], object],
    beforeFinalize: Callable[[], object],
) -> CertifiedKey:
    deadline = clock.seconds() + ORDER_TIMEOUT
    order = None
    if resume is not None:
        orderURL = resume.url
        order = await _resumeOrder(client, resume, domains)
    if order is None:
        identifiers = [
            messages.Identifier(
                typ=messages.IDENTIFIER_IP if isIPAddress(name) else messages.IDENTIFIER_FQDN,
                value=name,
            )
            for name in domains
        ]
        orderURL, order = await client.newOrder(
            ReplacingOrder(identifiers=identifiers, profile=profile, replaces=replaces)
        )
        await maybeDeferred(created, PendingOrder(orderURL, key))
    tokens: list[str] = []
    try:
        if order.status == messages.STATUS_PENDING:
            await _validateAll(
                client, responder, order.authorizations, tokens, publish, challengeType
            )
            order = await _pollOrder(
                client,
                clock,
                orderURL,
                order,
                None,
                (messages.STATUS_PENDING,),
                deadline,
            )
    finally:
        for token in tokens:
            responder.remove(token)
        await gatherResults(
            [maybeDeferred(withdraw, token) for token in tokens], consumeErrors=True
        ).addErrback(_firstFailure)
    if order.status == messages.STATUS_INVALID:
        raise await _orderProblem(client, orderURL, order)
    retryAfter = None
    if order.status == messages.STATUS_READY:
        await maybeDeferred(beforeFinalize)
        request = messages.CertificateRequest(csr=makeCSR(key, domains))
        order, retryAfter = await client.finalize(order.finalize, request)
    if order.status in (messages.STATUS_READY, messages.STATUS_PROCESSING):
        order = await _pollOrder(
            client,
            clock,
            orderURL,
            order,
            retryAfter,
            (messages.STATUS_READY, messages.STATUS_PROCESSING),
            deadline,
        )
    if order.status != messages.STATUS_VALID or not order.certificate:
        if order.error is not None:
            raise ACMEProblem(order.error)
        raise ACMEProtocolError(orderURL, f"the order ended {order.status.name}")
    chain = await client.downloadCertificate(order.certificate)
    try:
        return CertifiedKey.fromParts(key, chain, domains=domains)
    except InvalidCertificate as error:
        raise CertificateMismatch(f"the CA's certificate was refused: {error}") from None
