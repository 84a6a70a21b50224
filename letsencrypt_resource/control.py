"""
One process at a time on a state directory, and a control socket through
which the operations command reaches the running server.

The server holds an exclusive lock on C{<state>/lock} for as long as it
runs, so a second server on the same state directory is refused, and the
operations command knows whether to ask the server or to work alone.  The
server answers on a UNIX socket, usable by its owner only: each request, a
line of JSON, runs an L{Operations} method.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from .operations import OperationError, Operations
from .store import makePrivateDirectory

#: UNIX socket paths longer than this do not fit in a sockaddr_un.
_MAX_SOCKET_PATH = 100
#: The longest request or answer, in bytes.
_MAX_MESSAGE = 64 * 1024 * 1024


class StateDirectoryLocked(Exception):
    """
    Another process holds the state directory.
    """

    def __init__(self, directory: str, holder: str):
        super().__init__(directory, holder)
        self.directory = directory
        self.holder = holder

    def __str__(self) -> str:
        return (
            f"the state directory {self.directory} is in use by another process "
            f"({self.holder}); run one server per state directory"
        )


class StateLock:
    """
    The exclusive lock on a state directory.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> None:
        """
        Take the lock, or fail at once.

        @raise StateDirectoryLocked: when another process holds it.
        """
        makePrivateDirectory(self.directory)
        fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateDirectoryLocked(self.directory, f"pid {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """
        Let the lock go.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def socketPath(stateDirectory: str) -> str:
    """
    Where the server for C{stateDirectory} answers: a socket in the state
    directory, or, when that path is too long for a UNIX socket, one in a
    private folder of the system's temporary directory.
    """
    path = os.path.join(os.path.abspath(stateDirectory), "control.sock")
    if len(path.encode("utf-8")) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:24]
    return os.path.join("/tmp", f"letsencrypt-resource-{os.getuid()}", f"{digest}.sock")


def dispatch(operations: Operations, name: str, arguments: dict[str, Any]) -> Deferred[Any]:
    """
    Run the operation C{name} with C{arguments}.
    """
    methods = {
        "status": lambda: operations.status(),
        "renew": lambda: operations.renew(arguments["names"], arguments["force"]),
        "revoke": lambda: operations.revoke(arguments["name"], arguments["reason"]),
        "account-show": operations.accountShow,
        "account-rollover": operations.accountRollover,
        "account-deactivate": operations.accountDeactivate,
    }
    if name not in methods:
        raise OperationError(f"unknown operation {name!r}")
    return maybeDeferred(methods[name])


class _ControlProtocol(LineReceiver):
    """
    One JSON request a line, C{{"name": ..., "arguments": {...}}}, answered
    by one JSON line, C{{"result": ..., "error": ...}}.
    """

    delimiter = b"\n"
    MAX_LENGTH = _MAX_MESSAGE

    def __init__(self, operations: Operations):
        self._operations = operations

    def lineReceived(self, line: bytes) -> None:
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
        self.sendLine(json.dumps({"result": result, "error": error}).encode("utf-8"))


class _ControlClient(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = _MAX_MESSAGE

    def __init__(self) -> None:
        self.answer: Deferred[dict[str, Any]] = Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.answer.callback(json.loads(line))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.answer.called:
            self.answer.errback(reason)


class ControlService(Service):
    """
    Answers the operations command on the state directory's control socket.
    """

    def __init__(self, stateDirectory: str, operations: Operations, reactor: Any):
        self._path = socketPath(stateDirectory)
        self._operations = operations
        self._reactor = reactor
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        makePrivateDirectory(os.path.dirname(self._path))
        if os.path.exists(self._path):
            os.unlink(self._path)
        factory = Factory.forProtocol(lambda: _ControlProtocol(self._operations))
        factory.noisy = False
        self._port = self._reactor.listenUNIX(self._path, factory, mode=0o600)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self._port = self._port, None
        return port.stopListening() if port is not None else succeed(None)


async def askServer(
    reactor: Any, stateDirectory: str, name: str, arguments: dict[str, Any]
) -> Any:
    """
    Run an operation in the server running on C{stateDirectory}.

    @raise OperationError: with the server's error text.
    @raise twisted.internet.error.ConnectError: when no server answers.
    """
    endpoint = UNIXClientEndpoint(reactor, socketPath(stateDirectory), timeout=5)
    protocol = await connectProtocol(endpoint, _ControlClient())
    try:
        protocol.sendLine(json.dumps({"name": name, "arguments": arguments}).encode())
        answer = await protocol.answer
    finally:
        protocol.transport.loseConnection()
    if answer["error"]:
        raise OperationError(answer["error"])
    return answer["result"]
