"""
Tests for L{letsencrypt_resource.control}: the state directory's lock and
the control socket resist planted links, squatted folders and removal.
"""

from __future__ import annotations

import os
import shutil
import socket

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import control
from letsencrypt_resource.config import ConfigurationError, ResourceOptions
from letsencrypt_resource.control import (
    LOCK_CHECK_INTERVAL,
    ControlService,
    LockWatch,
    StateDirectoryLocked,
    StateLock,
    _ControlProtocol,
    askServer,
    checkControlFolder,
    checkServerSocket,
    socketPath,
)
from letsencrypt_resource.operations import OperationError, Operations
from letsencrypt_resource.safefs import UnusablePath

from .test_safefs import giveAway, modeOf, readBytes, writeBytes


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


def resourceOptions(state: str) -> ResourceOptions:
    """
    Resource options with the state directory C{state}.
    """
    return ResourceOptions(
        "resources/le", "le", "", "127.0.0.1", 80, "https://acme.example/dir",
        state, None, None, None, "ecdsa-p256", False,
    )


class ControlSocketTests(SynchronousTestCase):
    """
    The control socket's fallback folder in the shared temporary folder
    cannot be squatted, and the client trusts no socket but the server's.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.mkdir(base)
        shared = os.path.join(base, "tmp")
        os.mkdir(shared)
        os.chmod(shared, 0o1777)
        self.patch(control, "SHARED_TEMPORARY", shared)
        # Too long for a UNIX socket path: the socket goes to the shared folder.
        self.state = os.path.join(base, "s" * 100)
        os.mkdir(self.state, 0o700)
        self.path = socketPath(self.state)
        self.folder = os.path.dirname(self.path)
        self.assertEqual(os.path.dirname(self.folder), shared)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self) -> MemoryReactorClock:
        """
        Start a L{ControlService} for the state directory.

        @return: Its reactor.
        """
        reactor = MemoryReactorClock()
        service = ControlService(self.state, None, reactor)  # type: ignore[arg-type]
        service.startService()
        self.addCleanup(service.stopService)
        return reactor

    def assertRefused(self) -> None:
        """
        Assert that the service does not listen, that event 20175 says so,
        and that the start-up check refuses the state directory.
        """
        reactor = self.start()
        self.assertEqual(reactor.unixServers, [])
        self.assertEqual([e.get("event_id") for e in self.events], [20175])
        error = self.assertRaises(
            ConfigurationError, checkControlFolder, resourceOptions(self.state)
        )
        self.assertEqual(error.option, "state_directory")

    def test_createdPrivate(self) -> None:
        """
        The fallback folder is created 0700 and the socket listens there.
        """
        checkControlFolder(resourceOptions(self.state))
        reactor = self.start()
        self.assertEqual(modeOf(self.folder), 0o700)
        self.assertEqual(reactor.unixServers[0][0], self.path)

    def test_squattedByOtherUser(self) -> None:
        """
        A fallback folder another user made first is never used.
        """
        os.mkdir(self.folder, 0o700)
        giveAway(self.folder)
        self.assertRefused()

    def test_squattedWithLink(self) -> None:
        """
        A link planted as the fallback folder is never followed.
        """
        elsewhere = os.path.join(os.path.dirname(self.state), "elsewhere")
        os.mkdir(elsewhere, 0o700)
        os.symlink(elsewhere, self.folder)
        self.assertRefused()
        self.assertEqual(os.listdir(elsewhere), [])

    def test_writableByOthers(self) -> None:
        """
        A fallback folder others can write in is never used.
        """
        os.mkdir(self.folder)
        os.chmod(self.folder, 0o777)
        self.assertRefused()

    def makeSocket(self) -> None:
        """
        Bind a UNIX socket at the control socket's path, in a folder of
        this user.
        """
        os.mkdir(self.folder, 0o700)
        listening = socket.socket(socket.AF_UNIX)
        self.addCleanup(listening.close)
        # The path is too long to bind: bind its name from its folder.
        here = os.getcwd()
        os.chdir(self.folder)
        try:
            listening.bind(os.path.basename(self.path))
        finally:
            os.chdir(here)

    def test_clientTrustsServerSocket(self) -> None:
        """
        A socket of the state directory's owner in a folder only they can
        write in is trusted.
        """
        self.makeSocket()
        checkServerSocket(self.state, self.path)

    def test_clientRefusesForeignSocket(self) -> None:
        """
        The client refuses, before connecting, a socket of another user, or
        in a folder of another user, with a message naming the socket.
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
        os.chown(self.path, os.geteuid(), -1)
        giveAway(self.folder)
        self.assertRaises(OperationError, checkServerSocket, self.state, self.path)

    def test_clientRefusesWritableFolder(self) -> None:
        """
        The client refuses a socket whose folder others can write in.
        """
        self.makeSocket()
        os.chmod(self.folder, 0o777)
        self.assertRaises(OperationError, checkServerSocket, self.state, self.path)


class ControlProtocolTests(SynchronousTestCase):
    """
    What the control socket reads of one connection.
    """

    def test_longRequestRefused(self) -> None:
        """
        A request line longer than any real request (a renewal of 10,000
        long names) closes the connection instead of being buffered on.
        """
        protocol = _ControlProtocol(Operations(None, Clock()))  # type: ignore[arg-type]
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"x" * (4 * 1024 * 1024))
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"x")
        self.assertTrue(transport.disconnecting)
