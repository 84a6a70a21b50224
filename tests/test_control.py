"""
Tests for L{letsencrypt_resource.control}: the state directory's lock and
the control socket resist planted links, squatted folders and removal.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, Cooperator
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import control, controlsocket
from letsencrypt_resource.answerwrites import HOLD_LIMIT, KeepingTasks
from letsencrypt_resource.control import (
    LOCK_CHECK_INTERVAL,
    ControlService,
    LockWatch,
    StateDirectoryLocked,
    StateLock,
    _ControlClient,
    _ControlProtocol,
    askServer,
    dispatch,
    socketAddress,
)
from letsencrypt_resource.controlsocket import (
    STATUS_ANSWER_WAIT,
    EncodedJSON,
    answerLine,
    requestLine,
)
from letsencrypt_resource.operations import OperationError, Operations
from letsencrypt_resource.safefs import UnusablePath
from tests.helpers.files import giveAway, modeOf, readBytes, writeBytes
from tests.helpers.slowsocket import SlowSocket


class StateLockTests(SynchronousTestCase):
    """
    Tests for L{StateLock} against what an attacker may plant.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.mkdir(self.base)
        self.state = os.path.join(self.base, "state")
        os.mkdir(self.state, 0o700)
        self.lock = StateLock(self.state)
        self.addCleanup(self.lock.release)

    def test_plantedLink(self) -> None:
        """
        A link planted at the lock file's name is not followed: the file it
        points to is not truncated to the server's PID.
        """
        victim = os.path.join(self.base, "victim")
        writeBytes(victim, b"precious")
        os.symlink(victim, os.path.join(self.state, "lock"))
        error = self.assertRaises(UnusablePath, self.lock.acquire)
        self.assertIn("symbolic link", str(error))
        self.assertEqual(readBytes(victim), b"precious")

    def test_notARegularFile(self) -> None:
        """
        A lock that is not a regular file (here a FIFO) is refused.
        """
        os.mkfifo(os.path.join(self.state, "lock"))
        error = self.assertRaises(UnusablePath, self.lock.acquire)
        self.assertIn("not a regular file", str(error))

    def test_foreignLockFile(self) -> None:
        """
        A lock file of another user is refused.
        """
        path = os.path.join(self.state, "lock")
        writeBytes(path, b"1")
        giveAway(path)
        self.assertRaises(UnusablePath, self.lock.acquire)

    def test_stateDirectoryIsAFile(self) -> None:
        """
        A state directory that is a file is refused before anything touches
        it: the file keeps its mode.
        """
        path = os.path.join(self.base, "file")
        writeBytes(path, b"data")
        os.chmod(path, 0o644)
        error = self.assertRaises(UnusablePath, StateLock(path).acquire)
        self.assertIn("is not a folder", str(error))
        self.assertEqual(modeOf(path), 0o644)


class LockWatchTests(SynchronousTestCase):
    """
    Tests for L{LockWatch}.
    """

    def setUp(self) -> None:
        self.state = os.path.join(os.path.abspath(self.mktemp()), "state")
        self.lock = StateLock(self.state)
        self.lock.acquire()
        self.addCleanup(self.lock.release)
        self.clock = Clock()
        self.watch = LockWatch(self.lock, self.clock)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.watch.startService()
        self.addCleanup(self.watch.stopService)

    def ids(self) -> list[int]:
        """
        The IDs of the events logged so far.
        """
        return [e["event_id"] for e in self.events if "event_id" in e]

    def test_heldQuietly(self) -> None:
        """
        While the lock is held, the watch says nothing.
        """
        self.clock.advance(LOCK_CHECK_INTERVAL * 3)
        self.assertEqual(self.ids(), [])

    def test_stateDirectoryRemoved(self) -> None:
        """
        When the whole state directory is removed, within a check interval
        the lock is taken again on a new state directory (event 20176), so
        that a second server is still refused.
        """
        shutil.rmtree(self.state)
        self.clock.advance(LOCK_CHECK_INTERVAL)
        self.assertEqual(self.ids(), [20176])
        self.assertEqual(readBytes(os.path.join(self.state, "lock")), str(os.getpid()).encode())
        self.assertEqual(modeOf(self.state), 0o700)
        self.assertRaises(StateDirectoryLocked, StateLock(self.state).acquire)

    def test_takenMeanwhile(self) -> None:
        """
        When another process took the lock on a new file meanwhile, event
        20177 names it, once while that lasts; once it lets go, the lock is
        taken again.
        """
        os.unlink(self.lock.path)
        other = StateLock(self.state)
        other.acquire()
        self.clock.advance(LOCK_CHECK_INTERVAL * 3)
        self.assertEqual(self.ids(), [20177])
        (lost,) = [e for e in self.events if e.get("event_id") == 20177]
        self.assertIn(f"pid {os.getpid()}", lost["details"])
        other.release()
        self.clock.advance(LOCK_CHECK_INTERVAL)
        self.assertEqual(self.ids(), [20177, 20176])


class KeepingOperations:
    """
    Operations that record when their kept rows are asked for.
    """

    def __init__(self) -> None:
        self.keeping: list[Deferred[None]] = []
        self.cancelled: list[Deferred[None]] = []

    def keepRows(self, cooperate: Callable[[Iterator[None]], object]) -> Deferred[None]:
        """
        Record the request, and start work with C{cooperate}; it runs until
        cancelled.
        """
        cooperate(iter([None] * 5))
        self.keeping.append(Deferred(self.cancelled.append))
        return self.keeping[-1]


class ControlSocketTests(SynchronousTestCase):
    """
    The control socket is made in the state directory the service opened,
    however long its path, in no folder shared with other users; the
    client trusts no socket but the server's.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.mkdir(self.base)
        # Too long for a UNIX socket path.
        self.state = os.path.join(self.base, "s" * 100)
        os.mkdir(self.state, 0o700)
        self.path = os.path.join(self.state, "control.sock")
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def service(self, state: str | None = None) -> tuple[ControlService, MemoryReactorClock]:
        """
        Start a L{ControlService} for C{state} (by default the long state
        directory); it is stopped when the test ends.

        @return: It and its reactor.
        """
        reactor = MemoryReactorClock()
        self.operations = KeepingOperations()
        service = ControlService(
            state or self.state,
            self.operations,  # type: ignore[arg-type]
            reactor,
        )
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service, reactor

    def assertSameFolder(self, link: str, path: str) -> None:
        """
        Assert that C{link} reaches the folder C{path}.
        """
        reached, folder = os.stat(link), os.stat(path)
        self.assertEqual((reached.st_dev, reached.st_ino), (folder.st_dev, folder.st_ino))

    def assertRefused(self, reactor: MemoryReactorClock, *details: str) -> None:
        """
        Assert that the service does not listen, and that event 20175 (the
        last one) says so, naming the socket's path, with C{details}.
        """
        self.assertEqual(reactor.unixServers, [])
        event = [e for e in self.events if e.get("event_id") == 20175][-1]
        self.assertEqual(event["path"], self.path)
        for detail in details:
            self.assertIn(detail, event["details"])

    def test_rowsKeptWhileListening(self) -> None:
        """
        Once it listens, the service has the operations make the kept
        status rows (L{Operations.keepRows}), and stops them when it stops;
        a service that cannot listen asks for none.
        """
        service, reactor = self.service()
        [keeping] = self.operations.keeping
        self.assertNoResult(keeping)
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        service.stopService()
        self.assertEqual(self.operations.cancelled, [keeping])
        # Its cooperator stopped too: nothing left scheduled.
        self.assertEqual(reactor.getDelayedCalls(), [])
        os.chmod(self.state, 0o777)
        self.service()
        self.assertEqual(self.operations.keeping, [])

    def test_keepingHeldWhileAnswerWritten(self) -> None:
        """
        While an answer leaves more than the transport's buffer pending,
        the service's row-keeping waits: no turn of it is scheduled until the
        answer is written.
        """
        service, reactor = self.service()
        answer = EncodedJSON('"' + "x" * 300_000 + '"')
        self.patch(control, "dispatch", lambda operations, name, arguments: succeed(answer))
        protocol = reactor.unixServers[0][1].buildProtocol(None)
        socket = SlowSocket(100_000)
        protocol.makeConnection(socket)
        protocol.dataReceived(requestLine("status", {}))
        reactor.advance(0)
        # Only the hold's bounds are scheduled, no turn of the keeping.
        self.assertEqual(
            sorted(call.getTime() for call in reactor.getDelayedCalls()),
            [HOLD_LIMIT, STATUS_ANSWER_WAIT],
        )
        while socket.dataBuffer or socket._tempDataBuffer:
            socket.doWrite()
        self.assertEqual(socket.written, answerLine(answer, None) + b"\n")
        self.assertEqual(len(reactor.getDelayedCalls()), 1)

    def test_oneAnswerPendingAtATime(self) -> None:
        """
        Requests sent together on a connection whose answer is held are
        not read until it is written: the server holds one answer of a
        connection that does not read, not one per request.
        """
        service, reactor = self.service()
        answer = EncodedJSON('"' + "x" * 300_000 + '"')
        asked: list[str] = []

        def dispatched(operations: object, name: str, arguments: object) -> Deferred[object]:
            asked.append(name)
            return succeed(answer)

        self.patch(control, "dispatch", dispatched)
        protocol = reactor.unixServers[0][1].buildProtocol(None)
        socket = SlowSocket(100_000)
        protocol.makeConnection(socket)
        protocol.dataReceived(requestLine("status", {}) * 3)
        self.assertEqual(asked, ["status"])
        while len(asked) == 1 and (socket.dataBuffer or socket._tempDataBuffer):
            socket.doWrite()
        self.assertEqual(asked, ["status", "status"])

    def test_oneRequestAtATime(self) -> None:
        """
        Requests sent together are run one at a time: the next is read
        once the answer to the one before is written, so requests whose
        answers come later do not pile up; many short ones answered at
        once are all answered.
        """
        service, reactor = self.service()
        running: list[Deferred[object]] = []

        def dispatched(operations: object, name: str, arguments: object) -> Deferred[object]:
            running.append(Deferred())
            return running[-1]

        self.patch(control, "dispatch", dispatched)
        protocol = reactor.unixServers[0][1].buildProtocol(None)
        socket = SlowSocket(100_000)
        protocol.makeConnection(socket)
        protocol.dataReceived(requestLine("status", {}) * 3)
        self.assertEqual(len(running), 1)
        running[0].callback(1)
        self.assertEqual(len(running), 2)
        running[1].callback(1)
        self.assertEqual(len(running), 3)
        self.patch(control, "dispatch", lambda operations, name, arguments: succeed(2))
        protocol.dataReceived(requestLine("status", {}) * 5000)
        socket.doWrite()
        self.assertEqual(socket.written, (answerLine(1, None) + b"\n") * 2)
        running[2].callback(1)
        while socket.dataBuffer or socket._tempDataBuffer:
            socket.doWrite()
        self.assertEqual(
            socket.written,
            (answerLine(1, None) + b"\n") * 3 + (answerLine(2, None) + b"\n") * 5000,
        )

    def test_longStateDirectory(self) -> None:
        """
        A state directory too long for a UNIX socket path gets its socket
        all the same, 0600, in that very folder, reached through the
        service's descriptor of it in C{/proc/self/fd}, held until the
        service stops; nothing is made anywhere else.
        """
        service, reactor = self.service()
        ((address, _, _, mode, _),) = reactor.unixServers
        folder, name = os.path.split(address)
        self.assertEqual(
            (os.path.dirname(folder), name, mode), ("/proc/self/fd", "control.sock", 0o600)
        )
        self.assertSameFolder(folder, self.state)
        self.assertEqual(os.listdir(self.base), [os.path.basename(self.state)])
        self.assertEqual([e.get("event_id") for e in self.events], [])
        self.successResultOf(service.stopService())
        self.assertFalse(os.path.exists(folder))

    def test_bindAndConnect(self) -> None:
        """
        A socket bound at the address of a long state directory appears in
        it, and a client reaches it through its own descriptor of the
        folder.
        """
        self.makeSocket().listen()
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        with controlsocket.serverAddress(self.state) as address:
            with socket.socket(socket.AF_UNIX) as connecting:
                connecting.connect(address)

    def test_stateDirectorySwapped(self) -> None:
        """
        The state directory moved away and replaced, after the start, by a
        link to a folder of the server's user: the socket stays in the
        folder the service opened, nothing goes through the link.
        """
        service, reactor = self.service()
        folder = os.path.dirname(reactor.unixServers[0][0])
        moved = os.path.join(self.base, "moved")
        os.rename(self.state, moved)
        elsewhere = os.path.join(self.base, "elsewhere")
        os.mkdir(elsewhere, 0o700)
        os.symlink(elsewhere, self.state)
        self.assertSameFolder(folder, moved)

    def test_noDescriptorLinks(self) -> None:
        """
        Where C{/proc/self/fd} is missing (not Linux), a short state
        directory's socket is bound at its path; a long one gets none
        (event 20175 says why) and the service runs on; the client cannot
        reach a socket there either.
        """
        self.makeSocket()
        self.patch(controlsocket, "DESCRIPTORS", os.path.join(self.base, "missing"))
        short = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, short)
        _, reactor = self.service(short)
        self.assertEqual(reactor.unixServers[0][0], os.path.join(short, "control.sock"))
        service, reactor = self.service()
        self.assertRefused(reactor, "too long for a UNIX socket")
        self.assertTrue(service.running)
        failure = self.failureResultOf(
            Deferred.fromCoroutine(askServer(MemoryReactorClock(), self.state, "status", {})),
            OSError,
        )
        self.assertEqual(failure.value.errno, errno.ENAMETOOLONG)

    def test_stateDirectoryLink(self) -> None:
        """
        A link at the state directory's path is never followed: no socket,
        event 20175, nothing made in the folder it points to.
        """
        elsewhere = os.path.join(self.base, "elsewhere")
        os.rename(self.state, elsewhere)
        os.symlink(elsewhere, self.state)
        _, reactor = self.service()
        self.assertRefused(reactor, "symbolic link")
        self.assertEqual(os.listdir(elsewhere), [])

    def test_stateDirectoryUnsafe(self) -> None:
        """
        A state directory of another user, or that others can write in, is
        never used for the socket.
        """
        os.chmod(self.state, 0o777)
        _, reactor = self.service()
        self.assertRefused(reactor, "writable by group or others")
        os.chmod(self.state, 0o700)
        giveAway(self.state)
        _, reactor = self.service()
        self.assertRefused(reactor, "owned by another user")

    def makeSocket(self) -> socket.socket:
        """
        Bind a UNIX socket at the long state directory's control socket.

        @return: The socket, closed when the test ends.
        """
        listening = socket.socket(socket.AF_UNIX)
        self.addCleanup(listening.close)
        with _opened(self.state) as folder:
            listening.bind(socketAddress(self.state, folder))
        return listening

    def test_clientConnectsThroughDescriptor(self) -> None:
        """
        The client checks the socket of a long state directory, then
        connects through its own descriptor of the folder, closed once the
        connection attempt is over.
        """
        self.makeSocket()
        reactor = MemoryReactorClock()
        asked = Deferred.fromCoroutine(askServer(reactor, self.state, "status", {}))
        ((address, factory, _, _),) = reactor.unixClients
        folder = os.path.dirname(address)
        self.assertEqual(os.path.dirname(folder), "/proc/self/fd")
        self.assertSameFolder(folder, self.state)
        factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectionRefusedError()))
        self.failureResultOf(asked, ConnectionRefusedError)
        self.assertFalse(os.path.exists(folder))

    def connected(self, name: str) -> tuple[Deferred[Any], MemoryReactorClock, StringTransport]:
        """
        Ask a server on a memory reactor to run C{name}, connected.

        @return: The answer, the reactor and the connection's transport.
        """
        self.makeSocket()
        reactor = MemoryReactorClock()
        asked = Deferred.fromCoroutine(askServer(reactor, self.state, name, {}))
        ((_, factory, _, _),) = reactor.unixClients
        transport = StringTransport()
        factory.buildProtocol(None).makeConnection(transport)
        return asked, reactor, transport

    def test_statusDeadline(self) -> None:
        """
        A C{status} not answered within L{STATUS_ANSWER_WAIT} seconds fails
        saying so, and its connection is closed.
        """
        asked, reactor, transport = self.connected("status")
        reactor.advance(STATUS_ANSWER_WAIT - 1)
        self.assertNoResult(asked)
        reactor.advance(1)
        failure = self.failureResultOf(asked, OperationError)
        self.assertEqual(str(failure.value), "the server did not answer status within 60 s")
        self.assertTrue(transport.disconnecting)

    def test_renewWithoutDeadline(self) -> None:
        """
        A renewal, which waits on the CA, is waited for as long as it
        takes.
        """
        asked, reactor, transport = self.connected("renew")
        reactor.advance(STATUS_ANSWER_WAIT * 100)
        self.assertNoResult(asked)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_clientRefusesForeignSocket(self) -> None:
        """
        The client refuses, before connecting, a socket of another user,
        with a message naming the socket.
        """
        self.makeSocket()
        giveAway(self.path)
        reactor = MemoryReactorClock()
        failure = self.failureResultOf(
            Deferred.fromCoroutine(askServer(reactor, self.state, "status", {})),
            OperationError,
        )
        self.assertIn(f"the control socket {self.path} is not trusted", str(failure.value))
        self.assertEqual(reactor.unixClients, [])

    def test_clientRefusesWritableFolder(self) -> None:
        """
        The client refuses a socket in a state directory others can write
        in, as the commands refuse such a state directory.
        """
        self.makeSocket()
        os.chmod(self.state, 0o777)
        reactor = MemoryReactorClock()
        failure = self.failureResultOf(
            Deferred.fromCoroutine(askServer(reactor, self.state, "status", {})),
            UnusablePath,
        )
        self.assertIn("writable by group or others", str(failure.value))
        self.assertEqual(reactor.unixClients, [])

    def test_clientRefusesLink(self) -> None:
        """
        The client follows no link at the state directory's path, even to
        a folder with a socket of the server's user.
        """
        self.makeSocket()
        linked = os.path.join(self.base, "linked")
        os.symlink(self.state, linked)
        reactor = MemoryReactorClock()
        self.failureResultOf(
            Deferred.fromCoroutine(askServer(reactor, linked, "status", {})), OSError
        )
        self.assertEqual(reactor.unixClients, [])


@contextmanager
def _opened(path: str) -> Iterator[int]:
    """
    Open the folder C{path}.

    @return: A context manager giving its descriptor.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


class ControlProtocolTests(SynchronousTestCase):
    """
    What the control socket reads of one connection.
    """

    def test_longRequestRefused(self) -> None:
        """
        A request line longer than any real request (a renewal of 10,000
        long names) closes the connection instead of being buffered on.
        """
        keeping = KeepingTasks(Cooperator(), Clock())
        protocol = _ControlProtocol(Operations(None, Clock()), keeping)  # type: ignore[arg-type]
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"x" * (4 * 1024 * 1024))
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"x")
        self.assertTrue(transport.disconnecting)


class AnswerTests(SynchronousTestCase):
    """
    The server's answer line (L{controlsocket.answerLine}) and how the
    reactor's client reads it (L{_ControlClient}).
    """

    rows = [{"names": ["a.test"], "last_error": 'x "\u00e9"\n', "days_left": 1.5}]

    def test_encodedAsDumps(self) -> None:
        """
        A result already encoded (L{controlsocket.EncodedJSON}) is answered
        with the line C{json.dumps} gives for the result itself; its text
        is found in the line again as it is (L{controlsocket.resultText}).
        """
        text = json.dumps(self.rows)
        line = controlsocket.answerLine(controlsocket.EncodedJSON(text), None)
        self.assertEqual(line, json.dumps({"result": self.rows, "error": None}).encode())
        self.assertEqual(controlsocket.answerLine(self.rows, None), line)
        self.assertEqual(controlsocket.resultText(line), text.encode())
        self.assertEqual(controlsocket.answerOf(line), self.rows)

    def test_errorsAndOtherForms(self) -> None:
        """
        An error is answered as such, even with an encoded result; an
        error, or an answer in another form, has no result text to take.
        """
        line = controlsocket.answerLine(controlsocket.EncodedJSON("[]"), "broken")
        self.assertEqual(json.loads(line), {"result": "[]", "error": "broken"})
        self.assertIsNone(controlsocket.resultText(line))
        other = json.dumps({"error": None, "result": self.rows}).encode()
        self.assertIsNone(controlsocket.resultText(other))

    def test_lineCopiedOnce(self) -> None:
        """
        The line's end received, its parts are joined in one copy: beyond
        what was received, no more memory than the line's length is
        taken, where adding the parts then copying the sum took twice it.
        """
        part = b"x" * (4 * 1024 * 1024)
        end = part + b"\n"
        reader = controlsocket.AnswerLine(4 * len(part))
        self.assertIsNone(reader.feed(part))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            line = reader.feed(end)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(line, part * 2)
        self.assertLess(peak, 1.25 * len(line))

    def test_clientReadsLineInParts(self) -> None:
        """
        The client's answer is the first line, whatever the parts it came
        in; what follows it is ignored.
        """
        client = _ControlClient()
        client.makeConnection(StringTransport())
        for part in (b'{"result"', b": 1, ", b'"error": null}\nmore', b"\n"):
            client.dataReceived(part)
        self.assertEqual(self.successResultOf(client.answer), b'{"result": 1, "error": null}')

    def test_clientLongAnswerRefused(self) -> None:
        """
        An answer longer than the limit closes the connection, and the
        client fails saying the answer is too long, not that the
        connection closed.
        """
        client = _ControlClient(limit=10)
        transport = StringTransport()
        client.makeConnection(transport)
        client.dataReceived(b"x" * 10)
        self.assertFalse(transport.disconnecting)
        client.dataReceived(b"x\n")
        self.assertTrue(transport.disconnecting)
        client.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(client.answer, OperationError)
        self.assertEqual(
            str(failure.value),
            "the server's answer is longer than 10 bytes, the most this command reads",
        )

    def test_statusEncoded(self) -> None:
        """
        The server's C{status} on a server alone is the encoded rows of its
        sets (L{Operations.encodedStatus}), which the answer holds as
        C{json.dumps} would write the rows.
        """
        resource = SimpleNamespace(managed={}, options=None, storage=None)
        operations = Operations(resource, Clock())  # type: ignore[arg-type]
        result = self.successResultOf(dispatch(operations, "status", {}))
        self.assertIsInstance(result, controlsocket.EncodedJSON)
        self.assertEqual(controlsocket.answerLine(result, None), b'{"result": [], "error": null}')
