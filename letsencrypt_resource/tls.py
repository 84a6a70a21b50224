"""
TLS server contexts that change certificate in place.

L{ReloadableServerTLS} is an C{IOpenSSLServerConnectionCreator}: give it to
any Twisted TLS listener (C{SSL4ServerEndpoint}, C{TLSMemoryBIOFactory}).
Each new connection takes the context current at its handshake, so a new
certificate reaches new handshakes at once while open connections go on
with the one they started with.

L{TLSCertificateConsumer} is the L{ICertificateConsumer} a host server
registers for each of its TLS services.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from zope.interface import implementer

from .alpn import ALPNAnswers
from .certificates import CertifiedKey
from .firsthandshakes import FirstHandshakes
from .interfaces import ICertificateConsumer, IReportsUnusableCertificates


def serverContext(certifiedKey: CertifiedKey) -> SSL.Context:
    """
    A TLS 1.2+ server context presenting C{certifiedKey} and its chain,
    with Twisted's curated ciphers (C{CertificateOptions}): no compression,
    the server's cipher preference, no session tickets or cache.

    @raise OpenSSL.SSL.Error: when the key cannot be read or does not match
        the certificate.
    """
    if not certifiedKey.keyMatches:
        raise SSL.Error("the private key is unusable or does not match the certificate")
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(certifiedKey.key),
        certificate=crypto.X509.from_cryptography(certifiedKey.certificate),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in certifiedKey.chain],
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    return options.getContext()


def _names(certifiedKey: CertifiedKey) -> str:
    """
    The names of C{certifiedKey} for a log: those it was stored for, else
    its certificate's, or that it cannot be read (its certificate may be
    what failed).
    """
    if certifiedKey.vouchedNames is not None:
        return ", ".join(sorted(certifiedKey.vouchedNames))
    try:
        return ", ".join(certifiedKey.domains)
    except ValueError:
        return "(a certificate that cannot be read)"


_WAITING: list[SSL.Context] = []


def _waitingContext() -> SSL.Context:
    """
    The context of the connections waiting for theirs (see
    L{ReloadableServerTLS.serverConnectionForTLS}): none of their bytes
    reaches it, and it has no certificate, so a handshake on it fails.
    """
    if not _WAITING:
        _WAITING.append(SSL.Context(SSL.TLS_SERVER_METHOD))
    return _WAITING[0]


def waitsForContext(connection: SSL.Connection) -> bool:
    """
    Whether C{connection} waits for its context, on the one without a
    certificate (see L{ReloadableServerTLS.serverConnectionForTLS}): its
    transport is resumed once it has its own.
    """
    return connection.get_context() is _waitingContext()


class NoCertificateYet(Exception):
    """
    A TLS connection arrived before the service had any certificate.
    """


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerTLS:
    """
    Server TLS connections with a certificate that can be replaced at any
    time.

    A certificate's context is built at the first handshake after it is
    set, not when it is set: a host with thousands of services builds the
    contexts of those that are connected to, when they are.

    @ivar certifiedKey: The certificate new handshakes present, or C{None}.
    @ivar alpn: What answers the TLS-ALPN-01 validation handshakes, if
        anything does (see L{answerALPN}).
    """

    _log = Logger()

    def __init__(
        self,
        unusable: Callable[[CertifiedKey], object] | None = None,
        firstHandshakes: FirstHandshakes | None = None,
    ) -> None:
        """
        @param unusable: Called with a certificate whose context cannot be
            built when there is no earlier context to serve instead.
        @param firstHandshakes: Bounds the contexts built in one turn of
            the reactor, shared with the other services; without it, every
            context is built at its connection.
        """
        self._firstHandshakes = firstHandshakes
        self.certifiedKey: CertifiedKey | None = None
        self._unusable = unusable
        # The context built last, and the certificate it presents.
        self._context: SSL.Context | None = None
        self._built: CertifiedKey | None = None
        # The last certificate whose context could not be built.
        self._refused: CertifiedKey | None = None
        self.alpn: ALPNAnswers | None = None
        # The connections that wait for the build of the context, if any.
        self._waitingBuild: list[tuple[SSL.Connection, Any]] | None = None

    def answerALPN(self, answers: ALPNAnswers) -> None:
        """
        Answer the TLS-ALPN-01 validation handshakes with C{answers} from
        now on, on every context built.  The listener must read each
        ClientHello first (L{letsencrypt_resource.alpnpeek.HelloPeekFactory}):
        that is where a validation handshake is moved to its own context;
        the service's contexts end every other handshake offering
        C{acme-tls/1}.
        """
        self.alpn = answers
        if self._context is not None:
            answers.install(self._context)

    def setCertificate(self, certifiedKey: CertifiedKey) -> None:
        """
        Present C{certifiedKey} in every handshake from now on.

        Its key is checked against the certificate first, so a bad key
        leaves the current certificate in service; unless it was checked
        when it was stored (L{CertifiedKey.keyChecked}): it is then parsed
        and checked when its context is built, at the first handshake,
        which keeps the previous context if it fails.

        @raise OpenSSL.SSL.Error: when the key does not match the
            certificate.
        """
        if not certifiedKey.keyChecked and not certifiedKey.keyMatches:
            raise SSL.Error("the private key does not match the certificate")
        self.certifiedKey = certifiedKey

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        A server connection on the current context, built now when the
        certificate changed since the last handshake.

        When this turn of the reactor has built as many contexts as it may
        (see L{FirstHandshakes}), the connection starts on a context with
        no certificate, paused from the next turn on, before any byte is
        read; a later turn builds the context, puts the connection on it
        and only then lets its bytes be read.  A caller without a protocol
        (C{tlsProtocol} is C{None}: the FTPS session's TLS) needs the
        context at once: it is built now.
        """
        if tlsProtocol is not None and self._mustWait():
            connection = SSL.Connection(_waitingContext(), None)
            connection.set_app_data(tlsProtocol)
            self._wait(connection, tlsProtocol)
            return connection
        connection = SSL.Connection(self._currentContext(), None)
        # How ALPNAnswers finds the connection's protocol, to close it.
        connection.set_app_data(tlsProtocol)
        return connection

    def _mustWait(self) -> bool:
        """
        Whether a new connection needs a context built and this turn may
        build no more, or a build of this service's context already waits.
        """
        certifiedKey = self.certifiedKey
        if (
            self._firstHandshakes is None
            or certifiedKey is None
            or certifiedKey is self._built
            or certifiedKey is self._refused
        ):
            return False
        return self._waitingBuild is not None or not self._firstHandshakes.mayGo()

    def _wait(self, connection: SSL.Connection, tlsProtocol: Any) -> None:
        """
        Let C{connection} wait, paused from the next turn on, for the
        service's context to be built in a later turn.  One build waits
        for all of the service's connections: a turn's budget counts it
        once.
        """
        assert self._firstHandshakes is not None
        pause = lambda: tlsProtocol.transport.pauseProducing()  # noqa: E731
        if self._waitingBuild is None:
            self._waitingBuild = []
            self._firstHandshakes.later(self._resume, pause)
        else:
            self._firstHandshakes.pauseNextTurn(pause)
        self._waitingBuild.append((connection, tlsProtocol))

    def _resume(self) -> None:
        """
        In a later turn, whose budget counted this build: put the
        connections that waited, paused, on the current context and let
        their bytes be read.  Connections that can have no context stay on
        the one without a certificate, whose handshake fails.
        """
        waiting, self._waitingBuild = self._waitingBuild or [], None
        try:
            context: SSL.Context | None = self._currentContext()
        except NoCertificateYet:
            context = None
        for connection, tlsProtocol in waiting:
            try:
                if context is not None:
                    connection.set_context(context)
                tlsProtocol.transport.resumeProducing()
            except Exception:
                self._log.failure("A connection that waited for its context failed")

    def _currentContext(self) -> SSL.Context:
        """
        The context of L{certifiedKey}, built at its first use.  A
        certificate whose context cannot be built is logged, once, and
        the previous context stays in service (its certificate back in
        L{certifiedKey}); without one, the C{unusable} callback is told.

        @raise NoCertificateYet: when there is no context to serve.
        """
        certifiedKey = self.certifiedKey
        if certifiedKey is None:
            raise NoCertificateYet("no certificate has been set yet")
        if certifiedKey is not self._built and certifiedKey is not self._refused:
            try:
                self._context = serverContext(certifiedKey)
                self._built = certifiedKey
                if self.alpn is not None:
                    self.alpn.install(self._context)
            except Exception:
                self._log.failure(
                    "Cannot present the certificate for {domains}",
                    domains=_names(certifiedKey),
                )
                self._refused = certifiedKey
                if self._built is None and self._unusable is not None:
                    self._unusable(certifiedKey)
        if certifiedKey is self._refused and self._built is not None:
            self.certifiedKey = self._built
        if self._context is None:
            raise NoCertificateYet("no certificate could be presented yet")
        return self._context


@implementer(ICertificateConsumer, IReportsUnusableCertificates)
class TLSCertificateConsumer:
    """
    The certificate side of one TLS service.

    @ivar name: The service's label.
    @ivar domains: The names its certificate must carry.
    @ivar tls: The connection creator its listener uses.
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        domains: tuple[str, ...],
        firstHandshakes: FirstHandshakes | None = None,
    ):
        """
        @param firstHandshakes: Bounds the contexts built in one turn of
            the reactor (see L{ReloadableServerTLS}).
        """
        self.name = name
        self.domains = domains
        self.tls = ReloadableServerTLS(self._unusable, firstHandshakes)
        self._waiting: list[Callable[[CertifiedKey], object]] = []
        self._reportTo: Callable[[tuple[str, ...], CertifiedKey], object] | None = None

    def reportUnusableTo(self, callback: Callable[[tuple[str, ...], CertifiedKey], object]) -> None:
        self._reportTo = callback

    def _unusable(self, certifiedKey: CertifiedKey) -> None:
        if self._reportTo is not None:
            self._reportTo(self.domains, certifiedKey)

    def useCertificate(self, certifiedKey: CertifiedKey) -> None:
        self.tls.setCertificate(certifiedKey)
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            self._tell(callback, certifiedKey)

    def _tell(self, callback: Callable[[CertifiedKey], object], certifiedKey: CertifiedKey) -> None:
        """
        Call C{callback} with the first certificate; log what it raises,
        so that the next callback (or service) is called all the same.
        """
        try:
            callback(certifiedKey)
        except Exception:
            self._log.failure(
                "Unexpected error after the first certificate of {name}", name=self.name
            )

    def whenCertificate(self) -> Deferred[CertifiedKey]:
        """
        A Deferred that fires with the first certificate, at once when there
        is one already (see L{onFirstCertificate}).
        """
        giveUp = _nothing
        deferred: Deferred[CertifiedKey] = Deferred(lambda _: giveUp())
        giveUp = self.onFirstCertificate(deferred.callback)
        return deferred

    def onFirstCertificate(self, callback: Callable[[CertifiedKey], object]) -> Callable[[], None]:
        """
        Call C{callback} with the first certificate: at once when there is
        one already, else once it comes.  A plain call, not a Deferred:
        with thousands of services waiting at start, their Deferreds were
        a sixth of putting them in service.  What it raises is logged, in
        both cases.

        @return: What gives up the wait: C{callback} is not called then
            (nothing, once it was called).
        """
        if self.tls.certifiedKey is not None:
            self._tell(callback, self.tls.certifiedKey)
            return _nothing
        self._waiting.append(callback)
        return partial(_forget, self._waiting, callback)


def _nothing() -> None:
    """
    Nothing to give up.
    """


def _forget(
    waiting: list[Callable[[CertifiedKey], object]], callback: Callable[..., object]
) -> None:
    """
    Take C{callback} out of C{waiting}, if it is there still.
    """
    if callback in waiting:
        waiting.remove(callback)
