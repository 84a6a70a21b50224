"""
One process at a time on a state directory, and a control socket through
which the operations command reaches the running server.

The server holds an exclusive lock on C{<state>/lock} (L{StateLock}, from
L{letsencrypt_resource.storage.lock}) for as long as it runs, and
L{LockWatch} takes it again if the file is removed, so a second server on the
same state directory is refused, and the operations command knows whether
to ask the server or to work alone.  The server answers on a UNIX socket
in the state directory, usable by its owner only: each request, a line of
JSON, runs an L{Operations} method.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.defer import TimeoutError as AnswerLate
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUNIX
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from . import events
from .answerwrites import AnswerWrite, Connection, KeepingTasks
from .controlsocket import (
    MAX_ANSWER,
    SOCKET_NAME,
    STATUS_ANSWER_WAIT,
    AnswerLine,
    AnswerTooLong,
    answerLine,
    answerOf,
    requestLine,
    serverAddress,
    socketAddress,
)
from .listening import stopPort
from .operations import OperationError, Operations
from .reactors import Reactor
from .reporting import unexpected
from .safefs import openFolder
from .storage.lock import StateDirectoryLocked, StateLock

#: The longest request, in bytes: a renewal of 10,000 names of 255 bytes
#: fits; a longer line closes the connection.
_MAX_REQUEST = 4 * 1024 * 1024
#: Seconds between two checks that the server still holds its lock.
LOCK_CHECK_INTERVAL = 60.0


class LockWatch(TimerService):
    """
    Checks every L{LOCK_CHECK_INTERVAL} seconds that the server still holds
    its state directory's lock: when the lock file (or the whole state
    directory) was removed or replaced, a second server could start on the
    state directory, so the lock is taken again on a new file (event
    20176); when another process took it meanwhile, event 20177 names it.
    """

    _log = Logger()

    def __init__(self, lock: StateLock, clock: IReactorTime):
        super().__init__(LOCK_CHECK_INTERVAL, self.check)
        self.clock = clock
        self._lock = lock
        self._lost: str | None = None

    def check(self) -> None:
        """
        Take the lock again if it is no longer held.
        """
        if self._lock.held():
            return
        try:
            self._lock.acquire()
        except (StateDirectoryLocked, OSError) as error:
            if str(error) != self._lost:
                self._lost = str(error)
                events.STATE_LOCK_LOST.emit(
                    self._log, directory=self._lock.directory, details=str(error)
                )
            return
        self._lost = None
        events.STATE_LOCK_RESTORED.emit(self._log, path=self._lock.path)


def _text(arguments: dict[str, Any], name: str) -> str:
    """
    The argument C{name} of a request, which must be text.

    @raise OperationError: when it is missing or not text.
    """
    value = arguments.get(name)
    if not isinstance(value, str):
        raise OperationError(f"the argument {name!r} must be text")
    return value


def dispatch(operations: Operations, name: str, arguments: dict[str, Any]) -> Deferred[Any]:
    """
    Run the operation C{name} with C{arguments}.
    """
    methods = {
        "status": operations.encodedStatus,
        "renew": lambda: operations.renew(arguments["names"], arguments["force"]),
        "revoke": lambda: operations.revoke(arguments["name"], arguments["reason"]),
        "account-show": operations.accountShow,
        "account-rollover": operations.accountRollover,
        "account-deactivate": operations.accountDeactivate,
        "account-show-at": lambda: operations.accountShow(_text(arguments, "ca")),
        "account-rollover-at": lambda: operations.accountRollover(_text(arguments, "ca")),
        "account-deactivate-at": lambda: operations.accountDeactivate(_text(arguments, "ca")),
    }
    if name not in methods:
        raise OperationError(f"unknown operation {name!r}")
    return maybeDeferred(methods[name])


class _ControlProtocol(LineReceiver):
    """
    One JSON request a line, C{{"name": ..., "arguments": {...}}}, answered
    by one JSON line, C{{"result": ..., "error": ...}}, while which the
    row-keeping of C{keeping} waits, when more than the transport's buffer
    is pending (see L{AnswerWrite}); no further request is read from a
    request until its answer is written.
    """

    delimiter = b"\n"
    MAX_LENGTH = _MAX_REQUEST

    def __init__(self, operations: Operations, keeping: KeepingTasks):
        self._operations = operations
        self._keeping = keeping

    def lineReceived(self, line: bytes) -> None:
        # One request at a time: no more is read until it is answered (see
        # AnswerWrite.write; answered at once, LineReceiver's loop goes on
        # with the next buffered line, without a deeper call).
        self.pauseProducing()
        try:
            request = json.loads(line)
            running = dispatch(self._operations, request["name"], request["arguments"])
        except (ValueError, KeyError, TypeError, OperationError) as error:
            self._answer(None, str(error))
            return
        running.addCallbacks(
            lambda result: self._answer(result, None),
            lambda failure: self._answer(None, str(failure.value) or repr(failure.value)),
        )

    def _answer(self, result: Any, error: str | None) -> None:
        line = answerLine(result, error) + self.delimiter
        AnswerWrite.write(cast(Connection, self.transport), self, self._keeping, line)


class _ControlClient(Protocol):
    """
    Reads the server's answer line (see L{AnswerLine}); a line longer than
    C{limit} bytes fails the answer with an L{OperationError} that says so,
    and closes the connection.
    """

    def __init__(self, limit: int = MAX_ANSWER) -> None:
        self.answer: Deferred[bytes] = Deferred()
        self._line = AnswerLine(limit)
        self._limit = limit

    def dataReceived(self, data: bytes) -> None:
        if self.answer.called:
            return
        try:
            line = self._line.feed(data)
        except AnswerTooLong:
            assert self.transport is not None
            self.transport.loseConnection()
            self.answer.errback(
                OperationError(
                    f"the server's answer is longer than {self._limit} bytes, "
                    "the most this command reads"
                )
            )
            return
        if line is not None:
            self.answer.callback(line)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.answer.called:
            self.answer.errback(reason)


class ControlService(Service):
    """
    Answers the operations command on the state directory's control socket.

    The state directory is opened once, at start, as L{openFolder} does (a
    folder of this user, not a link, that no one else can write in, below
    folders no other user controls), and held open while the service runs:
    the socket is bound in that very folder, through L{socketAddress}, so a
    long state directory needs no folder shared with other users, and a
    link or folder swapped in at its path later changes nothing.  When the
    socket cannot be made, event 20175 says why and the server runs
    without it.
    """

    _log = Logger()

    def __init__(self, stateDirectory: str, operations: Operations, reactor: IReactorUNIX):
        self._stateDirectory = stateDirectory
        self._operations = operations
        self._reactor = reactor
        self._folder: int | None = None
        self._port: IListeningPort | None = None
        self._cooperator: Cooperator | None = None
        self._keeping: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        clock = IReactorTime(self._reactor)
        self._cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))
        tasks = KeepingTasks(self._cooperator, clock)
        factory: Factory[Any] = Factory.forProtocol(
            lambda: _ControlProtocol(self._operations, tasks)
        )
        factory.noisy = False
        try:
            with openFolder(self._stateDirectory) as opened:
                folder = os.dup(opened)
        except OSError as error:
            self._failed(error)
            return
        try:
            address = socketAddress(self._stateDirectory, folder)
            try:
                os.unlink(SOCKET_NAME, dir_fd=folder)
            except FileNotFoundError:
                pass
            self._port = self._reactor.listenUNIX(address, factory, mode=0o600)
        except (OSError, CannotListenError) as error:
            os.close(folder)
            self._failed(error)
            return
        self._folder = folder
        self._keepRows(tasks)

    def _keepRows(self, tasks: KeepingTasks) -> None:
        """
        Have the operations make the kept status rows once the resource
        has settled (see L{Operations.keepRows}), a few at a time between
        the reactor's other work, with a cooperator of this service's own
        (C{tasks}'s: stopped with it, it leaves nothing scheduled), and
        not while an answer leaves more than the transport's buffer
        pending (for L{HOLD_LIMIT
        <letsencrypt_resource.answerwrites.HOLD_LIMIT>} seconds at most).
        """
        self._keeping = self._operations.keepRows(tasks.cooperate)
        self._keeping.addErrback(lambda failure: unexpected(self._log, failure))

    def _failed(self, error: Exception) -> None:
        """
        Say that the socket cannot be made, and why (event 20175).
        """
        path = os.path.join(self._stateDirectory, SOCKET_NAME)
        events.CONTROL_SOCKET_FAILED.emit(self._log, path=path, details=str(error))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        keeping, self._keeping = self._keeping, None
        cooperator, self._cooperator = self._cooperator, None
        if keeping is not None and cooperator is not None:
            keeping.cancel()
            cooperator.stop()
        port, self._port = self._port, None
        folder, self._folder = self._folder, None
        if port is None or folder is None:
            return succeed(None)

        def closeFolder(result: object) -> object:
            # Only now: the port removes the socket through the folder's
            # descriptor when it has stopped.
            os.close(folder)
            return result

        return stopPort(port).addBoth(closeFolder)


async def askServer(
    reactor: Reactor, stateDirectory: str, name: str, arguments: dict[str, Any]
) -> Any:
    """
    Run an operation in the server running on C{stateDirectory}, once its
    control socket is trusted (see L{serverAddress}).

    A C{status}, which the server answers from memory, fails when its
    answer has not come within L{STATUS_ANSWER_WAIT
    <letsencrypt_resource.controlsocket.STATUS_ANSWER_WAIT>} seconds; the other
    operations (a renewal waits on the CA) are waited for as long as they
    take.

    @raise OperationError: with the server's error text, or when the
        socket is not trusted, the answer is none or is longer than
        L{MAX_ANSWER <letsencrypt_resource.controlsocket.MAX_ANSWER>}
        bytes, or a C{status} answer is late.
    @raise twisted.internet.error.ConnectError: when no server answers.
    @raise OSError: when there is no socket, or the state directory breaks
        the rules of L{openFolder}.
    """
    with serverAddress(stateDirectory) as address:
        endpoint = UNIXClientEndpoint(reactor, address, timeout=5)
        protocol = await connectProtocol(endpoint, _ControlClient())
    answer = protocol.answer
    if name == "status":
        answer.addTimeout(STATUS_ANSWER_WAIT, reactor)
    try:
        protocol.transport.write(requestLine(name, arguments))
        line = await answer
    except AnswerLate:
        raise OperationError(
            f"the server did not answer {name} within {STATUS_ANSWER_WAIT:g} s"
        ) from None
    finally:
        protocol.transport.loseConnection()
    return answerOf(line)
