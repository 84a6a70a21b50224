"""
The FTPS protocol: Twisted's FTP server with AUTH TLS (RFC 4217), PBSZ and
PROT, passive data connections over TLS, and the limits of a server open
to the Internet.

By default nothing but FEAT, QUIT, NOOP and the TLS commands is answered
before AUTH TLS (implicit FTPS is secured from the first byte), and no
data connection is opened before PROT P.  Active mode (PORT, EPRT) is
refused.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener
from twisted.internet.task import deferLater
from twisted.protocols.ftp import (
    FTP,
    GOODBYE_MSG,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from . import events
from .alpn import ACME_TLS_1
from .ftpsfiles import PoolStopped
from .ftpspassive import PassiveCommands, PassivePort
from .ftpstls import SessionTLS
from .ftpstransfer import TransferCommands, abandonUpload

#: The longest command line accepted, in bytes.
MAX_COMMAND_LENGTH = 1024
#: The most bytes of commands held while a command runs.
HELD_COMMANDS = 4 * MAX_COMMAND_LENGTH
#: How long, in seconds, a closing session may take to exchange its TLS
#: close_notify before its connection is cut.
CLOSE_GRACE = 5.0
#: How long, in seconds, a session may take to log in, whatever it sends.
LOGIN_DEADLINE = 30.0
#: The failed logins after which a session is closed.
MAX_LOGIN_FAILURES = 3
#: What a client may send before AUTH TLS.
_BEFORE_TLS = frozenset({"AUTH", "FEAT", "QUIT", "NOOP", "SYST"})
#: The commands that open a data connection or use one.
_DATA_COMMANDS = frozenset({"PASV", "EPSV", "LIST", "NLST", "RETR", "STOR", "APPE"})
#: The commands a REST offset holds across, as for vsftpd and ProFTPD:
#: clients send REST before or after opening the data connection (and
#: TYPE I, the only type REST takes).
_KEEP_RESTART = frozenset({("PASV",), ("EPSV",), ("TYPE", "I")})
#: A restart offset: a byte count, below 2**63.
_OFFSET = re.compile(r"[0-9]{1,18}")
_AUTH_MECHANISMS = frozenset({"TLS", "SSL", "TLS-C", "TLS-P"})


class WatchedCommands:
    """
    Lets a long command (a resumed upload's copy) read its control
    connection while it runs, without taking the next commands: a client
    that leaves is seen at once, and its session ends.  At most
    L{HELD_COMMANDS} bytes are held meanwhile; reading pauses above it
    until the command ended.
    """

    if TYPE_CHECKING:
        # Given by twisted.protocols.basic.LineReceiver and ftp.FTP.
        paused: bool
        disconnected: bool
        _buffer: bytes
        transport: Any

    def dataReceived(self, data: bytes) -> None:
        if self.paused and len(self._buffer) + len(data) > HELD_COMMANDS:
            self.transport.pauseProducing()
        super().dataReceived(data)  # type: ignore[misc]

    def watchWhile(self, running: Deferred[Any]) -> Deferred[Any]:
        """
        Read the control connection until C{running}, a part of the command
        that runs, fires; then read no more until the command ended.
        """
        self.transport.resumeProducing()
        return running.addBoth(self._unwatch)

    def _unwatch(self, result: Any) -> Any:
        if self.paused and not self.disconnected:
            self.transport.pauseProducing()
        return result


@implementer(IHandshakeListener)
class FTPSProtocol(PassiveCommands, TransferCommands, WatchedCommands, FTP):
    """
    One FTPS control connection.  Its L{sessionTLS} holds the certificate
    that was newest when the session started, for its control connection
    and all its data connections.

    A session that ends (QUIT, a command line too long) keeps reading to
    see the client's TLS close_notify, and is cut after L{CLOSE_GRACE}
    seconds if it does not come; an idle session, or one not logged in
    after L{LOGIN_DEADLINE} seconds, is cut at once.
    """

    MAX_LENGTH = MAX_COMMAND_LENGTH
    FEATURES = [
        "AUTH TLS",
        "AUTH SSL",
        "PBSZ",
        "PROT",
        "EPSV",
        "PASV",
        "SIZE",
        "MDTM",
        "REST STREAM",
    ]
    PUBLIC_COMMANDS = ["FEAT", "QUIT", "AUTH", "PBSZ", "PROT", "NOOP", "SYST"]
    factory: Any

    def __init__(self) -> None:
        self._tls: SessionTLS | None = None
        self.secured = False
        self._bufferSize = False
        self.protected = False
        self._deadlines: list[IDelayedCall] = []
        self._loginFailures = 0
        self._restartNext = 0
        self.restartAt = 0
        self._greeted = False

    def sessionTLS(self) -> SessionTLS:
        """
        The TLS of this session, built at its first use on the newest
        certificate.
        """
        if self._tls is None:
            self._tls = self.factory.sessionTLS()
        return self._tls

    def useTLS(self, tls: SessionTLS) -> None:
        """
        Take C{tls} as the TLS of this session (implicit FTPS builds it
        before the connection is taken).
        """
        self._tls = tls

    def connectionMade(self) -> None:
        self.secured = self.factory.implicit
        self.listenFactory = partial(PassivePort.listen, self.factory.reactor)  # type: ignore[method-assign]
        self._cutAfter(LOGIN_DEADLINE, lambda: self.shell is None)
        if not self.secured:
            self._greet()

    def _greet(self) -> None:
        """
        Start the session: greet the client, and count its idle time.
        """
        self._greeted = True
        super().connectionMade()

    def handshakeCompleted(self) -> None:
        """
        The control connection's TLS session is the only one its data
        connections may resume.  Implicit FTPS starts the session only now,
        and never for a TLS-ALPN-01 validation handshake (the connection is
        closed after it).
        """
        self.sessionTLS().sealCache()
        if self._greeted or self.transport.negotiatedProtocol == ACME_TLS_1:
            return
        self._greet()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        # A command that ends later must not resume reading a connection
        # gone (Twisted's server checks this flag).
        self.disconnected = True
        # Its address's slot stays taken until its upload stopped.
        upload, self.uploading = self.uploading, None
        abandonUpload(upload, lambda: self.factory.holdSession(self.transport.getPeer().host))
        deadlines, self._deadlines = self._deadlines, []
        for deadline in deadlines:
            if deadline.active():
                deadline.cancel()
        super().connectionLost(reason)

    def _cutAfter(self, seconds: float, condition: Callable[[], bool]) -> None:
        """
        Cut the connection in C{seconds} if C{condition()} holds then.
        """
        transport = self.transport

        def cut() -> None:
            if condition():
                transport.abortConnection()

        self._deadlines.append(self.factory.reactor.callLater(seconds, cut))

    def _end(self) -> None:
        """
        End the session: close, reading on to see the client's close_notify
        (Twisted's FTP stops reading while a command runs), and cut the
        connection if it has not ended in L{CLOSE_GRACE} seconds.
        """
        if self.disconnected:
            return
        self.disconnected = True
        self.transport.loseConnection()
        self.transport.resumeProducing()
        self._cutAfter(CLOSE_GRACE, lambda: True)

    def timeoutConnection(self) -> None:
        self.transport.abortConnection()

    def sendLine(self, line: bytes | str) -> None:
        # The reply of a command that ended after its session: no one to
        # tell.
        if self.transport is not None:
            super().sendLine(line)

    def lineReceived(self, line: bytes) -> Any:
        # Nothing of a validation handshake's connection is a command.
        if self.disconnected or not self._greeted:
            return None
        return super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine("500 Command line too long.")
        self._end()

    def ftp_QUIT(self) -> None:
        self.reply(GOODBYE_MSG)
        self._end()

    def processCommand(self, cmd: str, *params: str) -> Any:
        command = cmd.upper()
        # A REST offset holds for the next command but those that open the
        # data connection or set the type, and only RETR, STOR and APPE
        # use it.
        self.restartAt = self._restartNext
        if (command, *(param.upper() for param in params)) not in _KEEP_RESTART:
            self._restartNext = 0
        if not self.secured and command not in _BEFORE_TLS:
            return self._answer("530 Use AUTH TLS first: this server speaks FTPS only.")
        if command in _DATA_COMMANDS and self.state == self.AUTHED and not self.protected:
            return self._answer("521 Data connections must be encrypted: send PBSZ 0 and PROT P.")
        method = getattr(self, "ftp_" + command, None)
        if method is not None and not _accepts(method, params):
            return self._answer(f"501 Wrong arguments for {command}.")
        return super().processCommand(cmd, *params)

    def _answer(self, line: str) -> None:
        self.sendLine(line)

    def ftp_AUTH(self, mechanism: str) -> None:
        if self.secured:
            return self._answer("503 TLS is already in use.")
        if mechanism.upper() not in _AUTH_MECHANISMS:
            return self._answer("504 AUTH TLS or AUTH SSL only.")
        try:
            tls = self.sessionTLS()
        except Exception:
            return self._answer("431 No certificate available.")
        self.sendLine(f"234 AUTH {mechanism.upper()} successful.")
        # Nothing sent in the clear after AUTH may count as sent over TLS.
        self.clearLineBuffer()
        self.transport.startTLS(tls)
        self.secured = True

    def ftp_PBSZ(self, size: str) -> None:
        self._bufferSize = True
        return self._answer("200 PBSZ=0")

    def ftp_PROT(self, level: str) -> None:
        if not self._bufferSize:
            return self._answer("503 PBSZ first.")
        if level.upper() not in ("P", "C"):
            return self._answer("536 PROT P or PROT C only.")
        self.protected = level.upper() == "P"
        return self._answer(f"200 Protection level set to {level.upper()}.")

    def ftp_REST(self, offset: str) -> None:
        """
        Start the next RETR, STOR or APPE at byte C{offset} (stream mode,
        binary type only, RFC 3659).
        """
        if not _OFFSET.fullmatch(offset):
            return self._answer("501 REST takes a byte offset.")
        if not self.binary:
            return self._answer("504 REST in binary mode only: send TYPE I.")
        self._restartNext = int(offset)
        return self._answer(f"350 Restarting at {int(offset)}. Send RETR, STOR or APPE.")

    def ftp_USER(self, username: str) -> Any:
        if self.shell is not None:
            # A second login would leave the first shell's folder open.
            return self._answer("530 Can't change to another user.")
        return super().ftp_USER(username)

    def ftp_RNTO(self, toName: str) -> Any:
        if not hasattr(self, "_fromName"):
            return self._answer("503 RNFR required first.")
        return super().ftp_RNTO(toName)

    def ftp_PASS(self, password: str) -> Any:
        if self.shell is not None:
            return self._answer("503 Already logged in.")
        user = getattr(self, "_user", "")
        logging: Deferred[Any] = super().ftp_PASS(password)
        return logging.addErrback(_serviceStopped, self).addErrback(self._loginRefused, user)

    def _loginRefused(self, failure: Failure, user: str) -> Deferred[Any]:
        """
        Answer a refused login after the address's delay, and close the
        session after L{MAX_LOGIN_FAILURES}.
        """
        client = self.transport.getPeer().host
        factory = self.factory
        factory.warnings.emit(events.FTPS_LOGIN_FAILED, user=user, client=client)
        self._loginFailures += 1
        delay = factory.throttle.failed(client)

        def answer() -> Failure | None:
            if self.transport is None:
                return None
            if self._loginFailures < MAX_LOGIN_FAILURES:
                return failure
            factory.warnings.emit(
                events.FTPS_LOGINS_CLOSED, client=client, count=self._loginFailures
            )
            self.sendLine("530 Too many failed logins.")
            self._end()
            return None

        return deferLater(factory.reactor, delay, answer)


def _serviceStopped(failure: Failure, session: FTPSProtocol) -> None:
    """
    Answer a login whose password can no longer be checked (the service's
    threads stopped) with 421, and end its session.
    """
    failure.trap(PoolStopped)
    session.sendLine("421 Service not available, closing control connection.")
    session._end()


def _accepts(method: Callable[..., Any], params: tuple[str, ...]) -> bool:
    """
    Whether C{method} takes C{params}: Twisted's server answers a command
    with an argument too many as an internal error.
    """
    try:
        _signature(getattr(method, "__func__", method)).bind(None, *params)
    except TypeError:
        return False
    return True


@cache
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    """
    The signature of the function of a command (its C{self} included),
    found at its first use only: finding it cost the reactor thread more
    than some commands.
    """
    return inspect.signature(function)
