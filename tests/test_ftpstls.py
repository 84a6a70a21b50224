"""
Tests for L{letsencrypt_resource.ftpstls}: which TLS sessions the data
connections of an FTPS session may resume, with in-memory handshakes.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.ftpstls import SessionTLS, resumedSession
from tests.helpers import newSigner, provisionalFor


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
