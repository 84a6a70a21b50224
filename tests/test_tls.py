"""
Tests for L{letsencrypt_resource.tls}, with TLS handshakes in memory.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from letsencrypt_resource import tls
from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.tls import (
    NoCertificateYet,
    ReloadableServerTLS,
    TLSCertificateConsumer,
)
from tests.helpers import (
    InMemoryConnection,
    connectInMemory,
    keyParsed,
    newSigner,
    peerCertificate,
    provisionalFor,
    tlsClientFactory,
)


class Echo(Protocol):
    """
    Sends back what it receives.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def mismatched(certifiedKey: CertifiedKey) -> CertifiedKey:
    """
    C{certifiedKey}'s certificate with the key of another.
    """
    other = provisionalFor(newSigner())
    return CertifiedKey(other.key, certifiedKey.certificate, certifiedKey.chain)


class ReloadableServerTLSTests(SynchronousTestCase):
    """
    Tests for L{ReloadableServerTLS}.
    """

    def setUp(self) -> None:
        self.signer = newSigner()
        self.first = provisionalFor(self.signer)
        self.tls = ReloadableServerTLS()
        self.clock = MemoryReactorClock()
        self.serverFactory = TLSMemoryBIOFactory(
            self.tls, False, Factory.forProtocol(Echo), clock=self.clock
        )

    def connect(self, trustRoot: CertifiedKey | None = None) -> InMemoryConnection:
        """
        Open a TLS connection to an echo server on L{tls} and pump the
        handshake.

        @param trustRoot: What the client trusts; the signer by default.
        """
        return connectInMemory(
            self.serverFactory,
            tlsClientFactory(trustRoot or self.signer, self.clock),
            self.clock,
        )

    def assertEchoes(self, connection: InMemoryConnection) -> None:
        """
        Assert that data sent over C{connection} comes back.
        """
        before = connection.collector.received
        connection.send(b"ping")
        self.assertEqual(
            (connection.collector.received, connection.collector.lostReason),
            (before + b"ping", None),
        )

    def test_interface(self) -> None:
        """
        L{ReloadableServerTLS} provides L{IOpenSSLServerConnectionCreator}.
        """
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, self.tls))

    def test_noCertificateYet(self) -> None:
        """
        Before any certificate, a connection is refused with
        L{NoCertificateYet}.
        """
        self.assertIsNone(self.tls.certifiedKey)
        self.assertRaises(NoCertificateYet, self.tls.serverConnectionForTLS, None)

    def test_handshake(self) -> None:
        """
        After C{setCertificate} a handshake presents the certificate, which
        the client verifies through the chain.
        """
        self.tls.setCertificate(self.first)
        connection = self.connect()
        self.assertEchoes(connection)
        self.assertEqual(peerCertificate(connection), self.first.certificate)

    def test_switch(self) -> None:
        """
        After a second C{setCertificate} new handshakes present the new
        certificate while a connection opened before goes on with the old.
        """
        self.tls.setCertificate(self.first)
        before = self.connect()
        second = provisionalFor(self.signer)
        self.tls.setCertificate(second)
        after = self.connect()
        self.assertEchoes(before)
        self.assertEchoes(after)
        self.assertEqual(
            (peerCertificate(before), peerCertificate(after), self.tls.certifiedKey),
            (self.first.certificate, second.certificate, second),
        )

    def test_badCertificateKeepsOld(self) -> None:
        """
        A certificate whose key does not match is refused and the current
        one stays in service.
        """
        self.tls.setCertificate(self.first)
        self.assertRaises(
            SSL.Error, self.tls.setCertificate, mismatched(provisionalFor(self.signer))
        )
        connection = self.connect()
        self.assertEchoes(connection)
        self.assertEqual(
            (peerCertificate(connection), self.tls.certifiedKey),
            (self.first.certificate, self.first),
        )

    def countContexts(self, failFor: CertifiedKey | None = None) -> list[CertifiedKey]:
        """
        Record each context L{ReloadableServerTLS} builds, and fail the
        build for C{failFor}.

        @return: The certificates whose contexts were asked for, in order.
        """
        built: list[CertifiedKey] = []
        build = tls.serverContext

        def serverContext(certifiedKey: CertifiedKey) -> SSL.Context:
            built.append(certifiedKey)
            if certifiedKey is failFor:
                raise SSL.Error("cannot build")
            return build(certifiedKey)

        self.patch(tls, "serverContext", serverContext)
        return built

    def test_contextBuiltAtFirstHandshake(self) -> None:
        """
        C{setCertificate} builds no TLS context: the first handshake after
        it builds the certificate's, once, and later handshakes reuse it.
        """
        built = self.countContexts()
        self.tls.setCertificate(self.first)
        second = provisionalFor(self.signer)
        self.tls.setCertificate(second)
        self.assertEqual(built, [])
        connections = [self.connect(), self.connect()]
        self.assertEqual(
            (built, [peerCertificate(c) for c in connections]),
            ([second], [second.certificate, second.certificate]),
        )

    def test_contextFailureKeepsOld(self) -> None:
        """
        When the context of a new certificate cannot be built at its first
        handshake, the failure is logged once and the previous certificate
        stays in service, for that handshake and the next ones, also when
        the refused certificate is set again.
        """
        second = provisionalFor(self.signer)
        built = self.countContexts(failFor=second)
        self.tls.setCertificate(self.first)
        self.connect()
        self.tls.setCertificate(second)
        connections = [self.connect()]
        self.tls.setCertificate(second)
        connections.append(self.connect())
        for connection in connections:
            self.assertEchoes(connection)
        self.assertEqual(
            (
                [peerCertificate(c) for c in connections],
                self.tls.certifiedKey,
                built,
                len(self.flushLoggedErrors(SSL.Error)),
            ),
            ([self.first.certificate] * 2, self.first, [self.first, second], 1),
        )

    def test_checkedKeyParsedAtFirstHandshake(self) -> None:
        """
        A certificate whose key was checked when it was stored
        (L{CertifiedKey.fromCheckedPEM}) is set without its key being
        parsed; the key is parsed when the context is built, at the first
        handshake, which presents it.
        """
        second = CertifiedKey.fromCheckedPEM(provisionalFor(self.signer).toPEM())
        self.tls.setCertificate(second)
        parsedAtSet = keyParsed(second)
        connection = self.connect()
        self.assertEchoes(connection)
        self.assertEqual(
            (parsedAtSet, keyParsed(second), peerCertificate(connection)),
            (False, True, second.certificate),
        )

    def test_checkedKeyMismatchKeepsOld(self) -> None:
        """
        A certificate whose checked key turns out, when parsed at the first
        handshake, not to match it (or not to be a key at all) is refused
        there: the previous certificate stays in service and the failure
        is logged, naming the mismatch.
        """
        self.tls.setCertificate(self.first)
        self.connect()
        other = provisionalFor(self.signer)
        for bad in (
            CertifiedKey.fromCheckedPEM(mismatched(other).toPEM()),
            CertifiedKey.fromCheckedPEM(b"no key" + other.fullchainPEM),
        ):
            self.tls.setCertificate(bad)
            connection = self.connect()
            self.assertEchoes(connection)
            errors = self.flushLoggedErrors(SSL.Error)
            self.assertEqual(
                (peerCertificate(connection), self.tls.certifiedKey, len(errors)),
                (self.first.certificate, self.first, 1),
            )
            self.assertIn("does not match the certificate", str(errors[0].value))

    def test_firstContextFailure(self) -> None:
        """
        When the context of the first certificate cannot be built, the
        failure is logged once and connections are refused with
        L{NoCertificateYet}, without building it again, until a certificate
        that can be presented is set.
        """
        built = self.countContexts(failFor=self.first)
        self.tls.setCertificate(self.first)
        for _ in range(2):
            self.assertRaises(NoCertificateYet, self.tls.serverConnectionForTLS, None)
        self.assertEqual((built, len(self.flushLoggedErrors(SSL.Error))), ([self.first], 1))
        second = provisionalFor(self.signer)
        self.tls.setCertificate(second)
        self.assertEqual(peerCertificate(self.connect()), second.certificate)

    def test_untrustedRefused(self) -> None:
        """
        A client trusting another signer drops the connection in the
        handshake: the chain presented is the one verified.
        """
        self.tls.setCertificate(self.first)
        connection = self.connect(newSigner())
        connection.send(b"ping")
        self.assertEqual(connection.collector.received, b"")
        self.assertIsNotNone(connection.collector.lostReason)


class TLSCertificateConsumerTests(SynchronousTestCase):
    """
    Tests for L{TLSCertificateConsumer}.
    """

    def setUp(self) -> None:
        self.consumer = TLSCertificateConsumer("files", ("example.com",))
        self.signer = newSigner()

    def test_interface(self) -> None:
        """
        L{TLSCertificateConsumer} provides L{ICertificateConsumer}.
        """
        self.assertTrue(verifyObject(ICertificateConsumer, self.consumer))

    def test_whenCertificateAtOnce(self) -> None:
        """
        With a certificate, C{whenCertificate} fires at once with it.
        """
        certifiedKey = provisionalFor(self.signer)
        self.consumer.useCertificate(certifiedKey)
        self.assertIs(self.successResultOf(self.consumer.whenCertificate()), certifiedKey)

    def test_whenCertificateLater(self) -> None:
        """
        Without a certificate, every C{whenCertificate} fires with the first
        one to come, which the TLS side then presents.
        """
        waiting = [self.consumer.whenCertificate() for _ in range(2)]
        self.assertNoResult(waiting[0])
        certifiedKey = provisionalFor(self.signer)
        self.consumer.useCertificate(certifiedKey)
        self.assertEqual([self.successResultOf(d) for d in waiting], [certifiedKey, certifiedKey])
        self.assertIs(self.consumer.tls.certifiedKey, certifiedKey)

    def test_cancel(self) -> None:
        """
        A cancelled C{whenCertificate} fails with L{CancelledError} and is
        not fired later.
        """
        waiting = self.consumer.whenCertificate()
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.consumer.useCertificate(provisionalFor(self.signer))

    def test_onFirstCertificateAtOnce(self) -> None:
        """
        With a certificate, C{onFirstCertificate} calls back at once with it;
        giving up afterwards does nothing.
        """
        certifiedKey = provisionalFor(self.signer)
        self.consumer.useCertificate(certifiedKey)
        told: list[CertifiedKey] = []
        giveUp = self.consumer.onFirstCertificate(told.append)
        self.assertEqual(told, [certifiedKey])
        giveUp()
        self.assertEqual(told, [certifiedKey])

    def test_onFirstCertificateLater(self) -> None:
        """
        Without a certificate, every C{onFirstCertificate} is called back
        with the first one to come, once, which the TLS side then presents.
        """
        told: list[CertifiedKey] = []
        for _ in range(2):
            self.consumer.onFirstCertificate(told.append)
        self.assertEqual(told, [])
        certifiedKey = provisionalFor(self.signer)
        self.consumer.useCertificate(certifiedKey)
        self.assertIs(self.consumer.tls.certifiedKey, certifiedKey)
        self.consumer.useCertificate(provisionalFor(self.signer))
        self.assertEqual(told, [certifiedKey, certifiedKey])

    def test_giveUp(self) -> None:
        """
        An C{onFirstCertificate} given up is not called back; the others are.
        """
        told: list[str] = []
        giveUp = self.consumer.onFirstCertificate(lambda _: told.append("given up"))
        self.consumer.onFirstCertificate(lambda _: told.append("kept"))
        giveUp()
        self.consumer.useCertificate(provisionalFor(self.signer))
        self.assertEqual(told, ["kept"])

    def test_callbackErrorLogged(self) -> None:
        """
        An error in an C{onFirstCertificate} callback is logged; the other
        callbacks are called and the certificate is in use all the same.
        """

        def broken(certifiedKey: CertifiedKey) -> None:
            raise RuntimeError("broken")

        told: list[CertifiedKey] = []
        self.consumer.onFirstCertificate(broken)
        self.consumer.onFirstCertificate(told.append)
        certifiedKey = provisionalFor(self.signer)
        self.consumer.useCertificate(certifiedKey)
        self.assertEqual(told, [certifiedKey])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_callbackErrorAtOnceLogged(self) -> None:
        """
        An error in an C{onFirstCertificate} callback called at once (the
        consumer has a certificate already) is logged, not raised: the
        caller (a service that starts) goes on.
        """

        def broken(certifiedKey: CertifiedKey) -> None:
            raise RuntimeError("broken")

        self.consumer.useCertificate(provisionalFor(self.signer))
        self.consumer.onFirstCertificate(broken)
        told: list[CertifiedKey] = []
        self.consumer.onFirstCertificate(told.append)
        self.assertEqual(len(told), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_badCertificateWaits(self) -> None:
        """
        A certificate the TLS side refuses raises and does not fire
        C{whenCertificate} nor call back C{onFirstCertificate}.
        """
        told: list[CertifiedKey] = []
        self.consumer.onFirstCertificate(told.append)
        waiting = self.consumer.whenCertificate()
        self.assertRaises(
            SSL.Error,
            self.consumer.useCertificate,
            mismatched(provisionalFor(self.signer)),
        )
        self.assertEqual(told, [])
        self.assertNoResult(waiting)
        self.assertIsNone(self.consumer.tls.certifiedKey)
