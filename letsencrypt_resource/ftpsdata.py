"""
FTPS data connections: passive only, over TLS on the session's context,
taken only from the control connection's peer address, and, unless
relaxed, only when their handshake resumes the session's TLS session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IHandshakeListener
from twisted.internet.protocol import connectionDone
from twisted.protocols.ftp import DTP, DTPFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from . import events
from .ftpsthrottle import WarningBudget
from .ftpstls import SessionTLS, resumedSession
from .reactors import Reactor

#: The most a data connection reads at once.
READ_SIZE = 256 * 1024
#: The most bytes a data connection holds for a transfer that has not
#: taken them yet (no transfer command, a resumed upload still copying
#: its start): its reading is paused above it.
HELD_LIMIT = 1024 * 1024
#: The most it may hold at all: one read more than L{HELD_LIMIT} (and a TLS
#: record); a connection that brings more is cut.
HELD_MOST = HELD_LIMIT + READ_SIZE + 64 * 1024


class DataRefused(Exception):
    """
    A data connection was closed because its TLS handshake did not resume
    the control connection's session.
    """


class DataTruncated(Exception):
    """
    A data connection ended without a TLS close_notify (or failed): what
    it carried may be incomplete.
    """


@implementer(IHandshakeListener)
class SecureDTP(DTP):
    """
    A data connection that refuses a TLS handshake that did not resume its
    session (unless relaxed), and fails an upload in progress when it ends
    without a TLS close_notify.  What a transfer carries keeps its session
    from being idle; a transfer that stalls does not, nor does what comes
    before a transfer takes it: at most L{HELD_LIMIT} bytes of that are
    held, with reading paused until a transfer takes them.

    @ivar refused: Whether its handshake was refused.
    """

    requireReuse = True

    def __init__(self, warnings: WarningBudget, progress: Callable[[], object]) -> None:
        """
        @param progress: Called as data goes through: the session is not
            idle.
        """
        self._warnings = warnings
        self._progress = progress
        self.refused = False
        # Why writing an upload failed (a full disk), if it did.
        self._writeFailed: Failure | None = None
        self._handshake: Failure | None | bool = False
        self._waiting: list[Deferred[None]] = []
        # Why the connection ended before an upload took what it brought,
        # if not with a TLS close_notify.
        self._lostEarly: Exception | None = None
        # What came before a transfer took it, and whether reading was
        # paused for it.
        self._held = 0
        self._heldPaused = False

    def whenHandshaken(self) -> Deferred[None]:
        """
        A Deferred that fires once the TLS handshake passed its checks, or
        fails with L{DataRefused} (it did not resume the session) or
        L{DataTruncated} (the connection ended before it).
        """
        if self._handshake is False:
            waiting: Deferred[None] = Deferred()
            self._waiting.append(waiting)
            return waiting
        if isinstance(self._handshake, Failure):
            return fail(self._handshake)
        return succeed(None)

    def _handshakeEnded(self, outcome: Failure | None) -> None:
        if self._handshake is not False:
            return
        self._handshake = outcome
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            if outcome is None:
                deferred.callback(None)
            else:
                deferred.errback(outcome)

    def handshakeCompleted(self) -> None:
        """
        Refuse a handshake that did not resume the session, before any data
        goes through.
        """
        transport: Any = self.transport
        if self.requireReuse and not resumedSession(transport.getHandle()):
            self.refused = True
            self._warnings.emit(events.FTPS_DATA_NOT_RESUMED, client=transport.getPeer().host)
            self._handshakeEnded(Failure(DataRefused("session reuse required")))
            transport.abortConnection()
            return
        self._handshakeEnded(None)

    def _conswrite(self, data: bytes) -> None:
        """
        Write to the upload; when that fails, drop the connection and what
        else it brings, and fail the upload with the error when it ends.
        """
        if self._writeFailed is not None:
            return
        try:
            self._cons.write(data)  # type: ignore[union-attr]
        except Exception:
            self._writeFailed = Failure()
            self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._writeFailed is not None:
            return
        if self._cons is None:
            self._hold(data)
            return
        self._progress()
        super().dataReceived(data)

    def _hold(self, data: bytes) -> None:
        """
        Keep C{data} for a transfer to come, pausing reading above
        L{HELD_LIMIT} bytes, and cut the connection above L{HELD_MOST}.
        """
        transport: Any = self.transport
        self._held += len(data)
        if self._buffer is None or self._held > HELD_MOST:
            # Data on a connection whose transfer ended, or more than
            # pausing allows.
            transport.abortConnection()
            return
        self._buffer.append(data)
        if self._held > HELD_LIMIT and not self._heldPaused:
            self._heldPaused = True
            transport.pauseProducing()

    def write(self, data: bytes) -> None:
        self._progress()
        super().write(data)

    def registerConsumer(self, cons: Any) -> Deferred[None]:
        """
        Give C{cons} what came and what comes; an upload whose connection
        ended without a TLS close_notify before it fails, even when the
        upload is ready only after that end.
        """
        if self._lostEarly is not None and not self.isConnected:
            return fail(self._lostEarly)
        if self._heldPaused and self.isConnected:
            # Before the held data goes: the consumer may pause it again.
            self._heldPaused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
        return super().registerConsumer(cons)

    def stopProducing(self) -> None:
        """
        The upload stopped: cut the connection (what it still brings would
        be lost).
        """
        transport: Any = self.transport
        transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._handshakeEnded(Failure(DataTruncated("closed before the TLS handshake")))
        problem: Exception | None = None
        if self.refused:
            problem = DataRefused("session reuse required")
        elif self._writeFailed is not None:
            problem = self._writeFailed.value  # type: ignore[assignment]
        elif not reason.check(ConnectionDone):
            problem = DataTruncated(reason.getErrorMessage())
        if problem is not None and self._onConnLost is not None:
            # An upload in progress ends as failed, not as a complete file.
            onLost, self._onConnLost = self._onConnLost, None
            self.isConnected = False
            onLost.errback(problem)
            return
        self._lostEarly = problem
        super().connectionLost(reason)


class SecureDTPFactory(DTPFactory):
    """
    Builds the one L{SecureDTP} of a passive data port, quietly: Twisted's
    logs its timeout set and cancelled and its stop, lines that cost the
    reactor thread at each transfer.  (Its start and stop as a factory are
    not logged either: L{letsencrypt_resource.ftpspassive.PassivePort}
    does not start it.)
    """

    def __init__(self, pi: Any, reactor: Reactor, requireReuse: bool, warnings: WarningBudget):
        """
        @param pi: The control connection's protocol; its
            C{closePassivePort} is called once this port is done with.
        """
        super().__init__(pi, reactor=reactor)
        self._requireReuse = requireReuse
        self._warnings = warnings

    def buildProtocol(self, addr: IAddress | None) -> SecureDTP | None:
        if self._state is not self._IN_PROGRESS:
            return None
        self._state = self._FINISHED
        self.cancelTimeout()
        # One connection per port: the port is free for other sessions.
        self.pi.closePassivePort()
        dtp = SecureDTP(self._warnings, self.pi.resetTimeout)
        dtp.factory = self
        dtp.pi = self.pi  # type: ignore[attr-defined]
        dtp.requireReuse = self._requireReuse
        self.pi.dtpInstance = dtp
        return dtp

    def setTimeout(self, seconds: float) -> None:
        self.delayedCall = self._reactor.callLater(seconds, self.timeoutFactory)

    def cancelTimeout(self) -> None:
        if self.delayedCall is not None and self.delayedCall.active():
            self.delayedCall.cancel()

    def stopFactory(self) -> None:
        self.cancelTimeout()

    def timeoutFactory(self) -> None:
        if self._state is self._IN_PROGRESS:
            self.pi.closePassivePort()
        super().timeoutFactory()


class LargeReadsTLSProtocol(TLSMemoryBIOProtocol):
    """
    TLS for data connections, which carry big transfers: the connection
    reads up to L{READ_SIZE} bytes at once (Twisted's 64 KiB cost an upload
    half again as much CPU time to decrypt), and pauses a download once
    that much waits to be sent.
    """

    def makeConnection(self, transport: Any) -> None:
        transport.bufferSize = READ_SIZE
        super().makeConnection(transport)


class PeerOnlyTLSFactory(TLSMemoryBIOFactory):
    """
    TLS over a data factory, for connections from one address only: a
    connection from any other is closed at once (no port stealing).
    """

    protocol = LargeReadsTLSProtocol

    def __init__(
        self, tls: SessionTLS, factory: SecureDTPFactory, peer: str, warnings: WarningBudget
    ):
        super().__init__(tls, False, factory)
        self._peer = peer
        self._warnings = warnings

    def buildProtocol(self, addr: IAddress | None) -> TLSMemoryBIOProtocol:
        host = getattr(addr, "host", None)
        if host != self._peer:
            self._warnings.emit(events.FTPS_DATA_WRONG_PEER, client=str(host), peer=self._peer)
            return None  # type: ignore[return-value]
        return super().buildProtocol(addr)
