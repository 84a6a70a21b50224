"""
TLS-ALPN-01 (RFC 8737): the challenge as the C{acme} library reads it, and
the answer a TLS service gives a validation handshake.

A validation handshake offers the ALPN protocol C{acme-tls/1} with the
name being validated as its SNI (for an IP address, its reverse-DNS name,
RFC 8738 section 6).  L{ALPNAnswers} selects that protocol, presents a
self-signed certificate carrying the SHA-256 digest of the key
authorization in its critical C{acmeIdentifier} extension, and closes the
connection once the handshake ends.  Any other handshake is left as it
was: no protocol is selected and the service's own certificate is
presented.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IReactorTime

#: The ALPN protocol of validation handshakes.
ACME_TLS_1 = b"acme-tls/1"
#: The critical extension of a validation certificate (RFC 8737 section 3).
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: How many validation certificates are kept built, the latest used.
CACHED_CERTIFICATES = 32


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """
    The answer to a C{tls-alpn-01} challenge: an empty object, as for
    C{http-01}.
    """

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """
    The C{tls-alpn-01} challenge, which the C{acme} library no longer
    defines.
    """

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: Any, **unused: Any) -> str:
        """
        The key authorization, whose digest the validation certificate
        carries.
        """
        return self.key_authorization(account_key)


def serverName(identifier: str) -> str:
    """
    The SNI name a validation handshake for C{identifier} gives: the name
    itself, or the reverse-DNS name of an IP address.
    """
    try:
        return ipaddress.ip_address(identifier).reverse_pointer
    except ValueError:
        return identifier


def validationCertificate(
    identifier: str, keyAuthorization: str, now: datetime.datetime
) -> tuple[crypto.PKey, crypto.X509]:
    """
    A new key and the self-signed validation certificate for
    C{identifier} (a domain name or IP address) and C{keyAuthorization},
    valid from a day before C{now} to a day after.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(keyAuthorization.encode("ascii")).digest()
    try:
        altName: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(identifier))
    except ValueError:
        altName = x509.DNSName(identifier)
    subject = x509.Name([])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([altName]), critical=True)
        .add_extension(
            # The DER OCTET STRING of the 32-byte digest.
            x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return crypto.PKey.from_cryptography_key(key), crypto.X509.from_cryptography(certificate)


class ALPNAnswers:
    """
    Answers the validation handshakes of a TLS service's contexts.
    """

    def __init__(self, lookup: Callable[[str], tuple[str, str] | None], clock: IReactorTime):
        """
        @param lookup: Gives, for an SNI name, the identifier and key
            authorization of its pending challenge, or C{None}.
        @param clock: Closes the validation connections.
        """
        self._lookup = lookup
        self._clock = clock
        self._built: OrderedDict[tuple[str, str], tuple[crypto.PKey, crypto.X509]] = OrderedDict()

    def install(self, context: SSL.Context) -> None:
        """
        Answer the validation handshakes of connections on C{context}; their
        C{app_data} must be their Twisted TLS protocol.
        """
        context.set_alpn_select_callback(self._select)
        context.set_info_callback(self._handshakeDone)

    def _select(self, connection: SSL.Connection, offered: list[bytes]) -> Any:
        """
        Select C{acme-tls/1} and present the validation certificate, when
        offered for a name with a pending challenge; end the handshake when
        offered for any other name; select nothing otherwise.
        """
        if ACME_TLS_1 not in offered:
            return SSL.NO_OVERLAPPING_PROTOCOLS
        name = connection.get_servername()
        pending = self._lookup(name.decode("ascii").lower().rstrip(".")) if name else None
        if pending is None:
            return b""
        key, certificate = self._certificate(pending)
        connection.use_certificate(certificate)
        connection.use_privatekey(key)
        return ACME_TLS_1

    def _certificate(self, pending: tuple[str, str]) -> tuple[crypto.PKey, crypto.X509]:
        """
        The validation certificate of C{pending}, built at its first use
        and kept among the L{CACHED_CERTIFICATES} used last, so that
        handshakes made in a loop cost no key generation each.
        """
        built = self._built.pop(pending, None)
        if built is None:
            now = datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)
            built = validationCertificate(*pending, now)
        self._built[pending] = built
        while len(self._built) > CACHED_CERTIFICATES:
            self._built.popitem(last=False)
        return built

    def _handshakeDone(self, connection: SSL.Connection, where: int, ret: int) -> None:
        """
        Close a validation connection once its handshake has ended: at the
        next turn of the reactor, out of OpenSSL's call.
        """
        if not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        if connection.get_alpn_proto_negotiated() != ACME_TLS_1:
            return
        protocol = connection.get_app_data()
        if protocol is not None:
            self._clock.callLater(0, protocol.loseConnection)
