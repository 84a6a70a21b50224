"""
A non-blocking RFC 8555 ACME client on Twisted.

L{ACMEClient} speaks the protocol: directory, accounts, orders,
authorizations, challenges and certificates, over an
L{ACMETransport<letsencrypt_resource.acmetransport.ACMETransport>} that
carries the requests (nonces, JWS signatures, time limits, problem
documents).  Protocol messages are C{acme.messages} and C{josepy} objects.
"""

from __future__ import annotations

from typing import Any, TypeVar

import josepy
from acme import jws, messages
from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IAgent

from .acmeerrors import ACMEProblem, ACMEProtocolError, ACMEServerUntrusted
from .acmetransport import (
    MAX_BAD_NONCE_RETRIES,
    PEM_CHAIN_CONTENT_TYPE,
    REQUEST_TIMEOUT,
    ACMETransport,
    header,
    parseRetryAfter,
)
from .coroutines import deferred

__all__ = [
    "MAX_BAD_NONCE_RETRIES",
    "REQUEST_TIMEOUT",
    "ACMEClient",
    "ACMEProblem",
    "ACMEProtocolError",
    "ACMEServerUntrusted",
    "KeyChange",
    "ReplacingOrder",
    "certificateID",
    "parseRetryAfter",
]

_Body = TypeVar("_Body", bound=josepy.JSONDeSerializable)


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
        extension = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        raise ValueError("the certificate has no authority key identifier") from None
    keyIdentifier = extension.value.key_identifier or b""
    serial = certificate.serial_number
    serialBytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{josepy.b64encode(keyIdentifier).decode()}.{josepy.b64encode(serialBytes).decode()}"


class ACMEClient:
    """
    One account's conversation with one ACME server.

    The keyword arguments after C{algorithm} are the
    L{ACMETransport<letsencrypt_resource.acmetransport.ACMETransport>}'s.
    """

    def __init__(
        self,
        http: IAgent,
        clock: IReactorTime,
        directory: messages.Directory,
        accountKey: josepy.JWK,
        algorithm: josepy.JWASignature,
        **kwargs: Any,
    ):
        self._transport = ACMETransport(http, clock, directory, accountKey, algorithm, **kwargs)

    @classmethod
    @deferred
    async def connect(
        cls,
        http: IAgent,
        clock: IReactorTime,
        directoryURL: str,
        accountKey: josepy.JWK,
        algorithm: josepy.JWASignature,
        **kwargs: Any,
    ) -> ACMEClient:
        """
        Fetch the directory at C{directoryURL} and return a client for it.
        """
        client = cls(http, clock, messages.Directory({}), accountKey, algorithm, **kwargs)
        transport = client._transport
        response, body = await transport.send("GET", directoryURL)
        transport.raiseForProblem(directoryURL, response, body)
        transport.directory = messages.Directory.from_json(
            transport.json(directoryURL, response, body)
        )
        return client

    @property
    def directory(self) -> messages.Directory:
        """
        The server's directory.
        """
        return self._transport.directory

    @property
    def accountKey(self) -> josepy.JWK:
        """
        The account key, which signs the requests.
        """
        return self._transport.accountKey

    @property
    def accountURL(self) -> str | None:
        """
        The account URL (the JWS C{kid}) once registered.
        """
        return self._transport.accountURL

    @deferred
    async def register(self, registration: messages.NewRegistration) -> str:
        """
        Create the account for our key, or find it when it exists already.

        @return: The account URL, which later requests carry as C{kid}.
        """
        url = self.directory["newAccount"]
        self._transport.accountURL = None
        response, account = await self._transport.postFor(url, registration, messages.Registration)
        location = header(response, b"location")
        if not location:
            raise ACMEProtocolError(url, "no Location for the account", response.code)
        if account.status not in (None, "valid"):
            raise ACMEProtocolError(url, f"the account is {account.status}")
        self._transport.accountURL = location
        return location

    def findAccount(self) -> Deferred[str]:
        """
        Find the existing account of our key, without creating one.

        @return: The account URL.
        @raise ACMEProblem: C{accountDoesNotExist} when the key has none.
        """
        return self.register(messages.NewRegistration(only_return_existing=True))

    @deferred
    async def account(self) -> messages.Registration:
        """
        Fetch our account.
        """
        _, account = await self._transport.postFor(self._accountURL(), None, messages.Registration)
        return account

    @deferred
    async def updateAccount(self, update: messages.UpdateRegistration) -> messages.Registration:
        """
        Change our account: its contacts, or its status to deactivated.
        """
        _, account = await self._transport.postFor(
            self._accountURL(), update, messages.Registration
        )
        return account

    @deferred
    async def changeKey(self, newKey: josepy.JWK, newAlgorithm: josepy.JWASignature) -> None:
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
        await self._transport.post(url, inner)
        self._transport.accountKey = newKey
        self._transport.algorithm = newAlgorithm

    @deferred
    async def revoke(self, certificate: x509.Certificate, reason: int) -> None:
        """
        Revoke C{certificate} for the RFC 5280 C{reason} code.
        """
        revocation = messages.Revocation(certificate=certificate, reason=reason)
        await self._transport.post(self.directory["revokeCert"], revocation)

    def _accountURL(self) -> str:
        if self.accountURL is None:
            raise ACMEProtocolError(self.directory["newAccount"], "no account is registered yet")
        return self.accountURL

    @deferred
    async def newOrder(self, order: messages.Order) -> tuple[str, messages.Order]:
        """
        Submit a new order.

        @return: The order URL and the order.
        """
        url = self.directory["newOrder"]
        response, created = await self._transport.postFor(url, order, messages.Order)
        location = header(response, b"location")
        if not location:
            raise ACMEProtocolError(url, "no Location for the order", response.code)
        return location, created

    @deferred
    async def fetch(self, url: str, kind: type[_Body]) -> tuple[_Body, float | None]:
        """
        Fetch the resource at C{url} (POST-as-GET) as a C{kind}.

        @return: The resource and the server's Retry-After, if any.
        """
        response, parsed = await self._transport.postFor(url, None, kind)
        return parsed, self._transport.retryAfter(response)

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

    @deferred
    async def renewalInfo(
        self, certificate: x509.Certificate
    ) -> tuple[messages.RenewalInfo, float | None]:
        """
        Fetch the CA's suggested renewal window for C{certificate}.

        @return: The renewal information and the server's Retry-After.
        """
        transport = self._transport
        url = f"{self.directory['renewalInfo'].rstrip('/')}/{certificateID(certificate)}"
        response, body = await transport.send("GET", url)
        transport.raiseForProblem(url, response, body)
        try:
            info = messages.RenewalInfo.from_json(transport.json(url, response, body))
        except josepy.DeserializationError as error:
            raise ACMEProtocolError(
                url, f"not valid renewal information: {error}", response.code
            ) from None
        return info, transport.retryAfter(response)

    @deferred
    async def answerChallenge(self, url: str, answer: josepy.JSONDeSerializable) -> None:
        """
        Tell the server the challenge at C{url} is ready to be validated.
        """
        await self._transport.post(url, answer)

    @deferred
    async def finalize(
        self, url: str, request: messages.CertificateRequest
    ) -> tuple[messages.Order, float | None]:
        """
        Submit the CSR to the order's finalize URL.
        """
        response, order = await self._transport.postFor(url, request, messages.Order)
        return order, self._transport.retryAfter(response)

    @deferred
    async def downloadCertificate(self, url: str) -> bytes:
        """
        Download the PEM certificate chain at C{url}.
        """
        _, body = await self._transport.post(url, None, accept=PEM_CHAIN_CONTENT_TYPE)
        return body
