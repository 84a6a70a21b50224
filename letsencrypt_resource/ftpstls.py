"""
The TLS of one FTPS session: one context per control connection, with a
session cache of its own, so that a data connection that resumes a TLS
session proves it comes from the client of that control connection.

The cache takes only the control connection's sessions: once its
handshake is complete it is sealed (L{SessionTLS.sealCache}), so that a
data connection's own full handshake, even one refused, never leaves a
session that a later data connection could resume.
"""

from __future__ import annotations

from OpenSSL import SSL, crypto
from OpenSSL._util import lib as _lib
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from zope.interface import implementer

from .alpn import ALPNAnswers
from .certificates import CertifiedKey

#: How long, in seconds, a session's TLS session stays resumable by its
#: data connections: a day, where OpenSSL's default of 2 hours would refuse
#: the transfers of a longer session.
SESSION_LIFETIME = 86_400


def sessionContext(certifiedKey: CertifiedKey) -> SSL.Context:
    """
    A TLS 1.2+ server context presenting C{certifiedKey}, with a session
    cache and a session ID context of its own (no session tickets), whose
    sessions last L{SESSION_LIFETIME}.

    @raise OpenSSL.SSL.Error: when the key does not match the certificate.
    """
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(certifiedKey.key),
        certificate=crypto.X509.from_cryptography(certifiedKey.certificate),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in certifiedKey.chain],
        raiseMinimumTo=TLSVersion.TLSv1_2,
        enableSessions=True,
    )
    context = options.getContext()
    context.set_timeout(SESSION_LIFETIME)
    return context


def resumedSession(connection: SSL.Connection) -> bool:
    """
    Whether the handshake of C{connection} resumed a session.

    pyOpenSSL has no call for it; OpenSSL's C{SSL_session_reused} is
    reached through its binding.
    """
    return bool(_lib.SSL_session_reused(connection._ssl))


@implementer(IOpenSSLServerConnectionCreator)
class SessionTLS:
    """
    The connections of one FTPS session, control and data, on one context.

    @ivar certifiedKey: The certificate the session presents, from its start
        to its end.
    """

    def __init__(self, certifiedKey: CertifiedKey, alpn: ALPNAnswers | None = None):
        """
        @param alpn: What answers the service's TLS-ALPN-01 validation
            handshakes, if anything does: the context then ends any other
            handshake that offers C{acme-tls/1}.
        """
        self.certifiedKey = certifiedKey
        self._context = sessionContext(certifiedKey)
        if alpn is not None:
            alpn.install(self._context)

    def sealCache(self) -> None:
        """
        Store no more sessions in the cache: those there (the control
        connection's) stay resumable, no other joins them.
        """
        # pyOpenSSL refuses to change a context in use; OpenSSL allows it.
        _lib.SSL_CTX_set_session_cache_mode(
            self._context._context, SSL.SESS_CACHE_SERVER | SSL.SESS_CACHE_NO_INTERNAL_STORE
        )

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        # How ALPNAnswers finds the connection's protocol, to close it.
        connection.set_app_data(tlsProtocol)
        return connection
