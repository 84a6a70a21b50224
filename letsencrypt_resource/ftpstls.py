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

import os
from binascii import hexlify
from functools import cache
from weakref import WeakKeyDictionary

import attrs
from OpenSSL import SSL, crypto
from OpenSSL._util import exception_from_error_queue
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


@attrs.frozen
class _Settings:
    """
    What Twisted's C{CertificateOptions} puts in a TLS 1.2+ server context
    with sessions: read once from a context it built, so that each session
    context is built without it (building its context cost a millisecond
    per session).

    @ivar options: The context's options: the protocol floor (no SSL, no
        TLS 1.0 and 1.1), no compression, no session tickets, the server's
        cipher preference.
    @ivar mode: The context's mode (buffers released when idle).
    @ivar ciphers: Twisted's curated ciphers, as an OpenSSL cipher list.
    """

    options: int
    mode: int
    ciphers: bytes


@cache
def _settings() -> _Settings:
    """
    The L{_Settings} of Twisted's C{CertificateOptions}, read once.
    """
    model = CertificateOptions(raiseMinimumTo=TLSVersion.TLSv1_2, enableSessions=True).getContext()
    return _Settings(
        options=_lib.SSL_CTX_get_options(model._context),
        # set_mode adds to the mode and gives the result.
        mode=model.set_mode(0),
        ciphers=":".join(SSL.Connection(model, None).get_cipher_list()).encode("ascii"),
    )


@attrs.frozen
class _Presented:
    """
    A certificate, its chain and its key, converted to pyOpenSSL once for
    all the sessions that present them.
    """

    key: crypto.PKey
    certificate: crypto.X509
    chain: tuple[crypto.X509, ...]

    @classmethod
    def of(cls, certifiedKey: CertifiedKey) -> _Presented:
        """
        C{certifiedKey}, converted.
        """
        return cls(
            crypto.PKey.from_cryptography_key(certifiedKey.key),
            crypto.X509.from_cryptography(certifiedKey.certificate),
            tuple(crypto.X509.from_cryptography(c) for c in certifiedKey.chain),
        )

    def install(self, context: SSL.Context) -> None:
        """
        Present them on C{context}, shared: pyOpenSSL's calls would convert
        the certificates again, or copy them, at each context (and its
        calls that take pyOpenSSL objects are deprecated).

        @raise OpenSSL.SSL.Error: when OpenSSL refuses one, for a key that
            does not match the certificate.
        """
        pointer = context._context
        usable = _lib.SSL_CTX_use_certificate(pointer, self.certificate._x509)
        usable = usable and _lib.SSL_CTX_use_PrivateKey(pointer, self.key._pkey)
        for certificate in self.chain if usable else ():
            # The context takes over this reference.
            _lib.X509_up_ref(certificate._x509)
            if not _lib.SSL_CTX_add_extra_chain_cert(pointer, certificate._x509):
                _lib.X509_free(certificate._x509)
                usable = False
                break
        if not usable:
            raise exception_from_error_queue(SSL.Error)


#: The certificates presented so far, converted, whose key was found to
#: match.
_presented: WeakKeyDictionary[CertifiedKey, _Presented] = WeakKeyDictionary()


def sessionContext(certifiedKey: CertifiedKey) -> SSL.Context:
    """
    A TLS 1.2+ server context presenting C{certifiedKey}, set as Twisted's
    C{CertificateOptions} would (see L{_Settings}), with a session cache
    and a session ID context of its own (no session tickets), whose
    sessions last L{SESSION_LIFETIME}.  The certificate is converted, and
    its key checked, at its first session only.

    @raise OpenSSL.SSL.Error: when the key does not match the certificate.
    """
    settings = _settings()
    presented = _presented.get(certifiedKey)
    checked = presented is not None
    if presented is None:
        presented = _Presented.of(certifiedKey)
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_options(settings.options)
    context.set_mode(settings.mode)
    presented.install(context)
    if not checked:
        context.check_privatekey()
        _presented[certifiedKey] = presented
    context.set_session_id(hexlify(os.urandom(7)))
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_cipher_list(settings.ciphers)
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
