"""
Tests for L{letsencrypt_resource.ftpstls}: which TLS sessions the data
connections of an FTPS session may resume, with in-memory handshakes.
"""

from __future__ import annotations

from typing import Any

import attrs
from OpenSSL import SSL, crypto
from OpenSSL._util import lib as _lib
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.ftpstls import (
    SESSION_LIFETIME,
    SessionTLS,
    resumedSession,
    sessionContext,
)
from tests.helpers import newSigner, provisionalFor, sharedKey


def _handshake(server: SSL.Connection, client: SSL.Connection) -> None:
    """
    Run the handshake of C{client} with C{server} in memory, and carry
    what the server sends after it (TLS 1.3 session tickets).
    """
    server.set_accept_state()
    client.set_connect_state()
    for _ in range(20):
        for connection in (client, server):
            try:
                connection.do_handshake()
            except SSL.WantReadError:
                pass
        for source, target in ((client, server), (server, client)):
            try:
                target.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
    try:
        client.recv(1)
    except SSL.WantReadError:
        pass


class SessionReuseTests(SynchronousTestCase):
    """
    L{SessionTLS.sealCache} leaves only the control connection's sessions
    resumable.
    """

    def connect(
        self, tls: SessionTLS, context: SSL.Context, session: SSL.Session | None = None
    ) -> tuple[SSL.Connection, SSL.Connection]:
        """
        A server connection of C{tls} and a client connection on
        C{context}, resuming C{session} if given, handshaken.
        """
        client = SSL.Connection(context, None)
        if session is not None:
            client.set_session(session)
        server = tls.serverConnectionForTLS(None)
        _handshake(server, client)
        # Kept open: OpenSSL drops the session of a connection freed
        # without a TLS shutdown, on either side.
        self.connections.extend([server, client])
        return server, client

    def check(self, version: int) -> None:
        """
        Over TLS C{version}: the control session is resumed; a data
        connection's own session is not.
        """
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(version)
        context.set_max_proto_version(version)
        tls = SessionTLS(provisionalFor(newSigner(), ("ftp.example.com",)))
        self.connections: list[SSL.Connection] = []
        _, control = self.connect(tls, context)
        tls.sealCache()
        data, dataClient = self.connect(tls, context)
        self.assertFalse(resumedSession(data))
        stolen, _ = self.connect(tls, context, dataClient.get_session())
        self.assertFalse(resumedSession(stolen))
        for _ in range(2):
            resumed, _ = self.connect(tls, context, control.get_session())
            self.assertTrue(resumedSession(resumed))

    def test_tls12(self) -> None:
        """
        Over TLS 1.2, a session made by a data connection's full handshake
        (refused or not) cannot be resumed; the control session can.
        """
        self.check(SSL.TLS1_2_VERSION)

    def test_tls13(self) -> None:
        """
        Over TLS 1.3 as well.
        """
        self.check(SSL.TLS1_3_VERSION)

    def test_lifetime(self) -> None:
        """
        A session's TLS session stays resumable for a day, not OpenSSL's
        2 hours: a session that transfers for longer keeps working.
        """
        tls = SessionTLS(provisionalFor(newSigner(), ("ftp.example.com",)))
        self.assertEqual(tls._context.get_timeout(), 86_400)


def _withChain(certifiedKey: CertifiedKey) -> CertifiedKey:
    """
    C{certifiedKey} with an intermediate after it (a certificate that did
    not sign it: the chain is presented as given, not checked).
    """
    return attrs.evolve(certifiedKey, chain=(newSigner().certificate,))


class SessionContextTests(SynchronousTestCase):
    """
    L{sessionContext} builds its context without C{CertificateOptions}, yet
    as it would, from a certificate converted once.
    """

    def test_sameAsTwisted(self) -> None:
        """
        The options (protocol floor, no compression, no tickets, server
        cipher order), mode, ciphers, cache mode and peer verification are
        those of C{CertificateOptions}; sessions last a day.
        """
        certifiedKey = _withChain(provisionalFor(newSigner(), ("ftp.example.com",)))
        twisted = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(certifiedKey.key),
            certificate=crypto.X509.from_cryptography(certifiedKey.certificate),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in certifiedKey.chain],
            raiseMinimumTo=TLSVersion.TLSv1_2,
            enableSessions=True,
        ).getContext()
        ours = sessionContext(certifiedKey)
        options = _lib.SSL_CTX_get_options(ours._context)
        self.assertEqual(options, _lib.SSL_CTX_get_options(twisted._context))
        for flag in (SSL.OP_NO_SSLv3, SSL.OP_NO_TLSv1, SSL.OP_NO_TLSv1_1, SSL.OP_NO_TICKET):
            self.assertTrue(options & flag)
        self.assertEqual(ours.set_mode(0), twisted.set_mode(0))
        self.assertEqual(ours.get_session_cache_mode(), twisted.get_session_cache_mode())
        self.assertEqual(ours.get_verify_mode(), SSL.VERIFY_NONE)
        self.assertEqual(ours.get_timeout(), SESSION_LIFETIME)
        self.assertEqual(
            SSL.Connection(ours, None).get_cipher_list(),
            SSL.Connection(twisted, None).get_cipher_list(),
        )

    def test_presentsChain(self) -> None:
        """
        A handshake gets the certificate followed by its chain.
        """
        certifiedKey = _withChain(provisionalFor(newSigner(), ("ftp.example.com",)))
        client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        _handshake(SSL.Connection(sessionContext(certifiedKey), None), client)
        chain = client.get_peer_cert_chain(as_cryptography=True)
        self.assertEqual(chain, [certifiedKey.certificate, *certifiedKey.chain])

    def test_unansweredALPN(self) -> None:
        """
        A client that offers ALPN protocols gets none chosen, and its
        handshake completes.
        """
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_alpn_protos([b"ftp"])
        client = SSL.Connection(context, None)
        tls = SessionTLS(provisionalFor(newSigner(), ("ftp.example.com",)))
        _handshake(tls.serverConnectionForTLS(None), client)
        self.assertIsNotNone(client.get_peer_certificate())
        self.assertEqual(client.get_alpn_proto_negotiated(), b"")

    def test_convertedOnce(self) -> None:
        """
        A certificate, its key and its chain are converted to pyOpenSSL at
        their first session only.
        """
        converted: list[object] = []
        fromCryptography = crypto.X509.from_cryptography

        def counting(certificate: Any) -> crypto.X509:
            converted.append(certificate)
            return fromCryptography(certificate)

        self.patch(crypto.X509, "from_cryptography", staticmethod(counting))
        certifiedKey = _withChain(provisionalFor(newSigner(), ("ftp.example.com",)))
        for _ in range(3):
            SessionTLS(certifiedKey)
        self.assertEqual(converted, [certifiedKey.certificate, *certifiedKey.chain])
        other = provisionalFor(newSigner(), ("ftp.example.com",))
        SessionTLS(other)
        self.assertEqual(converted[2:], [other.certificate, *other.chain])

    def test_mismatchedKey(self) -> None:
        """
        A key that does not match the certificate fails the context, at
        each session, whether or not it is of the certificate's type.
        """
        certified = provisionalFor(newSigner(), ("ftp.example.com",))
        for key in (newSigner().key, sharedKey("rsa-2048")):
            certifiedKey = attrs.evolve(certified, key=key)
            for _ in range(2):
                self.assertRaises(SSL.Error, sessionContext, certifiedKey)

    def test_sessionsIsolated(self) -> None:
        """
        The control session of one FTPS session cannot be resumed on
        another, even one presenting the same certificate.
        """
        certifiedKey = provisionalFor(newSigner(), ("ftp.example.com",))
        first, second = SessionTLS(certifiedKey), SessionTLS(certifiedKey)
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            context = SSL.Context(SSL.TLS_CLIENT_METHOD)
            context.set_min_proto_version(version)
            context.set_max_proto_version(version)
            control = SSL.Connection(context, None)
            server = first.serverConnectionForTLS(None)
            _handshake(server, control)
            client = SSL.Connection(context, None)
            client.set_session(control.get_session())
            other = second.serverConnectionForTLS(None)
            _handshake(other, client)
            self.assertFalse(resumedSession(other))
            self.assertIsNotNone(client.get_peer_certificate())
