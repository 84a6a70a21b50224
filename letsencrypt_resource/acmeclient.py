"""
A non-blocking RFC 8555 ACME client on Twisted.

L{ACMEClient} speaks the protocol: directory, nonces, JWS-signed requests,
accounts, orders, authorizations, challenges and certificates.  Protocol
messages are C{acme.messages} and C{josepy} objects; HTTP goes through one
Twisted C{IAgent} with a persistent connection pool, used bare: ACME needs
no redirects, cookies or content decoding, and each layer of those costs
the reactor time on every request.
"""

from __future__ import annotations

import email.utils
import json
from typing import Any, TypeVar

import josepy
from acme import jws, messages
from cryptography import x509
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.error import ConnectError, TimeoutError
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from . import __version__
from .events import DEBUG

JOSE_CONTENT_TYPE = b"application/jose+json"
PEM_CHAIN_CONTENT_TYPE = b"application/pem-certificate-chain"

#: How often a request is re-sent after the server rejected its nonce.
MAX_BAD_NONCE_RETRIES = 20
#: Seconds one HTTP request may take, response body included.
REQUEST_TIMEOUT = 30.0

USER_AGENT = f"letsencrypt-resource/{__version__}".encode()

_Body = TypeVar("_Body", bound=josepy.JSONDeSerializable)


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body already in memory, written in one go.
    """

    def __init__(self, data: bytes):
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class ACMEProblem(Exception):
    """
    The ACME server answered with a problem document (RFC 8555 section 6.7).

    @ivar problem: The parsed problem.
    @ivar status: The HTTP status it came with, or C{None} when it came in
        an authorization or order.
    @ivar retryAfter: Seconds the server asked to wait, if it said.
    """

    def __init__(
        self,
        problem: messages.Error,
        status: int | None = None,
        retryAfter: float | None = None,
    ):
        super().__init__(problem, status, retryAfter)
        self.problem = problem
        self.status = status
        self.retryAfter = retryAfter

    @property
    def type(self) -> str:
        """
        The problem type URN.
        """
        return str(self.problem.typ)

    @property
    def code(self) -> str | None:
        """
        The ACME error code (the type without its URN prefix), if standard.
        """
        return self.problem.code

    @property
    def identifiers(self) -> tuple[str, ...]:
        """
        The identifiers the problem and its subproblems name.
        """
        found = []
        for problem in (self.problem,) + tuple(self.problem.subproblems or ()):
            if problem.identifier is not None and problem.identifier.value not in found:
                found.append(problem.identifier.value)
        return tuple(found)

    def __str__(self) -> str:
        where = f" ({self.problem.identifier.value})" if self.problem.identifier else ""
        text = f"{self.type}{where}: {self.problem.detail or self.problem.title or ''}".strip()
        for sub in self.problem.subproblems or ():
            where = f" ({sub.identifier.value})" if sub.identifier else ""
            text += f"; {sub.typ}{where}: {sub.detail or ''}"
        if self.retryAfter is not None:
            text += f" (retry after {self.retryAfter:.0f} s)"
        return text


class ACMEProtocolError(Exception):
    """
    The ACME server's answer is not what the protocol allows.

    @ivar url: The URL requested.
    @ivar status: The HTTP status, if a response came.
    @ivar retryAfter: Seconds the server asked to wait, if it said.
    """

    def __init__(
        self,
        url: str,
        message: str,
        status: int | None = None,
        retryAfter: float | None = None,
    ):
        super().__init__(url, message, status, retryAfter)
        self.url = url
        self.message = message
        self.status = status
        self.retryAfter = retryAfter

    def __str__(self) -> str:
        status = f"HTTP {self.status} " if self.status is not None else ""
        return f"{status}from {self.url}: {self.message}"


class ACMEServerUntrusted(ACMEProtocolError):
    """
    The ACME server's TLS certificate did not verify against the trusted
    roots: the CA uses a private root, or the wrong roots are trusted.  Its
    message names the URL and says what to set C{acme_ca_file} to.

    @ivar reason: What the TLS library said.
    @ivar caFile: The C{acme_ca_file} trusted, or C{None} for the system's
        roots.
    """

    def __init__(self, url: str, reason: str, caFile: str | None = None):
        if caFile is None:
            message = (
                f"the TLS certificate of {url} does not verify against the "
                f"system's trusted roots ({reason}): for a CA with a private "
                "or test root, set acme_ca_file to the PEM file of that root"
            )
        else:
            message = (
                f"the TLS certificate of {url} does not verify against "
                f"acme_ca_file {caFile} ({reason}): set acme_ca_file to the "
                "PEM file of the root that signed it"
            )
        super().__init__(url, message)
        self.reason = reason
        self.caFile = caFile

    def __str__(self) -> str:
        return self.message


def _untrustedReason(reasons: list[Failure]) -> str | None:
    """
    What the TLS library said when the server's certificate failed to
    verify, if that is why a request failed.
    """
    for reason in reasons:
        if reason.check(SSL.Error) and "certificate verify failed" in str(reason.value):
            return "certificate verify failed"
        if reason.check(VerificationError):
            return f"the certificate is not for this host: {reason.value}"
    return None


class ReplacingOrder(messages.NewOrder):
    """
    A new order that names the certificate it replaces (RFC 9773 section 5).
    """

    replaces: str = josepy.field("replaces", omitempty=True)


class KeyChange(josepy.JSONObjectWithFields):
    """
    The inner payload of an account key change (RFC 8555 section 7.3.5).
    """

    account: str = josepy.field("account")
    oldKey: josepy.JWK = josepy.field("oldKey", decoder=josepy.JWK.from_json)


def certificateID(certificate: x509.Certificate) -> str:
    """
    The RFC 9773 identifier of C{certificate}: its authority key identifier
    and its serial number, each base64url-encoded, joined by a dot.

    @raise ValueError: when the certificate has no authority key identifier.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        )
    except x509.ExtensionNotFound:
        raise ValueError("the certificate has no authority key identifier") from None
    keyIdentifier = extension.value.key_identifier or b""
    serial = certificate.serial_number
    serialBytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{josepy.b64encode(keyIdentifier).decode()}.{josepy.b64encode(serialBytes).decode()}"


def parseRetryAfter(value: str | None, now: float) -> float | None:
    """
    The seconds to wait that a C{Retry-After} header says, or C{None}.

    Accepts both delay-seconds and an HTTP date; never negative.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _header(response: IResponse, name: bytes) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


class ACMEClient:
    """
    One account's conversation with one ACME server.

    The keyword C{caFile} names the C{acme_ca_file} that C{http} trusts
    (C{None}: the system's roots), for the message of an
    L{ACMEServerUntrusted}.

    @ivar directory: The server's directory.
    @ivar accountURL: The account URL (the JWS C{kid}) once registered.
    """

    _log = Logger()

    def __init__(
        self,
        http: IAgent,
        clock: IReactorTime,
        directory: messages.Directory,
        accountKey: josepy.JWK,
        algorithm: josepy.JWASignature,
        *,
        accountURL: str | None = None,
        debug: bool = False,
        timeout: float = REQUEST_TIMEOUT,
        caFile: str | None = None,
    ):
        self._http = http
        self._caFile = caFile
        self._clock = clock
        self.directory = directory
        self.accountKey = accountKey
        self._algorithm = algorithm
        self.accountURL = accountURL
        self._debug = debug
        self._timeout = timeout
        self._nonces: list[str] = []

    @classmethod
    @inlineCallbacks
    def connect(
        cls,
        http: IAgent,
        clock: IReactorTime,
        directoryURL: str,
        accountKey: josepy.JWK,
        algorithm: josepy.JWASignature,
        **kwargs: Any,
    ) -> Deferred[ACMEClient]:
        """
        Fetch the directory at C{directoryURL} and return a client for it.
        """
        client = cls(
            http, clock, messages.Directory({}), accountKey, algorithm, **kwargs
        )
        response, body = yield client._send("GET", directoryURL)
        client._raiseForProblem(directoryURL, response, body)
        client.directory = messages.Directory.from_json(
            client._json(directoryURL, response, body)
        )
        return client

    def _debugEvent(self, message: str, **fields: Any) -> None:
        if self._debug:
            DEBUG.emit(self._log, details=message.format(**fields))

    @inlineCallbacks
    def _send(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> Deferred[tuple[IResponse, bytes]]:
        allHeaders = Headers({b"user-agent": [USER_AGENT]})
        for name, values in (headers or {}).items():
            allHeaders.setRawHeaders(name, values)
        try:
            uri = url.encode("ascii")
        except UnicodeEncodeError:
            raise ACMEProtocolError(url, "the URL is not plain ASCII") from None
        body = None if data is None else _BytesProducer(data)
        expired: list[bool] = []

        def withTimeout(waiting: Deferred[Any]) -> Deferred[Any]:
            def expire() -> None:
                expired.append(True)
                waiting.cancel()

            timer = self._clock.callLater(self._timeout, expire)
            return waiting.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])

        try:
            response = yield withTimeout(
                self._http.request(method.encode("ascii"), uri, allHeaders, body)
            )
            body = yield withTimeout(readBody(response))
        except Exception as error:
            if expired:
                raise ACMEProtocolError(
                    url, f"no answer from the ACME server within {self._timeout:.0f} seconds"
                ) from None
            if isinstance(error, (ConnectError, TimeoutError)):
                raise ACMEProtocolError(url, f"cannot reach the ACME server: {error}") from None
            if isinstance(error, (ResponseFailed, ResponseNeverReceived)):
                if any(r.check(CancelledError) for r in error.reasons):
                    # Cancelled by the caller (a stop), not a failed request.
                    raise CancelledError() from None
                untrusted = _untrustedReason(error.reasons)
                if untrusted is not None:
                    raise ACMEServerUntrusted(url, untrusted, self._caFile) from None
                reasons = "; ".join(str(r.value) for r in error.reasons) or str(error)
                raise ACMEProtocolError(url, f"the connection failed: {reasons}") from None
            raise
        nonce = _header(response, b"replay-nonce")
        if nonce:
            self._nonces.append(nonce)
        self._debugEvent(
            "ACME {method} {url} -> HTTP {status}, {size} bytes",
            method=method,
            url=url,
            status=response.code,
            size=len(body),
        )
        return response, body

    def _retryAfter(self, response: IResponse) -> float | None:
        return parseRetryAfter(_header(response, b"retry-after"), self._clock.seconds())

    def _json(self, url: str, response: IResponse, body: bytes) -> Any:
        try:
            document = json.loads(body)
        except ValueError:
            raise ACMEProtocolError(
                url, f"the body is not JSON: {body[:120]!r}", response.code
            ) from None
        if not isinstance(document, dict):
            raise ACMEProtocolError(url, "the JSON body is not an object", response.code)
        return document

    def _raiseForProblem(self, url: str, response: IResponse, body: bytes) -> None:
        if response.code < 400:
            return
        retryAfter = self._retryAfter(response)
        try:
            problem = messages.Error.from_json(json.loads(body))
        except (ValueError, TypeError, josepy.DeserializationError):
            raise ACMEProtocolError(
                url,
                f"an error without a problem document: {body[:200]!r}",
                response.code,
                retryAfter,
            ) from None
        raise ACMEProblem(problem, response.code, retryAfter)

    @inlineCallbacks
    def _nonce(self) -> Deferred[str]:
        if not self._nonces:
            url = self.directory["newNonce"]
            response, body = yield self._send("HEAD", url)
            self._raiseForProblem(url, response, body)
            if not self._nonces:
                raise ACMEProtocolError(url, "no Replay-Nonce header", response.code)
        return self._nonces.pop()

    @inlineCallbacks
    def post(
        self,
        url: str,
        payload: josepy.JSONDeSerializable | None,
        accept: bytes | None = None,
    ) -> Deferred[tuple[IResponse, bytes]]:
        """
        Send C{payload} signed as JWS to C{url}; C{None} makes a POST-as-GET.

        A C{badNonce} rejection is retried with the fresh nonce the error
        carries, up to L{MAX_BAD_NONCE_RETRIES} times.

        @raise ACMEProblem: when the server answers with a problem.
        """
        data = payload.json_dumps().encode("utf-8") if payload is not None else b""
        headers = {b"content-type": [JOSE_CONTENT_TYPE]}
        if accept is not None:
            headers[b"accept"] = [accept]
        for attempt in range(MAX_BAD_NONCE_RETRIES + 1):
            nonce = yield self._nonce()
            signed = jws.JWS.sign(
                data,
                key=self.accountKey,
                alg=self._algorithm,
                nonce=josepy.decode_b64jose(nonce),
                url=url,
                kid=self.accountURL,
            )
            response, body = yield self._send(
                "POST", url, signed.json_dumps().encode("utf-8"), headers
            )
            try:
                self._raiseForProblem(url, response, body)
            except ACMEProblem as problem:
                if problem.code == "badNonce" and attempt < MAX_BAD_NONCE_RETRIES:
                    self._debugEvent("ACME badNonce from {url}; retrying", url=url)
                    continue
                raise
            return response, body
        raise AssertionError("unreachable")  # pragma: no cover

    @inlineCallbacks
    def _postFor(
        self, url: str, payload: josepy.JSONDeSerializable | None, kind: type[_Body]
    ) -> Deferred[tuple[IResponse, _Body]]:
        response, body = yield self.post(url, payload)
        try:
            parsed = kind.from_json(self._json(url, response, body))
        except josepy.DeserializationError as error:
            raise ACMEProtocolError(
                url, f"not a valid {kind.__name__}: {error}", response.code
            ) from None
        return response, parsed

    @inlineCallbacks
    def register(self, registration: messages.NewRegistration) -> Deferred[str]:
        """
        Create the account for our key, or find it when it exists already.

        @return: The account URL, which later requests carry as C{kid}.
        """
        url = self.directory["newAccount"]
        self.accountURL = None
        response, account = yield self._postFor(url, registration, messages.Registration)
        location = _header(response, b"location")
        if not location:
            raise ACMEProtocolError(url, "no Location for the account", response.code)
        if account.status not in (None, "valid"):
            raise ACMEProtocolError(url, f"the account is {account.status}")
        self.accountURL = location
        return location

    @inlineCallbacks
    def findAccount(self) -> Deferred[str]:
        """
        Find the existing account of our key, without creating one.

        @return: The account URL.
        @raise ACMEProblem: C{accountDoesNotExist} when the key has none.
        """
        return (
            yield self.register(messages.NewRegistration(only_return_existing=True))
        )

    @inlineCallbacks
    def account(self) -> Deferred[messages.Registration]:
        """
        Fetch our account.
        """
        _, account = yield self._postFor(self._accountURL(), None, messages.Registration)
        return account

    @inlineCallbacks
    def updateAccount(
        self, update: messages.UpdateRegistration
    ) -> Deferred[messages.Registration]:
        """
        Change our account: its contacts, or its status to deactivated.
        """
        _, account = yield self._postFor(self._accountURL(), update, messages.Registration)
        return account

    @inlineCallbacks
    def changeKey(
        self, newKey: josepy.JWK, newAlgorithm: josepy.JWASignature
    ) -> Deferred[None]:
        """
        Replace the account key with C{newKey} (RFC 8555 section 7.3.5); later
        requests are signed with it.
        """
        url = self.directory["keyChange"]
        change = KeyChange(account=self._accountURL(), oldKey=self.accountKey.public_key())
        inner = jws.JWS.sign(
            change.json_dumps().encode("utf-8"),
            key=newKey,
            alg=newAlgorithm,
            nonce=None,
            url=url,
        )
        yield self.post(url, inner)
        self.accountKey = newKey
        self._algorithm = newAlgorithm

    @inlineCallbacks
    def revoke(self, certificate: x509.Certificate, reason: int) -> Deferred[None]:
        """
        Revoke C{certificate} for the RFC 5280 C{reason} code.
        """
        revocation = messages.Revocation(certificate=certificate, reason=reason)
        yield self.post(self.directory["revokeCert"], revocation)

    def _accountURL(self) -> str:
        if self.accountURL is None:
            raise ACMEProtocolError(
                self.directory["newAccount"], "no account is registered yet"
            )
        return self.accountURL

    @inlineCallbacks
    def newOrder(
        self, order: messages.Order
    ) -> Deferred[tuple[str, messages.Order]]:
        """
        Submit a new order.

        @return: The order URL and the order.
        """
        url = self.directory["newOrder"]
        response, created = yield self._postFor(url, order, messages.Order)
        location = _header(response, b"location")
        if not location:
            raise ACMEProtocolError(url, "no Location for the order", response.code)
        return location, created

    @inlineCallbacks
    def fetch(self, url: str, kind: type[_Body]) -> Deferred[tuple[_Body, float | None]]:
        """
        Fetch the resource at C{url} (POST-as-GET) as a C{kind}.

        @return: The resource and the server's Retry-After, if any.
        """
        response, parsed = yield self._postFor(url, None, kind)
        return parsed, self._retryAfter(response)

    @property
    def offersRenewalInfo(self) -> bool:
        """
        Whether the server offers ACME Renewal Information (RFC 9773).
        """
        return "renewalInfo" in self.directory.to_partial_json()

    @property
    def profiles(self) -> dict[str, str]:
        """
        The certificate profiles the server offers, name to description.
        """
        meta = self.directory.to_partial_json().get("meta")
        return dict(getattr(meta, "profiles", None) or {})

    @inlineCallbacks
    def renewalInfo(
        self, certificate: x509.Certificate
    ) -> Deferred[tuple[messages.RenewalInfo, float | None]]:
        """
        Fetch the CA's suggested renewal window for C{certificate}.

        @return: The renewal information and the server's Retry-After.
        """
        url = f"{self.directory['renewalInfo'].rstrip('/')}/{certificateID(certificate)}"
        response, body = yield self._send("GET", url)
        self._raiseForProblem(url, response, body)
        try:
            info = messages.RenewalInfo.from_json(self._json(url, response, body))
        except josepy.DeserializationError as error:
            raise ACMEProtocolError(
                url, f"not valid renewal information: {error}", response.code
            ) from None
        return info, self._retryAfter(response)

    @inlineCallbacks
    def answerChallenge(self, url: str, answer: josepy.JSONDeSerializable) -> Deferred[None]:
        """
        Tell the server the challenge at C{url} is ready to be validated.
        """
        yield self.post(url, answer)

    @inlineCallbacks
    def finalize(
        self, url: str, request: messages.CertificateRequest
    ) -> Deferred[tuple[messages.Order, float | None]]:
        """
        Submit the CSR to the order's finalize URL.
        """
        response, order = yield self._postFor(url, request, messages.Order)
        return order, self._retryAfter(response)

    @inlineCallbacks
    def downloadCertificate(self, url: str) -> Deferred[bytes]:
        """
        Download the PEM certificate chain at C{url}.
        """
        response, body = yield self.post(url, None, accept=PEM_CHAIN_CONTENT_TYPE)
        return body
