"""
L{FakeACMEServer}: a small RFC 8555 server as a C{twisted.web} resource.
Serve it in memory with C{treq.testing.RequestTraversalAgent} for
deterministic unit tests, or on a loopback port.  It verifies every JWS and
nonce, validates HTTP-01 challenges through a callable, issues certificates
that follow an injected clock, and can be told to fail: what pebble cannot
do (rate limits, 5xx, odd bodies).
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable
from typing import Any

import attrs
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from treq.testing import RequestTraversalAgent
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from ..acmeclient import ACMEClient, ReplacingOrder, certificateID
from ..keys import generateKey, jwkFor
from .acmeaccounts import AccountBook
from .acmeorders import OrderBook
from .acmewire import BASE, ACMEProblem, answerJSON, answerProblem, utc
from .clock import runUntilFired

__all__ = ["BASE", "FakeACMEServer", "Fault", "registeredClient"]


@attrs.define
class Fault:
    """
    A canned answer the fake server gives instead of the real one.

    @ivar path: Answer requests whose path starts with this.
    @ivar status: The HTTP status.
    @ivar problem: An ACME problem sent as the body, if any.
    @ivar body: Raw body bytes, when there is no problem.
    @ivar headers: Extra response headers.
    @ivar times: How many requests get it; C{None} for all.
    """

    path: str
    status: int
    problem: messages.Error | None = None
    body: bytes = b""
    headers: dict[str, str] = attrs.Factory(dict)
    times: int | None = 1


class FakeACMEServer(Resource):
    """
    An in-memory ACME server.

    @ivar validate: Called with a token (str); returns the key
        authorization served for it, or C{None}.  Set it to the resource's
        L{ChallengeResponder.lookup} to validate in memory.
    @ivar validateALPN: Called with the SNI name of a TLS-ALPN-01
        validation; returns the identifier and key authorization answered,
        or C{None}.  Set it to the resource's
        L{ChallengeResponder.lookupALPN} to validate in memory.
    @ivar offerALPN: Whether authorizations offer a C{tls-alpn-01}
        challenge besides their C{http-01} one.
    @ivar validity: Lifetime, in seconds, of the certificates it issues.
    @ivar faults: Canned answers to give first; see L{fail}.
    @ivar requests: Every request's method and path, in order.
    @ivar ordersCreated: How many orders were created.
    @ivar orderTimes: When each order was created, by the clock.
    @ivar accountsCreated: How many accounts were created.
    @ivar refuse: Names whose validation always fails.
    @ivar validationDelay: Seconds between a challenge's answer and its
        validation.
    @ivar orderRetryAfter: The Retry-After header of order responses.
    @ivar profiles: Profile names offered, to certificate lifetimes; when
        empty, no profiles are offered.
    @ivar offerRenewalInfo: Whether the directory offers ARI.
    @ivar renewalWindows: ARI windows to answer, by certificate ID;
        others get the last third of the lifetime.
    @ivar ariRetryAfter: The Retry-After of ARI answers.
    @ivar newOrders: Every new order received, parsed.
    @ivar termsOfService: Whether the CA publishes terms to agree to.
    @ivar externalAccountKeys: When not empty, new accounts must be bound
        to one of these external accounts: key identifier to HMAC key.
    @ivar revoked: Revoked certificates' IDs, to the reason given.
    @ivar replacesRefusals: The HTTP status and problem type answered to
        each of the next new orders that name a certificate they replace,
        as a CA answers for another account's certificate.
    @ivar accounts: The accounts, their keys and the nonces given.
    @ivar caKey: The key of the CA certificate.
    @ivar caCertificate: The CA certificate that signs what it issues.
    """

    isLeaf = True

    def __init__(self, clock: IReactorTime, validity: float = 90 * 86400):
        super().__init__()
        self.clock = clock
        self.validity = validity
        self.validate: Callable[[str], str | None] = lambda token: None
        self.validateALPN: Callable[[str], tuple[str, str] | None] = lambda name: None
        self.offerALPN = False
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.refuse: set[str] = set()
        self.validationDelay = 0.0
        self.orderRetryAfter: int | None = None
        self.profiles: dict[str, float] = {}
        self.offerRenewalInfo = False
        self.renewalWindows: dict[str, tuple[float, float]] = {}
        self.ariRetryAfter = 6 * 3600
        self.newOrders: list[ReplacingOrder] = []
        self._issued: dict[str, x509.Certificate] = {}
        self.termsOfService = True
        self.externalAccountKeys: dict[str, bytes] = {}
        self.revoked: dict[str, int] = {}
        self.replacesRefusals: list[tuple[int, str]] = []
        self.ordersCreated = 0
        self.orderTimes: list[float] = []
        self.accountsCreated = 0
        ids = itertools.count(1)
        self.accounts = AccountBook(self, ids)
        self._orders = OrderBook(self, ids)
        self.caKey = generateKey("ecdsa-p256")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake ACME CA")])
        now = utc(clock.seconds())
        self.caCertificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.caKey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(self.caKey, hashes.SHA256())
        )

    @property
    def directoryURL(self) -> str:
        """
        The URL of the ACME directory.
        """
        return f"{BASE}/directory"

    def forgetAccounts(self) -> None:
        """
        Forget every account, as a CA whose database was reset.
        """
        self.accounts.forget()

    def fail(self, path: str, status: int, **kwargs: Any) -> Fault:
        """
        Answer the next request to C{path} (a prefix) with C{status}.

        Keyword arguments are those of L{Fault}.
        """
        fault = Fault(path, status, **kwargs)
        self.faults.append(fault)
        return fault

    # Rendering

    def render(self, request: Request) -> bytes:
        path = request.path.decode("ascii")
        method = request.method.decode("ascii")
        self.requests.append((method, path))
        if method in ("HEAD", "GET", "POST"):
            self.accounts.giveNonce(request)
        for fault in self.faults:
            if path.startswith(fault.path) and fault.times != 0:
                if fault.times is not None:
                    fault.times -= 1
                return self._answerFault(request, fault)
        try:
            if method == "GET" and path == "/directory":
                return answerJSON(request, self._directory())
            if method == "GET" and path.startswith("/renewal-info/"):
                return self._renewalInfo(request, path.rsplit("/", 1)[1])
            if method == "HEAD" and path == "/new-nonce":
                return b""
            if method != "POST":
                return answerProblem(request, 405, "malformed", "method not allowed")
            return self._post(request, path)
        except ACMEProblem as problem:
            return answerProblem(request, problem.status, problem.code, problem.detail)

    def _answerFault(self, request: Request, fault: Fault) -> bytes:
        request.setResponseCode(fault.status)
        for name, value in fault.headers.items():
            request.setHeader(name, value)
        if fault.problem is not None:
            request.setHeader("content-type", "application/problem+json")
            return fault.problem.json_dumps().encode("utf-8")
        return fault.body

    def _directory(self) -> messages.Directory:
        resources: dict[str, Any] = {
            "newNonce": f"{BASE}/new-nonce",
            "newAccount": f"{BASE}/new-account",
            "newOrder": f"{BASE}/new-order",
            "revokeCert": f"{BASE}/revoke-cert",
            "keyChange": f"{BASE}/key-change",
            "meta": messages.Directory.Meta(
                terms_of_service=f"{BASE}/terms" if self.termsOfService else None,
                external_account_required=bool(self.externalAccountKeys) or None,
                profiles={name: f"{name} certificates" for name in self.profiles} or None,
            ),
        }
        if self.offerRenewalInfo:
            resources["renewalInfo"] = f"{BASE}/renewal-info"
        return messages.Directory(resources)

    def _renewalInfo(self, request: Request, certificateIdentifier: str) -> bytes:
        certificate = self._issued.get(certificateIdentifier)
        if certificate is None:
            raise ACMEProblem(404, "malformed", "no such certificate")
        if certificateIdentifier in self.renewalWindows:
            start, end = self.renewalWindows[certificateIdentifier]
        else:
            notBefore = certificate.not_valid_before_utc.timestamp()
            notAfter = certificate.not_valid_after_utc.timestamp()
            start = notAfter - (notAfter - notBefore) / 3
            end = start + (notAfter - notBefore) / 9
        request.setHeader("retry-after", str(self.ariRetryAfter))
        window = messages.RenewalInfo.SuggestedWindow(start=utc(start), end=utc(end))
        return answerJSON(request, messages.RenewalInfo(suggested_window=window))

    def _post(self, request: Request, path: str) -> bytes:
        payload, account, key = self.accounts.verify(request, path)
        if path == "/new-account":
            return self.accounts.newAccount(request, payload, key)
        if account is None:
            raise ACMEProblem(400, "malformed", "this request needs a kid")
        kind, _, ident = path.strip("/").partition("/")
        handler = {
            "new-order": self._orders.newOrder,
            "account": self.accounts.account,
            "key-change": self.accounts.keyChange,
            "revoke-cert": self._revoke,
            "order": self._orders.order,
            "authz": self._orders.authorization,
            "chall": self._orders.challenge,
            "chall-alpn": self._orders.challengeALPN,
            "finalize": self._orders.finalize,
            "cert": self._orders.certificate,
        }.get(kind)
        if handler is None:
            raise ACMEProblem(404, "malformed", f"no resource at {path}")
        return handler(request, ident, payload, account)

    def _revoke(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        revocation = messages.Revocation.json_loads(payload)
        self.revoked[certificateID(revocation.certificate)] = revocation.reason
        request.setHeader("content-type", "application/json")
        return b""

    def issue(self, publicKey: Any, names: tuple[str, ...], validity: float | None = None) -> bytes:
        """
        Issue a PEM chain for C{publicKey} and C{names}, valid from now for
        C{validity} seconds (by default L{validity}).
        """
        now = utc(self.clock.seconds())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.caCertificate.subject)
            .public_key(publicKey)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(seconds=validity or self.validity))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.caKey.public_key()),
                False,
            )
            .sign(self.caKey, hashes.SHA256())
        )
        self._issued[certificateID(certificate)] = certificate
        return certificate.public_bytes(Encoding.PEM) + self.caCertificate.public_bytes(
            Encoding.PEM
        )


def registeredClient(clock: Any, server: FakeACMEServer, **kwargs: Any) -> Any:
    """
    An L{ACMEClient} talking to C{server} in memory, with a new registered
    account.  Keyword arguments go to L{ACMEClient.connect}.
    """
    jwk, algorithm = jwkFor(generateKey("ecdsa-p256"))
    client = runUntilFired(
        clock,
        ACMEClient.connect(
            RequestTraversalAgent(server),
            clock,
            server.directoryURL,
            jwk,
            algorithm,
            **kwargs,
        ),
    )
    runUntilFired(
        clock,
        client.register(messages.NewRegistration.from_data(terms_of_service_agreed=True)),
    )
    return client
