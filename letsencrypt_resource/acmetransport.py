"""
The HTTP side of an ACME conversation (RFC 8555 section 6): requests with a
time limit, the server's nonces, JWS-signed POSTs, and the errors a server's
answer can be.

HTTP goes through one Twisted C{IAgent} with a persistent connection pool,
used bare: ACME needs no redirects, cookies or content decoding, and each
layer of those costs the reactor time on every request.
"""

from __future__ import annotations

import email.utils
import json
from typing import Any, TypeVar

import josepy
from acme import jws, messages
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectError, TimeoutError
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from . import __version__
from .acmeerrors import ACMEProblem, ACMEProtocolError, ACMEServerUntrusted
from .coroutines import deferred
from .events import DEBUG

JOSE_CONTENT_TYPE = b"application/jose+json"
PEM_CHAIN_CONTENT_TYPE = b"application/pem-certificate-chain"

#: How often a request is re-sent after the server rejected its nonce.
MAX_BAD_NONCE_RETRIES = 20
#: Seconds one HTTP request may take, response body included.
REQUEST_TIMEOUT = 30.0

USER_AGENT = f"letsencrypt-resource/{__version__}".encode()

_Body = TypeVar("_Body", bound=josepy.JSONDeSerializable)
_Result = TypeVar("_Result")


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


def header(response: IResponse, name: bytes) -> str | None:
    """
    The first value of C{response}'s header C{name}, if it has one.
    """
    values = response.headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


class ACMETransport:
    """
    The requests of one account to one ACME server: each with a time limit,
    POSTs signed with the account key (RFC 8555 section 6.2) and carrying a
    nonce the server gave (section 6.5), answers checked for problem
    documents.

    @ivar directory: The server's directory, where the C{newNonce} URL is.
    @ivar accountKey: The key that signs the POSTs.
    @ivar accountURL: The account URL (the JWS C{kid}), once registered.
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
        """
        @param caFile: The C{acme_ca_file} that C{http} trusts (C{None}: the
            system's roots), for the message of an L{ACMEServerUntrusted}.
        """
        self._http = http
        self._caFile = caFile
        self._clock = clock
        self.directory = directory
        self.accountKey = accountKey
        self.algorithm = algorithm
        self.accountURL = accountURL
        self._debug = debug
        self._timeout = timeout
        self._nonces: list[str] = []

    def debugEvent(self, message: str, **fields: Any) -> None:
        """
        Log C{message} with C{fields} as a debug event, when debugging.
        """
        if self._debug:
            DEBUG.emit(self._log, details=message.format(**fields))

    @deferred
    async def send(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> tuple[IResponse, bytes]:
        """
        Send one request and read its whole answer, within the time limit.

        @return: The response and its body; a problem document in it is not
            checked (see L{raiseForProblem}).
        @raise ACMEProtocolError: when no answer came.
        """
        allHeaders = Headers({b"user-agent": [USER_AGENT]})
        for name, values in (headers or {}).items():
            allHeaders.setRawHeaders(name, values)
        try:
            uri = url.encode("ascii")
        except UnicodeEncodeError:
            raise ACMEProtocolError(url, "the URL is not plain ASCII") from None
        producer = None if data is None else _BytesProducer(data)
        expired: list[bool] = []

        def withTimeout(waiting: Deferred[_Result]) -> Deferred[_Result]:
            def timedOut(result: _Result | Failure, timeout: float) -> _Result | Failure:
                # The cancelled request's own failure goes on; the flag says why.
                expired.append(True)
                return result

            return waiting.addTimeout(self._timeout, self._clock, onTimeoutCancel=timedOut)

        try:
            response = await withTimeout(
                self._http.request(method.encode("ascii"), uri, allHeaders, producer)
            )
            body = await withTimeout(readBody(response))
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
        nonce = header(response, b"replay-nonce")
        if nonce:
            self._nonces.append(nonce)
        self.debugEvent(
            "ACME {method} {url} -> HTTP {status}, {size} bytes",
            method=method,
            url=url,
            status=response.code,
            size=len(body),
        )
        return response, body

    def retryAfter(self, response: IResponse) -> float | None:
        """
        The seconds that C{response}'s C{Retry-After} asks to wait, if any.
        """
        return parseRetryAfter(header(response, b"retry-after"), self._clock.seconds())

    def json(self, url: str, response: IResponse, body: bytes) -> Any:
        """
        The JSON object that C{body}, the answer from C{url}, holds.

        @raise ACMEProtocolError: when it holds none.
        """
        try:
            document = json.loads(body)
        except ValueError:
            raise ACMEProtocolError(
                url, f"the body is not JSON: {body[:120]!r}", response.code
            ) from None
        if not isinstance(document, dict):
            raise ACMEProtocolError(url, "the JSON body is not an object", response.code)
        return document

    def raiseForProblem(self, url: str, response: IResponse, body: bytes) -> None:
        """
        Raise the error that an answer with an HTTP error status carries.

        @raise ACMEProblem: for a problem document.
        @raise ACMEProtocolError: for an error without one.
        """
        if response.code < 400:
            return
        retryAfter = self.retryAfter(response)
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

    async def _nonce(self) -> str:
        if not self._nonces:
            url = self.directory["newNonce"]
            response, body = await self.send("HEAD", url)
            self.raiseForProblem(url, response, body)
            if not self._nonces:
                raise ACMEProtocolError(url, "no Replay-Nonce header", response.code)
        return self._nonces.pop()

    @deferred
    async def post(
        self,
        url: str,
        payload: josepy.JSONDeSerializable | None,
        accept: bytes | None = None,
    ) -> tuple[IResponse, bytes]:
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
            nonce = await self._nonce()
            signed = jws.JWS.sign(
                data,
                key=self.accountKey,
                alg=self.algorithm,
                nonce=josepy.decode_b64jose(nonce),
                url=url,
                kid=self.accountURL,
            )
            response, body = await self.send(
                "POST", url, signed.json_dumps().encode("utf-8"), headers
            )
            try:
                self.raiseForProblem(url, response, body)
            except ACMEProblem as problem:
                if problem.code == "badNonce" and attempt < MAX_BAD_NONCE_RETRIES:
                    self.debugEvent("ACME badNonce from {url}; retrying", url=url)
                    continue
                raise
            return response, body
        raise AssertionError("unreachable")  # pragma: no cover

    async def postFor(
        self, url: str, payload: josepy.JSONDeSerializable | None, kind: type[_Body]
    ) -> tuple[IResponse, _Body]:
        """
        L{post} C{payload} to C{url}, and parse the answer as a C{kind}.

        @raise ACMEProtocolError: when the answer is no C{kind}.
        """
        response, body = await self.post(url, payload)
        try:
            parsed = kind.from_json(self.json(url, response, body))
        except josepy.DeserializationError as error:
            raise ACMEProtocolError(
                url, f"not a valid {kind.__name__}: {error}", response.code
            ) from None
        return response, parsed
