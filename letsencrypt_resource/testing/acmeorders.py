"""
The orders of L{FakeACMEServer
<letsencrypt_resource.testing.acmeserver.FakeACMEServer>}: authorizations,
HTTP-01 challenges validated through a callable, finalization and
certificate downloads.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import attrs
from acme import challenges, messages
from cryptography import x509
from twisted.web.server import Request

from ..acmeclient import ReplacingOrder
from ..alpn import serverName
from ..alpnchallenge import TLSALPN01
from .acmewire import BASE, ACMEProblem, answerJSON

if TYPE_CHECKING:
    from .acmeserver import FakeACMEServer


@attrs.define
class _Order:
    identifiers: tuple[str, ...]
    authorizations: list[str]
    status: messages.Status = messages.STATUS_PENDING
    certificate: bytes | None = None
    error: messages.Error | None = None
    validity: float = 90 * 86400


@attrs.define
class _Authorization:
    identifier: str
    token: bytes
    account: str
    status: messages.Status = messages.STATUS_PENDING
    error: messages.Error | None = None
    #: The type of the challenge answered, if any.
    answered: str | None = None


class OrderBook:
    """
    The fake server's orders and authorizations.
    """

    def __init__(self, server: FakeACMEServer, ids: itertools.count[int]) -> None:
        self._server = server
        self._ids = ids
        self._orders: dict[str, _Order] = {}
        self._authorizations: dict[str, _Authorization] = {}

    def _orderBody(self, ident: str) -> messages.Order:
        order = self._orders[ident]
        return messages.Order(
            identifiers=[
                messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)
                for name in order.identifiers
            ],
            status=order.status,
            authorizations=order.authorizations,
            finalize=f"{BASE}/finalize/{ident}",
            certificate=f"{BASE}/cert/{ident}" if order.certificate else None,
            error=order.error,
        )

    def newOrder(self, request: Request, _: str, payload: bytes, account: str) -> bytes:
        """
        Answer a new order of C{account}.
        """
        server = self._server
        order = ReplacingOrder.json_loads(payload)
        server.newOrders.append(order)
        if order.replaces and server.replacesRefusals:
            status, code = server.replacesRefusals.pop(0)
            raise ACMEProblem(status, code, "the certificate named cannot be replaced")
        if order.profile and order.profile not in server.profiles:
            raise ACMEProblem(400, "invalidProfile", f"no profile {order.profile!r}")
        ident = str(next(self._ids))
        names = tuple(identifier.value for identifier in order.identifiers)
        authorizations = []
        for name in names:
            authzID = str(next(self._ids))
            self._authorizations[authzID] = _Authorization(
                name, authzID.encode().rjust(16, b"t"), account
            )
            authorizations.append(f"{BASE}/authz/{authzID}")
        validity = server.profiles.get(order.profile or "default", server.validity)
        self._orders[ident] = _Order(names, authorizations, validity=validity)
        server.ordersCreated += 1
        server.orderTimes.append(server.clock.seconds())
        request.setHeader("location", f"{BASE}/order/{ident}")
        return answerJSON(request, self._orderBody(ident), 201)

    def order(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        """
        Answer a request for the order C{ident}.
        """
        if ident not in self._orders:
            raise ACMEProblem(404, "malformed", "no such order")
        if self._server.orderRetryAfter is not None:
            request.setHeader("retry-after", str(self._server.orderRetryAfter))
        return answerJSON(request, self._orderBody(ident))

    def _authorizationBody(self, ident: str) -> messages.Authorization:
        authorization = self._authorizations[ident]
        offered: list[tuple[challenges.KeyAuthorizationChallenge, str]] = [
            (challenges.HTTP01(token=authorization.token), "chall")
        ]
        if self._server.offerALPN:
            offered.append((TLSALPN01(token=authorization.token), "chall-alpn"))
        return messages.Authorization(
            identifier=messages.Identifier(
                typ=messages.IDENTIFIER_FQDN, value=authorization.identifier
            ),
            status=authorization.status,
            challenges=[
                messages.ChallengeBody(
                    chall=chall,
                    uri=f"{BASE}/{path}/{ident}",
                    # Only the challenge answered carries the outcome.
                    status=authorization.status
                    if authorization.answered in (None, chall.typ)
                    else messages.STATUS_PENDING,
                    error=authorization.error if authorization.answered == chall.typ else None,
                )
                for chall, path in offered
            ],
        )

    def authorization(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        """
        Answer a request for the authorization C{ident}.
        """
        if ident not in self._authorizations:
            raise ACMEProblem(404, "malformed", "no such authorization")
        return answerJSON(request, self._authorizationBody(ident))

    def challenge(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        """
        Answer the HTTP-01 challenge of the authorization C{ident}:
        validated after the server's C{validationDelay}.
        """
        return self._answer(request, ident, challenges.HTTP01.typ)

    def challengeALPN(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        """
        Answer the TLS-ALPN-01 challenge of the authorization C{ident}, in
        the same way.
        """
        return self._answer(request, ident, TLSALPN01.typ)

    def _answer(self, request: Request, ident: str, kind: str) -> bytes:
        authorization = self._authorizations[ident]
        if authorization.status == messages.STATUS_PENDING and authorization.answered is None:
            authorization.answered = kind
            self._server.clock.callLater(
                self._server.validationDelay, self._validate, ident, authorization
            )
        [body] = [c for c in self._authorizationBody(ident).challenges if c.chall.typ == kind]
        return answerJSON(request, body)

    def _served(self, authorization: _Authorization) -> str | None:
        """
        The key authorization the client serves for C{authorization}, by
        the type of challenge it answered.
        """
        server = self._server
        if authorization.answered == TLSALPN01.typ:
            pending = server.validateALPN(serverName(authorization.identifier))
            return pending[1] if pending and pending[0] == authorization.identifier else None
        return server.validate(challenges.HTTP01(token=authorization.token).encode("token"))

    def _validate(self, ident: str, authorization: _Authorization) -> None:
        server = self._server
        challenge = challenges.HTTP01(token=authorization.token)
        served = self._served(authorization)
        expected = challenge.key_authorization(server.accounts.keys[authorization.account])
        if authorization.identifier in server.refuse or served is None:
            authorization.status = messages.STATUS_INVALID
            authorization.error = messages.Error.with_code(
                "unauthorized",
                detail=f"no key authorization served for {authorization.identifier}",
                identifier=messages.Identifier(
                    typ=messages.IDENTIFIER_FQDN, value=authorization.identifier
                ),
            )
        elif served != expected:
            authorization.status = messages.STATUS_INVALID
            authorization.error = messages.Error.with_code(
                "incorrectResponse", detail="the key authorization does not match"
            )
        else:
            authorization.status = messages.STATUS_VALID
        for order in self._orders.values():
            if f"{BASE}/authz/{ident}" not in order.authorizations:
                continue
            statuses = {
                self._authorizations[url.rsplit("/", 1)[1]].status for url in order.authorizations
            }
            if messages.STATUS_INVALID in statuses:
                order.status = messages.STATUS_INVALID
            elif statuses == {messages.STATUS_VALID}:
                order.status = messages.STATUS_READY

    def finalize(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        """
        Answer the finalization of the order C{ident}: issue its certificate.
        """
        order = self._orders[ident]
        if order.status != messages.STATUS_READY:
            raise ACMEProblem(403, "orderNotReady", f"the order is {order.status}")
        csr = messages.CertificateRequest.json_loads(payload).csr
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        if set(names.value.get_values_for_type(x509.DNSName)) != set(order.identifiers):
            raise ACMEProblem(400, "badCSR", "the CSR's names are not the order's")
        order.certificate = self._server.issue(csr.public_key(), order.identifiers, order.validity)
        order.status = messages.STATUS_VALID
        return answerJSON(request, self._orderBody(ident))

    def certificate(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        """
        Answer the download of the certificate of the order C{ident}.
        """
        order = self._orders[ident]
        if order.certificate is None:
            raise ACMEProblem(404, "malformed", "no certificate yet")
        request.setHeader("content-type", "application/pem-certificate-chain")
        return order.certificate
