"""
In-memory fakes for testing the resource and code that embeds it.

L{FakeACMEServer} is a small RFC 8555 server as a C{twisted.web} resource:
serve it in memory with C{treq.testing.RequestTraversalAgent} for deterministic unit
tests, or on a loopback port.  It verifies every JWS and nonce, validates
HTTP-01 challenges through a callable, issues certificates that follow an
injected clock, and can be told to fail: what pebble cannot do (rate
limits, 5xx, odd bodies).

L{RecordingConsumer} is an L{ICertificateConsumer} that remembers what it
was given; L{MemoryStore} is an L{ICertificateStore} in a dictionary.
"""

from __future__ import annotations

import datetime
import itertools
import json
from typing import Any, Callable

import attrs
import josepy
from acme import challenges, jws, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from treq.testing import RequestTraversalAgent
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from .acmeclient import ACMEClient, KeyChange, ReplacingOrder, certificateID
from .certificates import CertifiedKey
from .interfaces import ICertificateConsumer, ICertificateStore
from .keys import generateKey, jwkFor
from .store import AccountRecord, StoreError

BASE = "https://acme.test"


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
    answered: bool = False


class FakeACMEServer(Resource):
    """
    An in-memory ACME server.

    @ivar validate: Called with a token (str); returns the key
        authorization served for it, or C{None}.  Set it to the resource's
        L{ChallengeResponder.lookup} to validate in memory.
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
    """

    isLeaf = True

    def __init__(self, clock: IReactorTime, validity: float = 90 * 86400):
        super().__init__()
        self.clock = clock
        self.validity = validity
        self.validate: Callable[[str], str | None] = lambda token: None
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
        self._registrations: dict[str, messages.Registration] = {}
        self.ordersCreated = 0
        self.orderTimes: list[float] = []
        self.accountsCreated = 0
        self._ids = itertools.count(1)
        self._nonces: set[str] = set()
        self._accounts: dict[str, josepy.JWK] = {}
        self._orders: dict[str, _Order] = {}
        self._authorizations: dict[str, _Authorization] = {}
        self._finalizeURLs: dict[str, str] = {}
        self.caKey = generateKey("ecdsa-p256")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake ACME CA")])
        now = _utc(clock.seconds())
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
        return f"{BASE}/directory"

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
            self._giveNonce(request)
        for fault in self.faults:
            if path.startswith(fault.path) and fault.times != 0:
                if fault.times is not None:
                    fault.times -= 1
                return self._answerFault(request, fault)
        try:
            if method == "GET" and path == "/directory":
                return self._json(request, self._directory())
            if method == "GET" and path.startswith("/renewal-info/"):
                return self._renewalInfo(request, path.rsplit("/", 1)[1])
            if method == "HEAD" and path == "/new-nonce":
                return b""
            if method != "POST":
                return self._problem(request, 405, "malformed", "method not allowed")
            return self._post(request, path)
        except _Problem as problem:
            return self._problem(request, problem.status, problem.code, problem.detail)

    def _answerFault(self, request: Request, fault: Fault) -> bytes:
        request.setResponseCode(fault.status)
        for name, value in fault.headers.items():
            request.setHeader(name, value)
        if fault.problem is not None:
            request.setHeader("content-type", "application/problem+json")
            return fault.problem.json_dumps().encode("utf-8")
        return fault.body

    def _giveNonce(self, request: Request) -> None:
        nonce = josepy.encode_b64jose(next(self._ids).to_bytes(8, "big"))
        self._nonces.add(nonce)
        request.setHeader("replay-nonce", nonce)

    def _json(
        self, request: Request, body: josepy.JSONDeSerializable, status: int = 200
    ) -> bytes:
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        return body.json_dumps().encode("utf-8")

    def _problem(self, request: Request, status: int, code: str, detail: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader("content-type", "application/problem+json")
        return messages.Error.with_code(code, detail=detail).json_dumps().encode("utf-8")

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
            raise _Problem(404, "malformed", "no such certificate")
        if certificateIdentifier in self.renewalWindows:
            start, end = self.renewalWindows[certificateIdentifier]
        else:
            notBefore = certificate.not_valid_before_utc.timestamp()
            notAfter = certificate.not_valid_after_utc.timestamp()
            start = notAfter - (notAfter - notBefore) / 3
            end = start + (notAfter - notBefore) / 9
        request.setHeader("retry-after", str(self.ariRetryAfter))
        window = messages.RenewalInfo.SuggestedWindow(start=_utc(start), end=_utc(end))
        return self._json(request, messages.RenewalInfo(suggested_window=window))

    def _verify(self, request: Request, path: str) -> tuple[bytes, str | None, josepy.JWK]:
        try:
            signed = jws.JWS.json_loads(request.content.read())
        except (ValueError, josepy.DeserializationError) as error:
            raise _Problem(400, "malformed", f"not a JWS: {error}")
        header = signed.signature.combined
        nonce = josepy.encode_b64jose(header.nonce) if header.nonce else None
        if nonce not in self._nonces:
            raise _Problem(400, "badNonce", "unknown or reused nonce")
        self._nonces.discard(nonce)
        if header.url != BASE + path:
            raise _Problem(400, "unauthorized", "the JWS url is not the request's")
        if header.kid is not None:
            account = header.kid
            key = self._accounts.get(account)
            if key is None:
                raise _Problem(400, "accountDoesNotExist", "no such account")
        elif header.jwk is not None:
            account, key = None, header.jwk
        else:
            raise _Problem(400, "malformed", "neither kid nor jwk")
        if not signed.verify(key):
            raise _Problem(400, "unauthorized", "bad signature")
        return signed.payload, account, key

    def _post(self, request: Request, path: str) -> bytes:
        payload, account, key = self._verify(request, path)
        if path == "/new-account":
            return self._newAccount(request, payload, key)
        if account is None:
            raise _Problem(400, "malformed", "this request needs a kid")
        kind, _, ident = path.strip("/").partition("/")
        handler = {
            "new-order": self._newOrder,
            "account": self._account,
            "key-change": self._keyChange,
            "revoke-cert": self._revoke,
            "order": self._order,
            "authz": self._authorization,
            "chall": self._challenge,
            "finalize": self._finalize,
            "cert": self._certificate,
        }.get(kind)
        if handler is None:
            raise _Problem(404, "malformed", f"no resource at {path}")
        return handler(request, ident, payload, account)

    def _newAccount(self, request: Request, payload: bytes, key: josepy.JWK) -> bytes:
        registration = messages.NewRegistration.json_loads(payload)
        for url, known in self._accounts.items():
            if known.thumbprint() == key.thumbprint():
                request.setHeader("location", url)
                return self._json(request, self._registrations[url])
        if registration.only_return_existing:
            raise _Problem(400, "accountDoesNotExist", "no account for this key")
        if self.termsOfService and not registration.terms_of_service_agreed:
            raise _Problem(403, "userActionRequired", "agree to the terms of service")
        if self.externalAccountKeys:
            self._checkBinding(registration, key)
        url = f"{BASE}/account/{next(self._ids)}"
        self._accounts[url] = key
        self._registrations[url] = messages.Registration(
            status="valid", contact=registration.contact
        )
        self.accountsCreated += 1
        request.setHeader("location", url)
        return self._json(request, self._registrations[url], 201)

    def _checkBinding(self, registration: messages.Registration, key: josepy.JWK) -> None:
        if not registration.external_account_binding:
            raise _Problem(400, "externalAccountRequired", "bind an external account")
        binding = jws.JWS.from_json(registration.external_account_binding)
        kid = binding.signature.combined.kid
        secret = self.externalAccountKeys.get(kid)
        if secret is None or not binding.verify(josepy.JWKOct(key=secret)):
            raise _Problem(400, "unauthorized", "bad external account binding")
        if josepy.JWK.json_loads(binding.payload).thumbprint() != key.thumbprint():
            raise _Problem(400, "malformed", "the binding is for another key")

    def _account(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        url = f"{BASE}/account/{ident}"
        if url != account:
            raise _Problem(403, "unauthorized", "not your account")
        if payload:
            update = messages.UpdateRegistration.json_loads(payload)
            current = self._registrations[url]
            self._registrations[url] = current.update(
                contact=update.contact if update.contact is not None else current.contact,
                status=update.status or current.status,
            )
        return self._json(request, self._registrations[url])

    def _keyChange(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        inner = jws.JWS.json_loads(payload)
        newKey = inner.signature.combined.jwk
        change = KeyChange.json_loads(inner.payload)
        if not inner.verify(newKey) or change.account != account:
            raise _Problem(400, "malformed", "bad key change")
        if change.oldKey.thumbprint() != self._accounts[account].thumbprint():
            raise _Problem(400, "malformed", "oldKey is not the account's key")
        self._accounts[account] = newKey
        return self._json(request, self._registrations[account])

    def _revoke(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        revocation = messages.Revocation.json_loads(payload)
        self.revoked[certificateID(revocation.certificate)] = revocation.reason
        request.setHeader("content-type", "application/json")
        return b""

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

    def _newOrder(self, request: Request, _: str, payload: bytes, account: str) -> bytes:
        order = ReplacingOrder.json_loads(payload)
        self.newOrders.append(order)
        if order.replaces and self.replacesRefusals:
            status, code = self.replacesRefusals.pop(0)
            raise _Problem(status, code, "the certificate named cannot be replaced")
        if order.profile and order.profile not in self.profiles:
            raise _Problem(400, "invalidProfile", f"no profile {order.profile!r}")
        ident = str(next(self._ids))
        names = tuple(identifier.value for identifier in order.identifiers)
        authorizations = []
        for name in names:
            authzID = str(next(self._ids))
            self._authorizations[authzID] = _Authorization(
                name, authzID.encode().rjust(16, b"t"), account
            )
            authorizations.append(f"{BASE}/authz/{authzID}")
        validity = self.profiles.get(order.profile or "default", self.validity)
        self._orders[ident] = _Order(names, authorizations, validity=validity)
        self.ordersCreated += 1
        self.orderTimes.append(self.clock.seconds())
        request.setHeader("location", f"{BASE}/order/{ident}")
        return self._json(request, self._orderBody(ident), 201)

    def _order(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        if ident not in self._orders:
            raise _Problem(404, "malformed", "no such order")
        if self.orderRetryAfter is not None:
            request.setHeader("retry-after", str(self.orderRetryAfter))
        return self._json(request, self._orderBody(ident))

    def _authorizationBody(self, ident: str) -> messages.Authorization:
        authorization = self._authorizations[ident]
        challenge = messages.ChallengeBody(
            chall=challenges.HTTP01(token=authorization.token),
            uri=f"{BASE}/chall/{ident}",
            status=authorization.status,
            error=authorization.error,
        )
        return messages.Authorization(
            identifier=messages.Identifier(
                typ=messages.IDENTIFIER_FQDN, value=authorization.identifier
            ),
            status=authorization.status,
            challenges=[challenge],
        )

    def _authorization(
        self, request: Request, ident: str, payload: bytes, account: str
    ) -> bytes:
        if ident not in self._authorizations:
            raise _Problem(404, "malformed", "no such authorization")
        return self._json(request, self._authorizationBody(ident))

    def _challenge(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        authorization = self._authorizations[ident]
        if authorization.status == messages.STATUS_PENDING and not authorization.answered:
            authorization.answered = True
            self.clock.callLater(
                self.validationDelay, self._validate, ident, authorization
            )
        body = self._authorizationBody(ident).challenges[0]
        return self._json(request, body)

    def _validate(self, ident: str, authorization: _Authorization) -> None:
        challenge = challenges.HTTP01(token=authorization.token)
        served = self.validate(challenge.encode("token"))
        expected = challenge.key_authorization(self._accounts[authorization.account])
        if authorization.identifier in self.refuse or served is None:
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
                self._authorizations[url.rsplit("/", 1)[1]].status
                for url in order.authorizations
            }
            if messages.STATUS_INVALID in statuses:
                order.status = messages.STATUS_INVALID
            elif statuses == {messages.STATUS_VALID}:
                order.status = messages.STATUS_READY

    def _finalize(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        order = self._orders[ident]
        if order.status != messages.STATUS_READY:
            raise _Problem(403, "orderNotReady", f"the order is {order.status}")
        csr = messages.CertificateRequest.json_loads(payload).csr
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        if set(names.value.get_values_for_type(x509.DNSName)) != set(order.identifiers):
            raise _Problem(400, "badCSR", "the CSR's names are not the order's")
        order.certificate = self.issue(csr.public_key(), order.identifiers, order.validity)
        order.status = messages.STATUS_VALID
        return self._json(request, self._orderBody(ident))

    def issue(
        self, publicKey: Any, names: tuple[str, ...], validity: float | None = None
    ) -> bytes:
        """
        Issue a PEM chain for C{publicKey} and C{names}, valid from now for
        C{validity} seconds (by default L{validity}).
        """
        now = _utc(self.clock.seconds())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.caCertificate.subject)
            .public_key(publicKey)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(
                now + datetime.timedelta(seconds=validity or self.validity)
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.caKey.public_key()
                ),
                False,
            )
            .sign(self.caKey, hashes.SHA256())
        )
        self._issued[certificateID(certificate)] = certificate
        return certificate.public_bytes(Encoding.PEM) + self.caCertificate.public_bytes(
            Encoding.PEM
        )

    def _certificate(
        self, request: Request, ident: str, payload: bytes, account: str
    ) -> bytes:
        order = self._orders[ident]
        if order.certificate is None:
            raise _Problem(404, "malformed", "no certificate yet")
        request.setHeader("content-type", "application/pem-certificate-chain")
        return order.certificate


class _Problem(Exception):
    def __init__(self, status: int, code: str, detail: str):
        self.status = status
        self.code = code
        self.detail = detail


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


@implementer(ICertificateConsumer)
class RecordingConsumer:
    """
    An L{ICertificateConsumer} that records every certificate it is given.

    @ivar received: The certificates, in order.
    """

    def __init__(self, name: str, domains: tuple[str, ...]):
        self.name = name
        self.domains = domains
        self.received: list[CertifiedKey] = []

    def useCertificate(self, certifiedKey: CertifiedKey) -> None:
        self.received.append(certifiedKey)


@implementer(ICertificateStore)
class MemoryStore:
    """
    An L{ICertificateStore} in memory, that keeps what a file would hold.

    @ivar failWrites: When true, every save raises L{StoreError}.
    @ivar unwritable: Domain sets whose certificate cannot be stored, as
        a name too long for a file system: their saves and
        L{checkCertificateWritable} raise L{StoreError}.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, bytes] = {}
        self.certificates: dict[tuple[str, ...], bytes] = {}
        self.states: dict[tuple[str, ...], str] = {}
        self.signer: bytes | None = None
        self.failWrites = False
        self.unwritable: set[frozenset[str]] = set()

    def _checkWritable(self, what: str, domains: tuple[str, ...] = ()) -> None:
        if self.failWrites:
            raise StoreError(f"memory:{what}", "cannot be written: disk full")
        if frozenset(domains) in self.unwritable:
            raise StoreError(f"memory:{what}", "cannot be written: file name too long")

    def loadAccount(self, acmeURL: str) -> AccountRecord | None:
        data = self.accounts.get(acmeURL)
        return AccountRecord.fromJSON(data) if data is not None else None

    def saveAccount(self, acmeURL: str, record: AccountRecord) -> None:
        self._checkWritable("account")
        self.accounts[acmeURL] = record.toJSON()

    def loadCertificate(self, domains: tuple[str, ...]) -> CertifiedKey | None:
        pem = self.certificates.get(domains)
        return CertifiedKey.fromPEM(pem) if pem is not None else None

    def saveCertificate(self, domains: tuple[str, ...], certifiedKey: CertifiedKey) -> str:
        self._checkWritable("_".join(domains), domains)
        self.certificates[domains] = certifiedKey.toPEM()
        return "memory:" + "_".join(domains)

    def checkCertificateWritable(self, domains: tuple[str, ...]) -> None:
        self._checkWritable("_".join(domains), domains)

    def loadRenewalState(self, domains: tuple[str, ...]) -> dict[str, Any] | None:
        text = self.states.get(domains)
        return json.loads(text) if text is not None else None

    def saveRenewalState(self, domains: tuple[str, ...], state: dict[str, Any]) -> None:
        self._checkWritable("state", domains)
        self.states[domains] = json.dumps(state)

    def loadProvisionalSigner(self) -> bytes | None:
        return self.signer

    def saveProvisionalSigner(self, pem: bytes) -> None:
        self._checkWritable("signer")
        self.signer = pem


def advanceThrough(clock: Any, seconds: float) -> None:
    """
    Advance C{clock} by C{seconds}, stopping at every delayed call on the
    way, as real time would.
    """
    end = clock.seconds() + seconds
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= end]
        if not due:
            break
        clock.advance(max(0.0, min(due) - clock.seconds()))
    clock.advance(end - clock.seconds())


def runUntilFired(clock: Any, deferred: Any, limit: float = 365 * 86400.0) -> Any:
    """
    Advance C{clock} (a C{twisted.internet.task.Clock}) from one delayed call
    to the next until C{deferred} has fired, and return its result.

    @raise AssertionError: when nothing is left to run, or C{limit}
        simulated seconds have passed, before C{deferred} fires.
    """
    results: list[Any] = []
    deferred.addBoth(results.append)
    start = clock.seconds()
    while not results:
        calls = clock.getDelayedCalls()
        if not calls or clock.seconds() - start > limit:
            raise AssertionError(f"{deferred!r} did not fire")
        clock.advance(max(0.0, min(c.getTime() for c in calls) - clock.seconds()))
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


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
