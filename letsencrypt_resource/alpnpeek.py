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
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from .alpn import ALPNAnswers
from .clienthello import HANDSHAKE_RECORD, ClientHello, HelloReader, NotClientHello
from .tls import waitsForContext

#: Seconds a connection has to send its first bytes; then it is closed.
FIRST_BYTES_DEADLINE = 30.0


class HelloPeek(ProtocolWrapper):
    """
    Holds the first bytes back from the TLS protocol it wraps until they
    hold a whole ClientHello, lets the service's L{ALPNAnswers} read the
    challenge it asks for, then hands every byte on.  Bytes that are not a
    ClientHello are handed on at once, for the TLS layer to refuse.

    The TLS protocol is connected only when the first bytes come and begin
    a TLS handshake record: only then is the connection's TLS connection
    made, and its context built (a provisional certificate signed).  A
    connection whose first bytes begin anything else is closed at once,
    and one that sends nothing for L{FIRST_BYTES_DEADLINE} seconds is
    closed then, neither having cost any TLS work.
    """

    factory: HelloPeekFactory

    def __init__(self, factory: Any, wrappedProtocol: Any):
        super().__init__(factory, wrappedProtocol)
        # A bytearray: a ClientHello sent a byte at a time is not copied
        # whole at each byte.
        self._held: bytearray | None = bytearray()
        self._reader = HelloReader()
        self._hello: ClientHello | None = None
        self._refused = False
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
        waits for the first bytes.
        """
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._silence = self.factory.clock.callLater(FIRST_BYTES_DEADLINE, self._silent)

    def dataReceived(self, data: bytes) -> None:
        if self._held is None:
            super().dataReceived(data)
            return
        if not self._connected and not self._connect(data):
            return
        self._held += data
        if self._hello is None and not self._refused:
            try:
                self._hello = self._reader.feed(data)
            except NotClientHello:
                self._refused = True
        self._proceed()

    def closeSilent(self) -> None:
        """
        Close the connection if it has sent nothing yet.
        """
        if self._silence is not None:
            self._silent()

    def _silent(self) -> None:
        """
        No byte came in time: close the connection.
        """
        self._silence = None
        self.loseConnection()

    def _connect(self, first: bytes) -> bool:
        """
        Connect the TLS protocol for the C{first} bytes of the connection
        when they begin a handshake record; close the connection when they
        do not.

        @return: Whether the TLS protocol is connected.
        """
        if self.disconnecting:
            # Closed silent: what still comes is not read.
            return False
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        if not first.startswith(HANDSHAKE_RECORD):
            self._held = None
            self.loseConnection()
            return False
        tls = cast(TLSMemoryBIOProtocol, self.wrappedProtocol)
        try:
            tls.makeConnection(cast(ITransport, self))
        finally:
            # A TLS connection that could not be made (no certificate to
            # present) left its protocol unconnected: its loss is not told.
            self._connected = tls.transport is not None
        if waitsForContext(tls.getHandle()):
            self._contextDue = True
            self._producer().pauseProducing()
        return True

    def resumeProducing(self) -> None:
        """
        Read again; when the TLS connection waited for its context, go on
        with the bytes held.
        """
        self._producer().resumeProducing()
        if self._contextDue:
            self._contextDue = False
            self._proceed()

    def _proceed(self) -> None:
        """
        Go on with the bytes held, unless something is awaited: hand them
        on when they are no ClientHello, or let the service's answers read
        the whole ClientHello first.
        """
        if self._waiting is not None or self._contextDue or self._held is None:
            return
        if self._refused:
            self._release()
            return
        hello = self._hello
        if hello is None:
            return
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
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
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

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        answers: Callable[[], ALPNAnswers | None],
        clock: IReactorTime,
    ):
        """
        @param answers: Gives the service's L{ALPNAnswers}, if it has any
            yet, when a ClientHello has come.
        @param clock: Where a connection waits for its first bytes.
        """
        super().__init__(wrappedFactory)
        self.answers = answers
        self.clock = clock

    def doStop(self) -> None:
        """
        Its listener stopped: close the connections that sent nothing yet,
        which no site knows of, rather than leave them to their deadline.
        """
        for peek in list(self.protocols):
            peek.closeSilent()
        super().doStop()
