"""
L{StateLock}: a lock held by a short-lived reader (a C{status} read without
a server) is waited for, a bounded time, by a process that starts; any
other holder refuses it at once.
"""

from __future__ import annotations

import errno
import fcntl
import os

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.storage import lock as lockModule
from letsencrypt_resource.storage.lock import READER_WAIT, StateDirectoryLocked, StateLock


class FakeTime:
    """
    A monotonic clock and a sleep that advances it, calling C{atSleep}
    with the time after each sleep.

    @ivar slept: Every wait asked for.
    """

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.slept: list[float] = []
        self.atSleep = lambda now: None

    def now(self) -> float:
        return self.seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.seconds += seconds
        self.atSleep(self.seconds)


class ReaderWaitTests(SynchronousTestCase):
    """
    Taking the lock while another holds it (another open file: flock locks
    are per open file, so one process stands for two).
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        os.makedirs(self.path, 0o700)
        self.time = FakeTime()
        self.other = StateLock(self.path)
        self.addCleanup(self.other.release)

    def starting(self) -> StateLock:
        """
        A lock on the same state directory, on the fake time.
        """
        lock = StateLock(self.path, sleep=self.time.sleep, now=self.time.now)
        self.addCleanup(lock.release)
        return lock

    def test_readerRecorded(self) -> None:
        """
        A reader records its pid and C{reader} in the lock file; any other
        holder its pid alone.
        """
        self.other.acquire(reader=True)
        with open(os.path.join(self.path, "lock")) as stream:
            self.assertEqual(stream.read(), f"{os.getpid()} reader")
        self.other.release()
        self.other.acquire()
        with open(os.path.join(self.path, "lock")) as stream:
            self.assertEqual(stream.read(), str(os.getpid()))

    def test_waitsForReader(self) -> None:
        """
        A lock held by a reader that lets go within L{READER_WAIT} seconds
        is taken once it does, recording the new holder.
        """
        self.other.acquire(reader=True)

        def letGo(now: float) -> None:
            if len(self.time.slept) == 20:
                self.other.release()

        self.time.atSleep = letGo
        lock = self.starting()
        lock.acquire()
        self.assertTrue(lock.held())
        self.assertEqual(len(self.time.slept), 20)
        self.assertLess(sum(self.time.slept), READER_WAIT)
        with open(os.path.join(self.path, "lock")) as stream:
            self.assertEqual(stream.read(), str(os.getpid()))

    def test_readerStays(self) -> None:
        """
        A reader that keeps the lock past L{READER_WAIT} seconds refuses it
        then, with the message a start is refused with at once otherwise
        (its pid alone).
        """
        self.other.acquire(reader=True)
        lock = self.starting()
        error = self.assertRaises(StateDirectoryLocked, lock.acquire)
        self.assertEqual(error.holder, f"pid {os.getpid()}")
        self.assertIn(f"(pid {os.getpid()}); run one server per state directory", str(error))
        waited = sum(self.time.slept)
        self.assertTrue(READER_WAIT <= waited < READER_WAIT + 0.1, waited)

    def test_serverRefusedAtOnce(self) -> None:
        """
        A lock held by a server (or a command working alone) is refused at
        once, without waiting.
        """
        self.other.acquire()
        error = self.assertRaises(StateDirectoryLocked, self.starting().acquire)
        self.assertEqual(error.holder, f"pid {os.getpid()}")
        self.assertEqual(self.time.slept, [])

    def test_holderNotWrittenYet(self) -> None:
        """
        A lock file with no pid yet (its holder has just taken it) is
        waited for as a reader is: the holder writes who it is at once.
        """
        self.other.acquire()
        with open(os.path.join(self.path, "lock"), "w"):
            pass
        self.time.atSleep = lambda now: self.other.release()
        self.starting().acquire()
        self.assertEqual(len(self.time.slept), 1)

    def stale(self, text: bytes) -> int:
        """
        Hold the lock on another open file of the lock file, whose text is
        C{text}: a holder that has just taken it, before it writes its pid
        over what is there.
        """
        fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        os.write(fd, text)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.time.atSleep = lambda now: fcntl.flock(fd, fcntl.LOCK_UN)
        return fd

    def test_releaseEmpties(self) -> None:
        """
        A holder that lets go empties the lock file, so a process that
        looks at it while the next holder takes it waits, and is not
        refused naming the holder gone.
        """
        self.other.acquire()
        self.other.release()
        with open(os.path.join(self.path, "lock")) as stream:
            self.assertEqual(stream.read(), "")
        self.stale(b"")
        self.starting().acquire()
        self.assertEqual(len(self.time.slept), 1)

    def test_unreadableHolder(self) -> None:
        """
        A lock file whose text names no pid (not yet written over, or
        damaged) is waited for as a reader is.
        """
        self.stale(b"\xff\xfe")
        self.starting().acquire()
        self.assertEqual(len(self.time.slept), 1)

    def test_unreadableHolderStays(self) -> None:
        """
        A holder whose pid stays unreadable past L{READER_WAIT} seconds is
        refused as C{pid unknown}.
        """
        self.stale(b"garbage")
        self.time.atSleep = lambda now: None
        error = self.assertRaises(StateDirectoryLocked, self.starting().acquire)
        self.assertEqual(error.holder, "pid unknown")
        waited = sum(self.time.slept)
        self.assertTrue(READER_WAIT <= waited < READER_WAIT + 0.1, waited)

    def test_failedWriteLetsGo(self) -> None:
        """
        When writing the holder's pid fails after the lock was taken, the
        lock is let go (its file closed), not held for ever: another
        process takes it at once.
        """

        def full(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        lock = self.starting()
        patched = self.patch(lockModule.os, "pwrite", full)
        self.assertRaises(OSError, lock.acquire)
        patched.restore()
        self.assertFalse(lock.held())
        self.other.acquire()
        self.assertTrue(self.other.held())
        self.assertEqual(self.time.slept, [])

    def test_takenAgainDoesNotWait(self) -> None:
        """
        A lock taken again after its file was replaced (see
        L{LockWatch <letsencrypt_resource.control.LockWatch>}, on the
        reactor thread) does not wait for a reader that took the new file.
        """
        lock = self.starting()
        lock.acquire()
        os.unlink(os.path.join(self.path, "lock"))
        self.other.acquire(reader=True)
        self.assertRaises(StateDirectoryLocked, lock.acquire)
        self.assertEqual(self.time.slept, [])

    def test_realClockByDefault(self) -> None:
        """
        By default the wait is the process's: C{time.sleep} and
        C{time.monotonic}.
        """
        lock = StateLock(self.path)
        self.assertIs(lock._sleep, lockModule.time.sleep)
        self.assertIs(lock._now, lockModule.time.monotonic)

    def test_noWait(self) -> None:
        """
        Taken with C{wait=0}, a lock held by a reader is refused at once
        (a caller that tries again on its reactor's clock).
        """
        self.other.acquire(reader=True)
        error = self.assertRaises(StateDirectoryLocked, self.starting().acquire, wait=0)
        self.assertEqual(error.holder, f"pid {os.getpid()}")
        self.assertEqual(self.time.slept, [])


class LockModeTests(SynchronousTestCase):
    """
    The lock file is made owner-only whenever it is opened.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        os.makedirs(self.path, 0o700)
        self.file = os.path.join(self.path, "lock")

    def existing(self, mode: int) -> None:
        """
        Leave a lock file of C{mode}, as a copy or a restore would.
        """
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.fchmod(fd, mode)
        os.close(fd)

    def test_existingMadeOwnerOnly(self) -> None:
        """
        A lock file readable by others is made 0600 when the lock is taken.
        """
        self.existing(0o644)
        lock = StateLock(self.path)
        self.addCleanup(lock.release)
        lock.acquire()
        self.assertEqual(os.stat(self.file).st_mode & 0o777, 0o600)

    def test_madeOwnerOnlyWhenRefused(self) -> None:
        """
        A process refused because another holds the lock still makes the
        file owner-only: the mode does not wait for a holder to let go.
        """
        holder = StateLock(self.path)
        self.addCleanup(holder.release)
        holder.acquire()
        os.chmod(self.file, 0o666)
        self.assertRaises(StateDirectoryLocked, StateLock(self.path).acquire)
        self.assertEqual(os.stat(self.file).st_mode & 0o777, 0o600)

    def test_failedModeCloses(self) -> None:
        """
        When the mode cannot be set, the error is raised and the file is
        closed, not held.
        """
        self.existing(0o644)

        def refuse(fd: int, mode: int) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        self.patch(lockModule.os, "fchmod", refuse)
        before = len(os.listdir("/proc/self/fd"))
        lock = StateLock(self.path)
        self.assertRaises(PermissionError, lock.acquire)
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)
        self.assertFalse(lock.held())


class RecordHolderTests(SynchronousTestCase):
    """
    L{StateLock.recordHolder}: the process that holds the lock now, after a
    fork, writes its pid over the one that took it.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        os.makedirs(self.path, 0o700)
        self.lock = StateLock(self.path)
        self.addCleanup(self.lock.release)

    def takenBy(self, pid: int, reader: bool = False) -> None:
        """
        Take the lock as the process C{pid} would (the one that forked).
        """
        patched = self.patch(lockModule.os, "getpid", lambda: pid)
        self.lock.acquire(reader=reader)
        patched.restore()

    def holder(self) -> str:
        """
        The lock file's text.
        """
        with open(os.path.join(self.path, "lock")) as stream:
            return stream.read()

    def test_recordsThisProcess(self) -> None:
        """
        The lock file names this process instead of the one that took the
        lock, the longer text of that one cut.
        """
        self.takenBy(12345678)
        self.lock.recordHolder()
        self.assertEqual(self.holder(), str(os.getpid()))
        self.assertTrue(self.lock.held())

    def test_readerStaysReader(self) -> None:
        """
        A reader's lock still says so.
        """
        self.takenBy(12345678, reader=True)
        self.lock.recordHolder()
        self.assertEqual(self.holder(), f"{os.getpid()} reader")

    def test_neverEmpty(self) -> None:
        """
        The new text is written before the old one is cut: a process
        looking meanwhile finds a pid, never an empty file (which it would
        wait for).
        """
        self.takenBy(12345678)
        seen = []
        original = os.ftruncate

        def ftruncate(fd: int, length: int) -> None:
            seen.append(os.pread(fd, 64, 0))
            original(fd, length)

        self.patch(lockModule.os, "ftruncate", ftruncate)
        self.lock.recordHolder()
        pid = str(os.getpid()).encode()
        self.assertEqual(seen, [pid.ljust(len(b"12345678"))])

    def test_neverMixed(self) -> None:
        """
        A shorter new text over a longer old one (left by a killed reader
        of a longer pid) is padded, not mixed with the old tail: a process
        looking before the rest is cut reads the new holder, not a reader,
        not a pid that neither process has.
        """
        fd = os.open(os.path.join(self.path, "lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"123456789 reader")
        os.close(fd)
        self.patch(lockModule.os, "getpid", lambda: 4242)
        seen = []
        original = os.ftruncate

        def ftruncate(fd: int, length: int) -> None:
            seen.append(lockModule._holder(fd))
            original(fd, length)

        self.patch(lockModule.os, "ftruncate", ftruncate)
        self.lock.acquire()
        self.assertEqual(seen, [("4242", False)])
        self.assertEqual(self.holder(), "4242")

    def test_longOldTextPaddedAsFarAsRead(self) -> None:
        """
        An old text longer than what a reader reads is padded only that
        far: a large lock file costs no large write, and a reader still
        finds the new holder alone.
        """
        fd = os.open(os.path.join(self.path, "lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"9" * 100_000)
        os.close(fd)
        written = []
        seen = []
        pwrite, ftruncate = os.pwrite, os.ftruncate

        def recordingPwrite(fd: int, data: bytes, offset: int) -> int:
            written.append(len(data))
            return pwrite(fd, data, offset)

        def looking(fd: int, length: int) -> None:
            seen.append(lockModule._holder(fd))
            ftruncate(fd, length)

        self.patch(lockModule.os, "pwrite", recordingPwrite)
        self.patch(lockModule.os, "ftruncate", looking)
        self.lock.acquire()
        self.assertEqual(written, [lockModule._HOLDER_TEXT])
        self.assertEqual(seen, [(str(os.getpid()), False)])
        self.assertEqual(self.holder(), str(os.getpid()))

    def test_notHeld(self) -> None:
        """
        Without the lock, nothing is written, nothing created.
        """
        self.lock.recordHolder()
        self.assertFalse(os.path.exists(os.path.join(self.path, "lock")))

    def test_failedWriteKeepsTheLock(self) -> None:
        """
        When the text cannot be written, the lock is still held: holding
        matters more than the text.
        """
        self.takenBy(12345678)

        def full(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(lockModule.os, "pwrite", full)
        self.lock.recordHolder()
        self.assertTrue(self.lock.held())
        self.assertEqual(self.holder(), "12345678")
