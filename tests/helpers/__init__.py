"""
Fixtures shared by the tests: certificates, in-memory connections and raw
HTTP exchanges, and the texts that would give a private key away. The other
shared helpers are in the modules of this package.
"""

from __future__ import annotations

import base64
import datetime
from functools import cache

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import _producer_helpers
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase as TestCase

from letsencrypt_resource import provisional
from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.keys import PrivateKey, generateKey
from letsencrypt_resource.provisional import makeProvisional, makeSigner

#: The address in-memory connections pretend to use.
ADDRESS = IPv4Address("TCP", "127.0.0.1", 4443)


def utcNow() -> datetime.datetime:
    """
    The current time, UTC: certificates must be valid for real TLS clients.
    """
    return datetime.datetime.now(datetime.timezone.utc)


@cache
def sharedKey(keyType: str) -> PrivateKey:
    """
    A key of C{keyType}, generated once per test run: keys are immutable and
    RSA keys are slow to make.
    """
    return generateKey(keyType)


def selfSigned(
    names: tuple[str, ...] = ("example.com",),
    *,
    commonName: str | None = None,
    key: PrivateKey | None = None,
) -> CertifiedKey:
    """
    A self-signed certificate and its key.

    @param names: The SAN's DNS names; no SAN when empty.
    @param commonName: The subject's CN; C{names[0]} by default.
    @param key: The key to certify; a new P-256 key by default.
    """
    key = key if key is not None else generateKey("ecdsa-p256")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName or names[0])])
    now = utcNow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]),
            critical=False,
        )
    return CertifiedKey(key, builder.sign(key, hashes.SHA256()))


def keyParsed(certifiedKey: CertifiedKey) -> bool:
    """
    Whether the key of C{certifiedKey}, read as PEM, has been parsed: its
    cached value is in its slot (reading the slot computes nothing).
    """
    try:
        vars(CertifiedKey)["key"].__get__(certifiedKey)
    except AttributeError:
        return False
    return True


def newSigner(domains: tuple[str, ...] = ("com", "test")) -> CertifiedKey:
    """
    A new provisional signer, valid now, that may sign for C{domains} and
    the names under them.
    """
    return makeSigner("tests", domains, utcNow())


def provisionalFor(
    signer: CertifiedKey, domains: tuple[str, ...] = ("example.com",)
) -> CertifiedKey:
    """
    A new provisional certificate for C{domains} from C{signer}, valid now.
    """
    return makeProvisional(signer, domains, utcNow())


def countSignatures(case: TestCase) -> list[tuple[str, ...]]:
    """
    Count the provisional certificates signed during the test C{case}:
    the names of each go in the list returned, as it is signed.
    """
    signed: list[tuple[str, ...]] = []
    sign = provisional.signProvisional

    def counted(
        signer: CertifiedKey, key: PrivateKey, domains: tuple[str, ...], now: datetime.datetime
    ) -> x509.Certificate:
        signed.append(domains)
        return sign(signer, key, domains, now)

    case.patch(provisional, "signProvisional", counted)
    return signed


class Collector(Protocol):
    """
    Keeps what it receives and why its connection ended.

    @ivar received: Every byte received so far.
    @ivar lostReason: Why the connection ended, or C{None} while it is open.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lostReason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lostReason = reason


@attrs.frozen
class InMemoryConnection:
    """
    A client connected to a server in memory.

    @ivar client: The client protocol, its TLS layer if it has one.
    @ivar collector: The L{Collector} the client's data goes to.
    @ivar pump: Moves bytes between client and server.
    """

    client: IProtocol
    collector: Collector
    pump: IOPump

    def send(self, data: bytes) -> None:
        """
        Send C{data} to the server, and move bytes until both sides are
        idle.
        """
        self.collector.transport.write(data)
        self.pump.flush()


def connectInMemory(
    serverFactory: IProtocolFactory,
    clientFactory: IProtocolFactory | None = None,
    clock: MemoryReactorClock | None = None,
) -> InMemoryConnection:
    """
    Connect a client to C{serverFactory} in memory and pump the greeting
    (for TLS, the handshake).

    @param clientFactory: Makes the client; a plain L{Collector} by default.
    @param clock: The clock the factories schedule on, advanced by the pump.
    """
    clientFactory = clientFactory or Factory.forProtocol(Collector)
    client, _, pump = connectedServerAndClient(
        lambda: serverFactory.buildProtocol(ADDRESS),
        lambda: clientFactory.buildProtocol(ADDRESS),
        greet=False,
        clock=clock,
    )
    connection = InMemoryConnection(client, getattr(client, "wrappedProtocol", client), pump)
    pump.flush()
    return connection


def tlsClientFactory(
    trustRoot: CertifiedKey, clock: MemoryReactorClock, hostname: str = "example.com"
) -> TLSMemoryBIOFactory:
    """
    TLS clients of L{Collector} that trust only C{trustRoot}'s certificate
    and check the server is C{hostname}.

    @param clock: The clock the TLS layer schedules its writes on.
    """
    creator = optionsForClientTLS(hostname, trustRoot=Certificate.loadPEM(trustRoot.certificatePEM))
    return TLSMemoryBIOFactory(creator, True, Factory.forProtocol(Collector), clock=clock)


def peerCertificate(connection: InMemoryConnection) -> x509.Certificate:
    """
    The certificate the server presented to C{connection}'s TLS client.
    """
    return connection.client.getPeerCertificate().to_cryptography()


@attrs.frozen
class HTTPResponse:
    """
    An HTTP response as read off the wire.

    @ivar headers: By lower-case name.
    """

    code: int
    headers: dict[bytes, bytes]
    body: bytes


def parseResponse(data: bytes) -> HTTPResponse:
    """
    Read the single HTTP/1.x response in C{data}.
    """
    head, _, body = data.partition(b"\r\n\r\n")
    statusLine, *headerLines = head.split(b"\r\n")
    headers = {}
    for line in headerLines:
        name, _, value = line.partition(b":")
        headers[name.lower()] = value.strip()
    return HTTPResponse(int(statusLine.split(b" ")[1]), headers, body)


def rawRequest(method: bytes, target: bytes, body: bytes = b"") -> bytes:
    """
    An HTTP/1.1 request for C{target} that asks the server to close the
    connection once it has answered.
    """
    return (
        b"%s %s HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (method, target, len(body), body)
    )


def exchange(
    serverFactory: IProtocolFactory,
    request: bytes,
    clientFactory: IProtocolFactory | None = None,
    clock: MemoryReactorClock | None = None,
) -> HTTPResponse:
    """
    Send C{request} to a new in-memory connection to C{serverFactory} and
    read the response.

    @param clientFactory: As for L{connectInMemory}.
    @param clock: As for L{connectInMemory}.
    """
    connection = connectInMemory(serverFactory, clientFactory, clock)
    connection.send(request)
    return parseResponse(connection.collector.received)


def pullProducersOn(case: TestCase, clock: MemoryReactorClock) -> None:
    """
    For the rest of C{case}, have HTTP channels pull from pull producers
    (the static files of C{twisted.web.static}) on C{clock}, which the pump
    of an in-memory connection advances, rather than with the global
    cooperator on the global reactor, which a synchronous test never runs.
    """
    cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))
    case.patch(_producer_helpers, "cooperate", cooperator.cooperate)


def keyMarkers(key: PrivateKey) -> list[str]:
    """
    The texts that would give C{key} away in a log line or a message: its
    PEM bodies (PKCS#8 and traditional) whole and line by line, its DER in
    base64 and base64url, and its private numbers in base64url (as in a
    JWK) and hex.
    """
    markers = []
    for format in (
        serialization.PrivateFormat.PKCS8,
        serialization.PrivateFormat.TraditionalOpenSSL,
    ):
        pem = key.private_bytes(
            serialization.Encoding.PEM, format, serialization.NoEncryption()
        ).decode("ascii")
        lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
        markers.append("".join(lines))
        markers.extend(line for line in lines if len(line) >= 32)
        der = base64.b64decode("".join(lines))
        markers.append(base64.urlsafe_b64encode(der).decode().rstrip("="))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = [key.private_numbers().private_value]
    else:
        private = key.private_numbers()
        numbers = [private.d, private.p, private.q]
    for number in numbers:
        raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
        markers.append(base64.urlsafe_b64encode(raw).decode().rstrip("="))
        markers.append(raw.hex())
    return markers
