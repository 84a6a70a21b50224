"""
Tests for L{letsencrypt_resource.alpn}: TLS-ALPN-01 validation handshakes
on a service's own TLS contexts.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import ipaddress
from typing import Any

from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy import JWKRSA, b64encode
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import IOPump
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from letsencrypt_resource.alpn import (
    ACME_IDENTIFIER,
    ACME_TLS_1,
    FETCHED_FOR,
    MISSED_FOR,
    ALPNAnswers,
    ServedNames,
    serverName,
    sharedKey,
    sharedRecord,
    validationCertificate,
)
from letsencrypt_resource.alpnchallenge import TLSALPN01, TLSALPN01Response
from letsencrypt_resource.alpnpeek import HelloPeekFactory
from letsencrypt_resource.challenge import ChallengeResponder
from letsencrypt_resource.tls import ReloadableServerTLS
from tests.helpers import (
    Collector,
    connectInMemory,
    newSigner,
    peerCertificate,
    provisionalFor,
    selfSigned,
    tlsClientFactory,
)
from tests.helpers import (
    sharedKey as testKey,
)

NOW = datetime.datetime(2026, 11, 29, tzinfo=datetime.timezone.utc)


@implementer(IHandshakeListener)
class HandshakeRecorder(Collector):
    """
    A L{Collector} that keeps, when its handshake ends, the certificate the
    server presented and the protocol selected.
    """

    certificate: x509.Certificate | None = None
    protocol: bytes | None = None

    def handshakeCompleted(self) -> None:
        self.certificate = self.transport.getPeerCertificate().to_cryptography()
        self.protocol = self.transport.negotiatedProtocol


@implementer(IOpenSSLClientConnectionCreator)
class ValidationClient:
    """
    Client connections as a validator opens them: SNI C{name}, the ALPN
    protocols C{offered}, no check of the server's certificate.
    """

    def __init__(self, name: bytes, offered: list[bytes], version: int | None = None):
        """
        @param version: The only TLS version offered, if not any.
        """
        self.name = name
        self.offered = offered
        self.version = version

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_METHOD)
        if self.version is not None:
            context.set_min_proto_version(self.version)
            context.set_max_proto_version(self.version)
        context.set_alpn_protos(self.offered)
        connection = SSL.Connection(context, None)
        connection.set_tlsext_host_name(self.name)
        connection.set_connect_state()
        return connection


def connectValidator(
    server: Any,
    name: bytes,
    offered: list[bytes],
    clock: MemoryReactorClock,
    version: int | None = None,
) -> tuple[HandshakeRecorder, IOPump]:
    """
    Connect to C{server} in memory as a validator would: SNI C{name}, ALPN
    C{offered}, only TLS C{version} if given; the handshake may not have
    ended yet.
    """
    client = TLSMemoryBIOFactory(
        ValidationClient(name, offered, version),
        True,
        Factory.forProtocol(HandshakeRecorder),
        clock,
    )
    connection = connectInMemory(server, client, clock)
    recorder = connection.collector
    assert isinstance(recorder, HandshakeRecorder)
    return recorder, connection.pump


class ChallengeTypeTests(SynchronousTestCase):
    """
    Tests for L{TLSALPN01} as the C{acme} library reads it.
    """

    def test_readFromJSON(self) -> None:
        """
        A C{tls-alpn-01} challenge in an authorization is read as
        L{TLSALPN01}; its answer is an empty object.
        """
        token = b64encode(b"x" * 32).decode("ascii")
        body = messages.ChallengeBody.from_json(
            {"type": "tls-alpn-01", "url": "https://ca/c", "status": "pending", "token": token}
        )
        self.assertIsInstance(body.chall, TLSALPN01)
        key = JWKRSA(key=rsa.generate_private_key(65537, 2048))
        answer = body.chall.response(key)
        self.assertIsInstance(answer, TLSALPN01Response)
        self.assertEqual(answer.to_partial_json(), {})
        self.assertTrue(
            body.chall.validation(key).startswith(token + "."),
        )


class ValidationCertificateTests(SynchronousTestCase):
    """
    Tests for L{validationCertificate} and L{serverName}.
    """

    def test_domain(self) -> None:
        """
        The certificate for a domain names it, and only it, in a critical
        SAN, and carries the digest of the key authorization in the
        critical acmeIdentifier extension, DER-encoded.
        """
        _, certificate = validationCertificate("example.com", "token.print", NOW)
        parsed = certificate.to_cryptography()
        names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertTrue(names.critical)
        self.assertEqual(list(names.value), [x509.DNSName("example.com")])
        identifier = parsed.extensions.get_extension_for_oid(ACME_IDENTIFIER)
        self.assertTrue(identifier.critical)
        self.assertEqual(
            identifier.value.value,  # type: ignore[attr-defined]
            b"\x04\x20" + hashlib.sha256(b"token.print").digest(),
        )
        self.assertTrue(parsed.not_valid_before_utc < NOW < parsed.not_valid_after_utc)

    def test_ipAddress(self) -> None:
        """
        The certificate for an IP address names it as an iPAddress (RFC
        8738 section 6); its validation handshake's SNI name is the
        reverse-DNS name.
        """
        _, certificate = validationCertificate("192.0.2.7", "a.b", NOW)
        names = certificate.to_cryptography().extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        self.assertEqual(list(names.value), [x509.IPAddress(ipaddress.ip_address("192.0.2.7"))])
        self.assertEqual(serverName("192.0.2.7"), "7.2.0.192.in-addr.arpa")
        self.assertTrue(serverName("2001:db8::1").endswith(".ip6.arpa"))
        self.assertEqual(serverName("example.com"), "example.com")


class ALPNHandshakeTests(SynchronousTestCase):
    """
    Tests for L{ALPNAnswers} on a L{ReloadableServerTLS}.
    """

    def setUp(self) -> None:
        self.signer = newSigner()
        self.clock = MemoryReactorClock()
        self.responder = ChallengeResponder()
        self.tls = ReloadableServerTLS()
        self.tls.setCertificate(provisionalFor(self.signer))
        self.tls.answerALPN(ALPNAnswers(self.responder.lookupALPN, self.clock))
        self.server = HelloPeekFactory(
            TLSMemoryBIOFactory(self.tls, False, Factory.forProtocol(Collector), clock=self.clock),
            lambda: self.tls.alpn,
            self.clock,
        )

    def validate(
        self, name: bytes, offered: list[bytes], version: int | None = None
    ) -> HandshakeRecorder:
        """
        Connect as a validator would, and let the reactor turn.
        """
        recorder, pump = connectValidator(self.server, name, offered, self.clock, version)
        self.clock.advance(0)
        pump.flush()
        return recorder

    def test_validation(self) -> None:
        """
        A handshake offering acme-tls/1 for a name with a pending challenge
        selects it, gets the validation certificate, and is closed by the
        server once the handshake ends.
        """
        self.responder.addALPN("tok", "example.com", "tok.print")
        recorder = self.validate(b"example.com", [ACME_TLS_1])
        assert recorder.certificate is not None
        identifier = recorder.certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER)
        self.assertEqual(
            identifier.value.value,  # type: ignore[attr-defined]
            b"\x04\x20" + hashlib.sha256(b"tok.print").digest(),
        )
        self.assertEqual(recorder.protocol, ACME_TLS_1)
        self.assertIsNotNone(recorder.lostReason)

    def test_rsaServiceKey(self) -> None:
        """
        With an RSA service key, a validator using TLS 1.2 (for which
        OpenSSL picks the certificate before it reads the ALPN list) or TLS
        1.3 gets the validation certificate, not the service's own.
        """
        self.tls.setCertificate(selfSigned(key=testKey("rsa-2048")))
        self.responder.addALPN("tok", "example.com", "tok.print")
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            recorder = self.validate(b"example.com", [ACME_TLS_1], version)
            assert recorder.certificate is not None
            self.assertIn(ACME_IDENTIFIER, [e.oid for e in recorder.certificate.extensions])
            self.assertEqual(recorder.protocol, ACME_TLS_1)
            self.assertIsNotNone(recorder.lostReason)

    def test_rsaServiceKeyNormalHandshake(self) -> None:
        """
        With an RSA service key, a TLS 1.2 handshake for a name with a
        pending challenge that does not offer acme-tls/1 gets the
        service's own certificate.
        """
        certifiedKey = selfSigned(key=testKey("rsa-2048"))
        self.tls.setCertificate(certifiedKey)
        self.responder.addALPN("tok", "example.com", "tok.print")
        recorder = self.validate(b"example.com", [b"http/1.1"], SSL.TLS1_2_VERSION)
        self.assertEqual(recorder.certificate, certifiedKey.certificate)
        self.assertIsNone(recorder.lostReason)

    def test_ipAddressValidation(self) -> None:
        """
        For an IP address, the validation handshake names its reverse-DNS
        name, and gets a certificate for the address.
        """
        self.responder.addALPN("tok", "192.0.2.7", "tok.print")
        recorder = self.validate(b"7.2.0.192.in-addr.arpa", [ACME_TLS_1])
        assert recorder.certificate is not None
        names = recorder.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(list(names.value), [x509.IPAddress(ipaddress.ip_address("192.0.2.7"))])

    def test_nothingPending(self) -> None:
        """
        A handshake offering acme-tls/1 for a name with no pending challenge
        fails: no certificate of any kind is presented.
        """
        self.responder.addALPN("tok", "example.com", "tok.print")
        recorder = self.validate(b"other.example.com", [ACME_TLS_1])
        self.assertIsNone(recorder.certificate)
        self.assertIsNotNone(recorder.lostReason)

    def test_removed(self) -> None:
        """
        Once its challenge is removed, a name's validation handshakes fail.
        """
        self.responder.addALPN("tok", "example.com", "tok.print")
        self.responder.remove("tok")
        self.assertEqual(len(self.responder), 0)
        recorder = self.validate(b"example.com", [ACME_TLS_1])
        self.assertIsNone(recorder.certificate)
        self.assertIsNotNone(recorder.lostReason)

    def test_normalHandshake(self) -> None:
        """
        A handshake that does not offer acme-tls/1 gets the service's own
        certificate, no protocol selected, and stays open, even for a name
        with a pending challenge.
        """
        self.responder.addALPN("tok", "example.com", "tok.print")
        connection = connectInMemory(
            self.server, tlsClientFactory(self.signer, self.clock), self.clock
        )
        self.clock.advance(0)
        connection.send(b"hello")
        self.assertEqual(peerCertificate(connection), self.tls.certifiedKey.certificate)
        self.assertIsNone(connection.collector.lostReason)
        self.assertIsNone(connection.client.negotiatedProtocol)  # type: ignore[attr-defined]

    def test_otherProtocolsOffered(self) -> None:
        """
        A handshake that offers other ALPN protocols only completes with the
        service's certificate and none selected.
        """
        self.responder.addALPN("tok", "example.com", "tok.print")
        recorder = self.validate(b"example.com", [b"h2", b"http/1.1"])
        assert self.tls.certifiedKey is not None
        self.assertEqual(recorder.certificate, self.tls.certifiedKey.certificate)
        self.assertIsNone(recorder.protocol)
        self.assertIsNone(recorder.lostReason)

    def test_installedOnLaterContexts(self) -> None:
        """
        A context built for a later certificate answers validations too.
        """
        self.tls.setCertificate(provisionalFor(newSigner()))
        self.responder.addALPN("tok", "example.com", "tok.print")
        certificate = self.validate(b"example.com", [ACME_TLS_1]).certificate
        assert certificate is not None
        self.assertIn(ACME_IDENTIFIER, [e.oid for e in certificate.extensions])

    def test_certificateKept(self) -> None:
        """
        Repeated validation handshakes for one challenge present the same
        certificate, built once.
        """
        self.responder.addALPN("tok", "example.com", "tok.print")
        first = self.validate(b"example.com", [ACME_TLS_1]).certificate
        second = self.validate(b"example.com", [ACME_TLS_1]).certificate
        self.assertIsNotNone(first)
        self.assertEqual(first, second)


class SharedChallengeTests(SynchronousTestCase):
    """
    Tests for L{ALPNAnswers.fetch} through L{HelloPeekFactory}: a
    validation handshake for a challenge another node published waits
    while it is read from the storage.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.responder = ChallengeResponder()
        self.looked: list[tuple[str, Deferred[str | None]]] = []
        self.cancelled: list[str] = []

        def shared(key: str, clock: object) -> Deferred[str | None]:
            looking: Deferred[str | None] = Deferred(lambda _: self.cancelled.append(key))
            self.looked.append((key, looking))
            return looking

        self.tls = ReloadableServerTLS()
        self.tls.setCertificate(provisionalFor(newSigner()))
        served = ServedNames()
        served.add(["example.com", "192.0.2.7"])
        self.tls.answerALPN(ALPNAnswers(self.responder.lookupALPN, self.clock, shared, served))
        self.server = HelloPeekFactory(
            TLSMemoryBIOFactory(self.tls, False, Factory.forProtocol(Collector), clock=self.clock),
            lambda: self.tls.alpn,
            self.clock,
        )

    def connect(self, name: bytes, offered: list[bytes]) -> tuple[HandshakeRecorder, IOPump]:
        """
        Connect as a validator would; the handshake may wait.
        """
        return connectValidator(self.server, name, offered, self.clock)

    def finish(self, pump: IOPump) -> None:
        """
        Let the reactor turn and the bytes flow.
        """
        pump.flush()
        self.clock.advance(0)
        pump.flush()

    def test_publishedElsewhere(self) -> None:
        """
        The handshake waits while the challenge is read under its shared
        key, then gets the validation certificate.
        """
        recorder, pump = self.connect(b"example.com", [ACME_TLS_1])
        [(key, looking)] = self.looked
        self.assertEqual(key, sharedKey("example.com"))
        self.assertIsNone(recorder.certificate)
        looking.callback(sharedRecord("example.com", "tok.print"))
        self.finish(pump)
        assert recorder.certificate is not None
        self.assertEqual(
            recorder.certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER).value.value,  # type: ignore[attr-defined]
            b"\x04\x20" + hashlib.sha256(b"tok.print").digest(),
        )
        self.assertEqual(recorder.protocol, ACME_TLS_1)

    def test_keptAWhile(self) -> None:
        """
        A challenge read is used without another read for
        L{FETCHED_FOR} seconds, and read again after.
        """
        recorder, pump = self.connect(b"example.com", [ACME_TLS_1])
        self.looked[0][1].callback(sharedRecord("example.com", "tok.print"))
        self.finish(pump)
        self.connect(b"example.com", [ACME_TLS_1])
        self.assertEqual(len(self.looked), 1)
        self.clock.advance(FETCHED_FOR + 1)
        self.connect(b"example.com", [ACME_TLS_1])
        self.assertEqual(len(self.looked), 2)

    def test_recordForAnotherName(self) -> None:
        """
        A record that is not for the name asked, or not a record, is not
        used: the validation handshake fails.
        """
        for record in (sharedRecord("other.example.com", "tok.print"), "tok.print", None):
            recorder, pump = self.connect(b"example.com", [ACME_TLS_1])
            self.looked[-1][1].callback(record)
            self.finish(pump)
            self.assertIsNone(recorder.certificate)
            self.assertIsNotNone(recorder.lostReason)
            self.clock.advance(MISSED_FOR)

    def test_noLookup(self) -> None:
        """
        Nothing is read for a handshake that is no validation, or for a
        challenge pending here.
        """
        self.responder.addALPN("tok", "example.com", "tok.print")
        recorder, pump = self.connect(b"example.com", [ACME_TLS_1])
        self.finish(pump)
        self.assertIsNotNone(recorder.certificate)
        recorder, pump = self.connect(b"other.example.com", [b"http/1.1"])
        self.finish(pump)
        self.assertIsNotNone(recorder.certificate)
        self.assertEqual(self.looked, [])

    def test_notTLS(self) -> None:
        """
        A connection whose first bytes begin no TLS handshake record is
        closed at once, before any TLS.
        """
        connection = connectInMemory(self.server, None, self.clock)
        connection.send(b"GET / HTTP/1.1\r\n\r\n")
        self.assertIsNotNone(connection.collector.lostReason)
        self.assertEqual(self.looked, [])

    def test_clientGone(self) -> None:
        """
        A client that leaves while its challenge is read cancels the read.
        """
        recorder, pump = self.connect(b"example.com", [ACME_TLS_1])
        recorder.transport.abortConnection()
        self.finish(pump)
        self.assertEqual(self.cancelled, [sharedKey("example.com")])

    def test_onlyNamesServed(self) -> None:
        """
        Nothing is read for a name this server does not certify, however
        many handshakes ask; the reverse name of an address it certifies is
        read.
        """
        for _ in range(20):
            recorder, pump = self.connect(b"random.example.net", [ACME_TLS_1])
            self.finish(pump)
            self.assertIsNone(recorder.certificate)
        self.assertEqual(self.looked, [])
        self.connect(b"7.2.0.192.in-addr.arpa", [ACME_TLS_1])
        self.assertEqual([key for key, _ in self.looked], [sharedKey("7.2.0.192.in-addr.arpa")])

    def test_oneReadPerName(self) -> None:
        """
        Handshakes for a name whose challenge is being read wait on that
        one read, and all get the validation certificate; one that leaves
        does not end the read for the others.
        """
        first, firstPump = self.connect(b"example.com", [ACME_TLS_1])
        second, secondPump = self.connect(b"example.com", [ACME_TLS_1])
        gone, gonePump = self.connect(b"example.com", [ACME_TLS_1])
        gone.transport.abortConnection()
        self.finish(gonePump)
        [(_, looking)] = self.looked
        self.assertEqual(self.cancelled, [])
        looking.callback(sharedRecord("example.com", "tok.print"))
        for recorder, pump in ((first, firstPump), (second, secondPump)):
            self.finish(pump)
            self.assertIsNotNone(recorder.certificate)
            self.assertEqual(recorder.protocol, ACME_TLS_1)

    def test_missKeptBriefly(self) -> None:
        """
        A name whose challenge was not found is not read again for
        L{MISSED_FOR} seconds, and is read after.
        """
        recorder, pump = self.connect(b"example.com", [ACME_TLS_1])
        self.looked[0][1].callback(None)
        self.finish(pump)
        recorder, pump = self.connect(b"example.com", [ACME_TLS_1])
        self.finish(pump)
        self.assertIsNone(recorder.certificate)
        self.assertEqual(len(self.looked), 1)
        self.clock.advance(MISSED_FOR)
        self.connect(b"example.com", [ACME_TLS_1])
        self.assertEqual(len(self.looked), 2)


class ServedNamesTests(SynchronousTestCase):
    """
    Tests for L{ServedNames}.
    """

    def test_addRemove(self) -> None:
        """
        A name is served while any service added and not removed
        certifies it; addresses are served by their reverse names.
        """
        served = ServedNames()
        served.add(["example.com", "2001:db8::1"])
        served.add(["example.com"])
        served.remove(["example.com", "2001:db8::1"])
        self.assertIn("example.com", served)
        self.assertNotIn("2001:db8::1", served)
        self.assertNotIn(serverName("2001:db8::1"), served)
        served.remove(["example.com"])
        self.assertNotIn("example.com", served)

    def test_addedWithoutUpdate(self) -> None:
        """
        Adding counts each name without C{Counter.update} (a generator
        given to it cost twice the loop at start), and a name certified
        twice by one service is counted twice.
        """

        updates: list[object] = []

        class Recording(collections.Counter[str]):
            def update(self, *arguments: Any, **keywords: Any) -> None:
                updates.append(arguments)
                super().update(*arguments, **keywords)

        served = ServedNames()
        served._names = Recording()
        del updates[:]
        served.add(["example.com", "example.com", "192.0.2.1"])
        self.assertEqual(updates, [])
        served.remove(["example.com"])
        self.assertIn("example.com", served)
        self.assertIn(serverName("192.0.2.1"), served)
        served.remove(["example.com"])
        self.assertNotIn("example.com", served)
