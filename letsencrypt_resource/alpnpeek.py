"""
Read a connection's ClientHello before its TLS layer does, so that a
TLS-ALPN-01 validation handshake that reached a node other than the one
that ordered can wait while its challenge is read from the shared storage:
OpenSSL's callbacks cannot wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from . import events
from .alpn import ALPNAnswers
from .clienthello import HANDSHAKE_RECORD, ClientHello, HelloReader, NotClientHello
from .ratedcount import RatedCount
from .tls import NoCertificateYet, waitsForContext

#: Seconds a connection has to send a whole ClientHello; then it is closed.
FIRST_BYTES_DEADLINE = 30.0
#: Seconds between two events 20267 of one listener at least.
NO_CERTIFICATE_PERIOD = 60.0


class HelloPeek(ProtocolWrapper):
    """
    Holds the first bytes back from the TLS protocol it wraps until they
    hold a whole ClientHello, lets the service's L{ALPNAnswers} read the
    challenge it asks for, then hands every byte on.

    The TLS protocol is connected only once a whole ClientHello is in (at
    most L{MAX_HELLO <letsencrypt_resource.clienthello.MAX_HELLO>} bytes of
    records): only then is the connection's TLS connection made, and its
    context built (a provisional certificate signed).  A connection whose
    first bytes are not the start of a ClientHello is closed at once; one
    that has not sent a whole ClientHello within L{FIRST_BYTES_DEADLINE}
    seconds is closed then, neither having cost any TLS work.  When there
    is no certificate to present, the connection is closed, and its
    factory told (L{HelloPeekFactory.noCertificate}).
    """

    factory: HelloPeekFactory

    def __init__(self, factory: Any, wrappedProtocol: Any):
        super().__init__(factory, wrappedProtocol)
        # A bytearray: a ClientHello sent a byte at a time is not copied
        # whole at each byte.
        self._held: bytearray | None = bytearray()
        self._reader = HelloReader()
        self._hello: ClientHello | None = None
        self._waiting: Deferred[None] | None = None
        self._lost = False
        self._connected = False
        # The TLS connection waits for its context (see
        # L{letsencrypt_resource.tls.ReloadableServerTLS}): the bytes wait
        # until the TLS layer resumes the transport.
        self._contextDue = False
        self._silence: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        """
        Take the transport, without connecting the TLS protocol yet: that
        waits for the whole ClientHello.
        """
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._silence = self.factory.clock.callLater(FIRST_BYTES_DEADLINE, self._silent)

    def dataReceived(self, data: bytes) -> None:
        if self._held is None:
            if self._connected:
                super().dataReceived(data)
            return
        if self.disconnecting or self._lost:
            # Closed: what still comes is not read.
            return
        self._held += data
        if self._hello is None:
            try:
                if not self._held.startswith(HANDSHAKE_RECORD):
                    raise NotClientHello("the first byte begins no handshake record")
                self._hello = self._reader.feed(data)
            except NotClientHello:
                self._close()
                return
            if self._hello is None or not self._connect():
                return
        self._proceed()

    def closeSilent(self) -> None:
        """
        Close the connection if it has not sent a whole ClientHello yet.
        """
        if self._silence is not None:
            self._silent()

    def _silent(self) -> None:
        """
        No whole ClientHello came in time: close the connection.
        """
        self._silence = None
        self._close()

    def _close(self) -> None:
        """
        Close the connection before its TLS protocol is connected: what
        still comes is not read.
        """
        self._held = None
        self._cancelSilence()
        self.loseConnection()

    def _cancelSilence(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None

    def _connect(self) -> bool:
        """
        Connect the TLS protocol, now that a whole ClientHello is in; close
        the connection when there is no certificate to present.

        @return: Whether the TLS protocol is connected.
        """
        self._cancelSilence()
        tls = cast(TLSMemoryBIOProtocol, self.wrappedProtocol)
        try:
            self.factory.connectTLS(tls, cast(ITransport, self))
        except NoCertificateYet:
            self._close()
            self.factory.noCertificate(str(getattr(self.getPeer(), "host", "")))
            return False
        finally:
            # A TLS connection that could not be made left its protocol
            # unconnected: its loss is not told.
            self._connected = tls.transport is not None
        if waitsForContext(tls.getHandle()):
            self._contextDue = True
            self._producer().pauseProducing()
        return True

    def resumeProducing(self) -> None:
        """
        Read again; when the TLS connection waited for its context, go on
        with the bytes held.  A connection lost meanwhile is left alone.
        """
        if self._lost:
            return
        self._producer().resumeProducing()
        if self._contextDue:
            self._contextDue = False
            self._proceed()

    def _proceed(self) -> None:
        """
        Go on with the ClientHello held, unless something is awaited: let
        the service's answers read it first, then hand the bytes on.
        """
        if self._waiting is not None or self._contextDue or self._held is None or self._lost:
            return
        hello = self._hello
        assert hello is not None
        answers = self.factory.answers()
        if answers is None:
            self._release()
            return
        waiting = answers.fetch(hello)
        if waiting is None:
            self._choose(answers, hello)
            return
        self._waiting = waiting
        self._producer().pauseProducing()
        waiting.addBoth(self._fetched, answers, hello)

    def _fetched(self, result: None | Failure, answers: ALPNAnswers, hello: ClientHello) -> None:
        self._waiting = None
        if not self._lost:
            self._producer().resumeProducing()
            self._choose(answers, hello)

    def _choose(self, answers: ALPNAnswers, hello: ClientHello) -> None:
        """
        Let C{answers} choose the context of the handshake of C{hello}
        before it begins, then hand the bytes on.
        """
        tls = cast(TLSMemoryBIOProtocol, self.wrappedProtocol)
        answers.choose(hello, tls.getHandle())
        self._release()

    def _producer(self) -> IPushProducer:
        """
        The connection's transport, whose reading can be paused.
        """
        return cast(IPushProducer, self.transport)

    def _release(self) -> None:
        """
        Hand the bytes held on, and every later byte as it comes.
        """
        held, self._held = self._held, None
        if held:
            super().dataReceived(bytes(held))

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._lost = True
        self._cancelSilence()
        if self._waiting is not None:
            self._waiting.cancel()
        if self._connected:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)


class HelloPeekFactory(WrappingFactory):
    """
    Wraps a TLS server factory's protocols in L{HelloPeek}.
    """

    protocol = HelloPeek

    _log = Logger()

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        answers: Callable[[], ALPNAnswers | None],
        clock: IReactorTime,
        service: str = "",
    ):
        """
        @param answers: Gives the service's L{ALPNAnswers}, if it has any
            yet, when a ClientHello has come.
        @param clock: Where a connection waits for its first bytes.
        @param service: The service's name, for the events.
        """
        super().__init__(wrappedFactory)
        self.answers = answers
        self.clock = clock
        self.service = service
        # The connections closed without a certificate: event 20267.
        self._noCertificate = RatedCount(clock, NO_CERTIFICATE_PERIOD)

    def connectTLS(self, tls: TLSMemoryBIOProtocol, transport: ITransport) -> None:
        """
        Connect a connection's C{tls} protocol to its C{transport}, once its
        ClientHello is in: this makes its TLS connection.

        @raise letsencrypt_resource.tls.NoCertificateYet: when there is no
            certificate to present.
        """
        tls.makeConnection(transport)

    def noCertificate(self, client: str) -> None:
        """
        A connection from C{client} was closed: there is no certificate to
        present.  Event 20267, at most once in L{NO_CERTIFICATE_PERIOD}
        seconds, with the count of connections closed since the last one:
        one closed sooner is counted, and logged once the period ends (or
        the listener stops), so a burst's count is never lost.
        """
        self._noCertificate.add(
            lambda count: events.HTTPS_NO_CERTIFICATE.emit(
                self._log, service=self.service, client=client, count=count
            )
        )

    def doStop(self) -> None:
        """
        Its listener stopped: close the connections whose ClientHello is
        not in yet, which no site knows of, rather than leave them to their
        deadline; log the connections closed without a certificate and not
        logged yet (event 20267).
        """
        for peek in list(self.protocols):
            peek.closeSilent()
        self._noCertificate.flush()
        super().doStop()
