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
from twisted.internet.interfaces import IProtocolFactory, IPushProducer
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from .alpn import ALPNAnswers
from .clienthello import ClientHello, HelloReader, NotClientHello


class HelloPeek(ProtocolWrapper):
    """
    Holds the first bytes back from the TLS protocol it wraps until they
    hold a whole ClientHello, lets the service's L{ALPNAnswers} read the
    challenge it asks for, then hands every byte on.  Bytes that are not a
    ClientHello are handed on at once, for the TLS layer to refuse.
    """

    factory: HelloPeekFactory

    def __init__(self, factory: Any, wrappedProtocol: Any):
        super().__init__(factory, wrappedProtocol)
        # A bytearray: a ClientHello sent a byte at a time is not copied
        # whole at each byte.
        self._held: bytearray | None = bytearray()
        self._reader = HelloReader()
        self._waiting: Deferred[None] | None = None
        self._lost = False

    def dataReceived(self, data: bytes) -> None:
        if self._held is None:
            super().dataReceived(data)
            return
        self._held += data
        if self._waiting is not None:
            return
        try:
            hello = self._reader.feed(data)
        except NotClientHello:
            self._release()
            return
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
        if self._waiting is not None:
            self._waiting.cancel()
        super().connectionLost(reason)


class HelloPeekFactory(WrappingFactory):
    """
    Wraps a TLS server factory's protocols in L{HelloPeek}.
    """

    protocol = HelloPeek

    def __init__(self, wrappedFactory: IProtocolFactory, answers: Callable[[], ALPNAnswers | None]):
        """
        @param answers: Gives the service's L{ALPNAnswers}, if it has any
            yet, when a ClientHello has come.
        """
        super().__init__(wrappedFactory)
        self.answers = answers
