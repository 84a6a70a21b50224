"""
Tests for L{letsencrypt_resource.storage.readahead}: the parent's logic on
a fake process, then the real read-ahead process on real files, alone and
through L{DirectoryStorage} and the set loader.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.utils import getProcessValue
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.nodestorage import makeStorage
from letsencrypt_resource.safefs import HeldFolder, UnusablePath, openBelow
from letsencrypt_resource.setloading import SetLoader
from letsencrypt_resource.storage import directory as directory_module
from letsencrypt_resource.storage.directory import DirectoryStorage, InThisThread, readFiles
from letsencrypt_resource.storage.fileread import TooLarge, readEach
from letsencrypt_resource.storage.interface import MAX_VALUE, StorageError
from letsencrypt_resource.storage.readahead import (
    HELD_KEYS,
    HELLO_SECONDS,
    STALL_SECONDS,
    STOP_WAIT,
    ReadAhead,
)
from letsencrypt_resource.storage.readerchild import DATA, HEADER, HELLO_FRAME, frame
from letsencrypt_resource.storage.readerprocess import REAP_POLL
from letsencrypt_resource.storage.records import Records, certificateKey, renewalKey

from .helpers.fakeprocess import ProcessReactor
from .helpers.files import OTHER_UID, runningAs, writeBytes
from .helpers.resourcecase import resourceOptions
from .helpers.unprivileged import requireUsers

KEYS = ["renewal/a.json", "certificates/a.pem", "renewal/b.json", "certificates/b.pem"]


def eventIDs(observer: EventLoggingObserver) -> list[int]:
    """
    The IDs of the events of the read-ahead C{observer} saw.
    """
    return [e["event_id"] for e in observer if e.get("event_id") in (20205, 20206, 20207)]


class ParentTests(SynchronousTestCase):
    """
    The parent's side of a read-ahead, on a fake process: the frames it is
    given reach the takes; a process that misbehaves is killed, logged
    once, and leaves its keys to the storage's thread.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        root = os.open(self.mktemp(), os.O_RDONLY | os.O_CREAT, 0o600)
        self.addCleanup(os.close, root)
        self.ahead = ReadAhead(self.reactor, "/state", KEYS, MAX_VALUE)
        self.ahead.start(root)
        self.process = self.reactor.processes[0]
        self.addCleanup(self.ahead.stop)
        self.give(HELLO_FRAME)

    def give(self, *frames: bytes) -> None:
        """
        The process writes C{frames}.
        """
        self.ahead.received(b"".join(frames))

    def exit(self, code: int = 0, signal: int | None = None) -> None:
        """
        The process exits with C{code} or C{signal}, and its frames' pipe
        closes.
        """
        self.process.exit(code, signal)
        for reader in self.reactor.getReaders():
            reader.connectionLost(Failure(ConnectionDone()))

    def test_command(self) -> None:
        """
        The process is this Python, isolated, with an empty environment,
        the state directory's descriptor as its descriptor 3 and reading
        the keys on its standard input.
        """
        args = self.process.args
        self.assertEqual(args[1:3], ["-I", "-S"])
        self.assertEqual(args[-2:], ["/state", str(MAX_VALUE)])
        self.assertEqual(self.process.env, {})

    def test_takeWaitsForFrames(self) -> None:
        """
        A take fires once the frames of all its keys have arrived, with
        their values.
        """
        taken = self.ahead.take(KEYS[:2])
        self.give(frame(1, b"cert"))
        self.assertNoResult(taken)
        self.give(frame(0, None))
        self.assertEqual(
            self.successResultOf(taken), {"renewal/a.json": None, "certificates/a.pem": b"cert"}
        )
        self.assertFalse(self.ahead.holds(KEYS[0]))
        self.assertTrue(self.ahead.holds(KEYS[2]))

    def test_heldUntilTaken(self) -> None:
        """
        Frames that arrive before their take are held for it, and given
        once.
        """
        self.give(frame(0, b"state"), frame(1, TooLarge("/state/certificates/a.pem")))
        got = self.successResultOf(self.ahead.take(KEYS[:2]))
        self.assertEqual(got["renewal/a.json"], b"state")
        self.assertIsInstance(got["certificates/a.pem"], TooLarge)
        self.assertFalse(self.ahead.holds(KEYS[1]))

    def test_frameSplitAnywhere(self) -> None:
        """
        A frame given one byte at a time is read whole.
        """
        taken = self.ahead.take(KEYS[:1])
        for byte in frame(0, b"state"):
            self.give(bytes([byte]))
        self.assertEqual(self.successResultOf(taken), {"renewal/a.json": b"state"})

    def assertGivenUp(self, event: int = 20205) -> None:
        """
        The process was killed and C{event} logged once; no key is held.
        """
        self.assertEqual(eventIDs(self.events), [event])
        self.assertEqual(self.process.signals, [signal.SIGKILL])
        self.assertFalse(any(self.ahead.holds(key) for key in KEYS))

    def test_malformedFrame(self) -> None:
        """
        A frame of an unknown kind kills the process; the take gets what
        arrived before, and more frames are ignored.
        """
        taken = self.ahead.take(KEYS[:2])
        self.give(frame(0, b"state"))
        self.give(HEADER.pack(9, 1, 0))
        self.assertEqual(self.successResultOf(taken), {"renewal/a.json": b"state"})
        self.give(frame(2, b"late"))
        self.assertGivenUp()
        self.assertIn("/state", self.events[0]["directory"])

    def test_oversizeFrame(self) -> None:
        """
        A frame longer than a value can be is refused from its header,
        before its payload is waited for.
        """
        self.give(HEADER.pack(DATA, 0, MAX_VALUE + 1))
        self.assertGivenUp()

    def test_duplicateFrame(self) -> None:
        """
        A second frame of a key, or one of a key not given, kills the
        process.
        """
        self.give(frame(0, b"one"), frame(0, b"two"))
        self.assertGivenUp()

    def test_unknownKey(self) -> None:
        """
        A frame of a key number the process was not given kills it.
        """
        self.give(frame(len(KEYS), b"one"))
        self.assertGivenUp()

    def test_errorNamesAnotherPath(self) -> None:
        """
        An error that names a path other than its key's (or a folder on
        its way) kills the process.
        """
        self.give(frame(0, OSError(13, "Permission denied", "/etc/shadow")))
        self.assertGivenUp()

    def test_errorOfTheFolder(self) -> None:
        """
        An error that names a folder on the key's way is its key's.
        """
        self.give(frame(0, OSError(13, "Permission denied", "/state/renewal")))
        error = self.successResultOf(self.ahead.take(KEYS[:1]))["renewal/a.json"]
        self.assertEqual((error.errno, error.filename), (13, "/state/renewal"))  # type: ignore[union-attr]

    def test_endedEarly(self) -> None:
        """
        A process that ends before every frame arrived is logged; the
        waiting take fires with what it has.
        """
        taken = self.ahead.take(KEYS[:2])
        self.give(frame(0, b"state"))
        self.exit(1)
        self.assertEqual(self.successResultOf(taken), {"renewal/a.json": b"state"})
        self.assertEqual(eventIDs(self.events), [20205])

    def test_endedAfterAll(self) -> None:
        """
        A process that ends after every frame logs nothing; the values it
        gave are still taken.
        """
        self.give(*(frame(index, b"x") for index in range(len(KEYS))))
        self.exit(0)
        self.assertEqual(eventIDs(self.events), [])
        self.assertEqual(len(self.successResultOf(self.ahead.take(KEYS))), 4)
        self.assertTrue(self.ahead.finished)

    def test_errorOutputLogged(self) -> None:
        """
        What the process writes on its error output is logged, bounded.
        """
        self.process.protocol.childDataReceived(2, b"x" * 10_000)
        self.give(*(frame(index, b"x") for index in range(len(KEYS))))
        self.exit(0)
        self.assertEqual(eventIDs(self.events), [20207])
        self.assertEqual(len(self.events[0]["output"]), 4096)

    def test_stalled(self) -> None:
        """
        A take that waits L{STALL_SECONDS} for a frame kills the process.
        """
        taken = self.ahead.take(KEYS[:1])
        self.reactor.advance(STALL_SECONDS - 1)
        self.assertNoResult(taken)
        self.reactor.advance(1)
        self.assertEqual(self.successResultOf(taken), {})
        self.assertGivenUp()

    def test_notStalledWithoutTake(self) -> None:
        """
        With no take waiting, the process is not timed.
        """
        self.reactor.advance(STALL_SECONDS * 2)
        self.assertEqual(eventIDs(self.events), [])

    def test_forgotten(self) -> None:
        """
        A key forgotten (being written) is no longer held: its frame is
        ignored, and a take waiting for it fires without it.
        """
        self.give(frame(0, b"old"))
        taken = self.ahead.take(KEYS[1:3])
        self.ahead.forget(KEYS[0])
        self.ahead.forget(KEYS[2])
        self.assertFalse(self.ahead.holds(KEYS[0]))
        self.give(frame(2, b"old"), frame(1, b"cert"))
        self.assertEqual(self.successResultOf(taken), {"certificates/a.pem": b"cert"})

    def test_skippedLetGo(self) -> None:
        """
        The values held of keys planned before those taken are let go.
        """
        self.give(frame(0, b"state"), frame(1, b"cert"), frame(2, b"b"))
        self.successResultOf(self.ahead.take(KEYS[2:3]))
        self.assertFalse(self.ahead.holds(KEYS[0]))

    def test_pausedWhenFull(self) -> None:
        """
        With L{HELD_KEYS} values held and no take waiting, the pipe is no
        longer read; a take reads it again.
        """
        keys = [f"renewal/{n}.json" for n in range(HELD_KEYS + 1)]
        ahead = ReadAhead(self.reactor, "/state", keys, MAX_VALUE)
        root = os.open(".", os.O_RDONLY)
        try:
            ahead.start(root)
        finally:
            os.close(root)
        self.addCleanup(ahead.stop)
        readers = self.reactor.getReaders()
        self.assertEqual(len(readers), 2)
        ahead.received(HELLO_FRAME + b"".join(frame(n, b"") for n in range(HELD_KEYS)))
        self.assertEqual(len(self.reactor.getReaders()), 1)
        ahead.take(keys[-1:])
        self.assertEqual(len(self.reactor.getReaders()), 2)

    def test_stopKills(self) -> None:
        """
        Stopping kills the process; it fires once the process ended.
        """
        stopped = self.ahead.stop()
        self.assertEqual(self.process.signals, [signal.SIGKILL])
        self.assertNoResult(stopped)
        self.exit(signal=9)
        self.successResultOf(stopped)
        self.assertEqual(eventIDs(self.events), [])

    def test_stopNotReaped(self) -> None:
        """
        Stopping does not wait more than L{STOP_WAIT} seconds for a
        process that is never reaped.
        """
        stopped = self.ahead.stop()
        self.reactor.advance(STOP_WAIT)
        self.successResultOf(stopped)

    def test_notStarted(self) -> None:
        """
        A process that cannot be started is logged, and holds no key.
        """
        self.reactor.refuse = OSError(11, "Resource temporarily unavailable")
        ahead = ReadAhead(self.reactor, "/state", KEYS, MAX_VALUE)
        ahead.start(0)
        self.assertFalse(ahead.holds(KEYS[0]))
        self.assertEqual(eventIDs(self.events), [20206])
        self.successResultOf(ahead.stop())

    def test_keyWithSeparator(self) -> None:
        """
        A key holding a zero byte (no valid key does) starts no process.
        """
        ahead = ReadAhead(self.reactor, "/state", ["a\0b", "c"], MAX_VALUE)
        ahead.start(0)
        self.assertEqual(len(self.reactor.processes), 1)
        self.assertEqual(eventIDs(self.events), [20206])

    def test_noHello(self) -> None:
        """
        A process that writes no first frame within L{HELLO_SECONDS} (not
        this Python, or hung) is killed and logged as not started; a take
        waiting for it fires at once, without its keys.
        """
        ahead = ReadAhead(self.reactor, "/state", KEYS, MAX_VALUE)
        ahead.start(0)
        self.addCleanup(ahead.stop)
        process = self.reactor.processes[1]
        taken = ahead.take(KEYS[:1])
        self.reactor.advance(HELLO_SECONDS - 0.01)
        self.assertNoResult(taken)
        self.reactor.advance(0.01)
        self.assertEqual(self.successResultOf(taken), {})
        self.assertEqual(eventIDs(self.events), [20206])
        self.assertEqual(process.signals, [signal.SIGKILL])

    def test_helloInTime(self) -> None:
        """
        A process that greeted in time is not given up when
        L{HELLO_SECONDS} have passed.
        """
        self.reactor.advance(HELLO_SECONDS * 2)
        self.assertEqual(eventIDs(self.events), [])
        self.assertTrue(self.ahead.holds(KEYS[0]))

    def test_notHelloFirst(self) -> None:
        """
        A process whose first frame is not the greeting is given up.
        """
        ahead = ReadAhead(self.reactor, "/state", KEYS, MAX_VALUE)
        ahead.start(0)
        self.addCleanup(ahead.stop)
        ahead.received(frame(0, b"state"))
        self.assertEqual(eventIDs(self.events), [20205])
        self.assertFalse(ahead.holds(KEYS[0]))

    def test_duplicateKeyTaken(self) -> None:
        """
        A key asked twice in one take is given once, at once, without
        waiting for a frame that never comes.
        """
        self.give(frame(0, b"state"))
        taken = self.ahead.take([KEYS[0], KEYS[0], KEYS[1]])
        self.give(frame(1, b"cert"))
        self.assertEqual(self.successResultOf(taken), {KEYS[0]: b"state", KEYS[1]: b"cert"})
        self.assertEqual(eventIDs(self.events), [])

    def endPipe(self, code: int) -> None:
        """
        The frames' pipe ends, and the process exits with C{code}, its end
        not told (a reactor without C{SIGCHLD} handling).
        """
        self.process.exit(code, told=False)
        for reader in self.reactor.getReaders():
            reader.connectionLost(Failure(ConnectionDone()))

    def test_pipeEndedEarly(self) -> None:
        """
        When the frames' pipe ends with frames missing, the process is
        given up at once, before its end is told; it is then reaped with
        C{reapProcess} after L{REAP_POLL}.
        """
        taken = self.ahead.take(KEYS[:2])
        self.give(frame(0, b"state"))
        self.endPipe(1)
        self.assertEqual(self.successResultOf(taken), {"renewal/a.json": b"state"})
        self.assertEqual(eventIDs(self.events), [20205])
        stopped = self.ahead.stop()
        self.assertNoResult(stopped)
        self.reactor.advance(REAP_POLL)
        self.assertEqual(self.process.reaps, 1)
        self.successResultOf(stopped)

    def test_reapedWithoutSigchld(self) -> None:
        """
        A process that gave every frame and ended is reaped by polling:
        stopping does not wait L{STOP_WAIT}, and nothing is logged.
        """
        self.give(*(frame(index, b"x") for index in range(len(KEYS))))
        self.endPipe(0)
        self.reactor.advance(REAP_POLL)
        self.assertTrue(self.ahead.finished)
        self.successResultOf(self.ahead.stop())
        self.assertEqual(eventIDs(self.events), [])


def _makeState(path: str) -> str:
    """
    A state directory at C{path}, 0700, with folders C{renewal} and
    C{certificates}.
    """
    os.mkdir(path, 0o700)
    for folder in ("renewal", "certificates"):
        os.mkdir(os.path.join(path, folder), 0o700)
    return os.path.abspath(path)


def _described(value: object) -> object:
    """
    C{value}, or, for an error, its type and text: how two reads' results
    are compared.
    """
    return (type(value), str(value)) if isinstance(value, Exception) else value


class ProcessTests(TestCase):
    """
    The real read-ahead process, on a real state directory: it reads under
    the rules of the storage's thread.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.state = _makeState(self.mktemp())

    async def readAhead(self, keys: list[str]) -> dict[str, Any]:
        """
        What the read-ahead process gives for C{keys}, all taken at once.
        """
        folder = HeldFolder(self.state)
        self.addCleanup(folder.close)
        ahead = ReadAhead(reactor, self.state, keys, MAX_VALUE)
        with folder.open((), create=False) as root:
            ahead.start(root)
        got = await ahead.take(keys)
        await ahead.stop()
        return got

    def threadReads(self, keys: list[str]) -> dict[str, Any]:
        """
        What the storage thread's reads give for C{keys}, each alone.
        """
        folder = HeldFolder(self.state)
        self.addCleanup(folder.close)

        def opener(parts: Any) -> Any:
            return folder.open(parts, create=False)

        return {
            key: value
            for key in keys
            for _, value in readEach(opener, folder.path, [key], MAX_VALUE)
        }

    async def test_sameRules(self) -> None:
        """
        Each file read by the process gives what the thread's read gives:
        content, missing, a link (file or folder) refused, a fifo or a
        folder that is not a regular file, too large, a name too long,
        a missing folder.
        """
        s = self.state
        writeBytes(f"{s}/renewal/a.json", b"{}")
        writeBytes(f"{s}/certificates/empty.pem", b"")
        writeBytes(f"{s}/certificates/large.pem", b"x" * (MAX_VALUE + 1))
        writeBytes(f"{s}/certificates/full.pem", b"y" * MAX_VALUE)
        os.symlink(f"{s}/renewal/a.json", f"{s}/renewal/link.json")
        os.mkfifo(f"{s}/renewal/fifo.json", 0o600)
        os.mkdir(f"{s}/renewal/folder.json", 0o700)
        os.mkdir(f"{s}/elsewhere", 0o700)
        writeBytes(f"{s}/elsewhere/x.pem", b"outside")
        os.symlink(f"{s}/elsewhere", f"{s}/linked")
        keys = [
            "renewal/a.json",
            "certificates/empty.pem",
            "certificates/large.pem",
            "certificates/full.pem",
            "renewal/link.json",
            "renewal/fifo.json",
            "renewal/folder.json",
            "renewal/missing.json",
            "linked/x.pem",
            "gone/x.pem",
            "renewal/" + "n" * 300,
        ]
        got = await self.readAhead(keys)
        expected = self.threadReads(keys)
        self.assertEqual(
            {k: _described(v) for k, v in got.items()},
            {k: _described(v) for k, v in expected.items()},
        )
        self.assertEqual(got["certificates/full.pem"], b"y" * MAX_VALUE)
        self.assertIsInstance(got["certificates/large.pem"], TooLarge)
        self.assertIn("symbolic link", str(got["linked/x.pem"]))
        self.assertEqual(got["renewal/" + "n" * 300].errno, 36)  # type: ignore[union-attr]
        self.assertEqual(eventIDs(self.events), [])

    async def test_unreadableAsUser(self) -> None:
        """
        Run as another user (as twistd runs it once it switched user), the
        process cannot read a file that user cannot, and says so as the
        thread does.
        """
        s = self.state
        writeBytes(f"{s}/renewal/secret.json", b"{}")
        os.chmod(f"{s}/renewal/secret.json", 0)
        for path in (s, f"{s}/renewal", f"{s}/certificates", f"{s}/renewal/secret.json"):
            os.chown(path, OTHER_UID, OTHER_UID)
        os.chmod(os.path.dirname(s), 0o755)
        keys = ["renewal/secret.json"]
        checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.patch(sys, "executable", requireUsers(checkout).executable)
        with runningAs(OTHER_UID):
            got = await self.readAhead(keys)
            expected = self.threadReads(keys)
        self.assertEqual(got["renewal/secret.json"].errno, 13)  # type: ignore[union-attr]
        self.assertEqual(_described(got["renewal/secret.json"]), _described(expected[keys[0]]))


class StorageTests(TestCase):
    """
    A L{DirectoryStorage} with read-ahead on: the values of the keys
    planned come from the process, the others from its thread, and each
    is the file's content when it is asked for.
    """

    def setUp(self) -> None:
        self.patch(directory_module, "READ_AHEAD_MIN", 2)
        self.patch(directory_module, "READ_AHEAD_FROM", 0)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.state = _makeState(self.mktemp())
        self.storage = DirectoryStorage(self.state, reactor, readAhead=True)
        self.addCleanup(self.storage.close)

    async def plan(self, keys: list[str]) -> ReadAhead | None:
        """
        Plan the reads of C{keys}, and wait until the storage's worker has
        opened the state directory for the process.

        @return: The read-ahead.
        """
        self.storage.planReads(keys)
        await self.storage._workers.run(lambda: None)
        return self.storage._reads._ahead

    async def descriptors(self) -> list[str]:
        """
        This process's open descriptors, once a first process was spawned
        (the reactor opens its child-watching pipe then).
        """
        await getProcessValue(sys.executable, ["-c", ""])
        return sorted(os.listdir("/proc/self/fd"))

    def fill(self, count: int, size: int) -> list[str]:
        """
        Write the records of C{count} sets, C{size} bytes each.

        @return: Their keys, in order.
        """
        keys = []
        for n in range(count):
            for key in (renewalKey((f"s{n}.example",)), certificateKey((f"s{n}.example",))):
                writeBytes(os.path.join(self.state, key), key.encode("ascii").ljust(size, b"."))
                keys.append(key)
        return keys

    async def loadAll(self, keys: list[str]) -> dict[str, Any]:
        """
        Load C{keys} by batches of 128, as the set loader does.
        """
        values: dict[str, Any] = {}
        for start in range(0, len(keys), 128):
            values.update(await self.storage.loadMany(keys[start : start + 128]))
        return values

    def expected(self, keys: list[str]) -> dict[str, Any]:
        """
        What the storage's thread reads for C{keys}.
        """
        folder = HeldFolder(self.state)
        self.addCleanup(folder.close)
        return readFiles(folder, keys)

    async def test_planned(self) -> None:
        """
        Planned keys are read by the process (the thread reads those not
        planned), and every value is right.
        """
        keys = self.fill(300, 700)
        ahead = await self.plan(keys[:400])
        assert ahead is not None
        self.assertIsNotNone(ahead.pid)
        self.assertEqual(await self.loadAll(keys), self.expected(keys))
        self.assertEqual(eventIDs(self.events), [])

    async def test_firstKeysLeftToThread(self) -> None:
        """
        The first L{READ_AHEAD_FROM} keys planned are left to the thread,
        which reads them while the process starts.
        """
        self.patch(directory_module, "READ_AHEAD_FROM", 10)
        keys = self.fill(10, 10)
        ahead = await self.plan(keys)
        assert ahead is not None
        self.assertEqual([ahead.holds(key) for key in keys], [False] * 10 + [True] * 10)
        self.assertEqual(await self.loadAll(keys), self.expected(keys))

    async def test_belowThreshold(self) -> None:
        """
        Fewer keys than L{READ_AHEAD_MIN} start no process.
        """
        self.patch(directory_module, "READ_AHEAD_MIN", 10)
        self.storage.planReads(self.fill(4, 10))
        self.assertIsNone(self.storage._reads._ahead)

    async def test_offByDefault(self) -> None:
        """
        A storage not asked to read ahead starts no process.
        """
        storage = DirectoryStorage(self.state, reactor)
        self.addCleanup(storage.close)
        storage.planReads(self.fill(4, 10))
        self.assertIsNone(storage._reads._ahead)

    async def test_storeDuringReadAhead(self) -> None:
        """
        A key stored or deleted after the plan is read fresh: the value
        read ahead before the write is never given.
        """
        keys = self.fill(300, 700)
        ahead = await self.plan(keys)
        assert ahead is not None
        # Until the old values were read ahead and wait to be taken.
        for _ in range(1000):
            if keys[7] in ahead._held:
                break
            await deferLater(reactor, 0.01)
        self.assertIn(keys[5], ahead._held)
        await self.storage.store(keys[5], b"fresh")
        await self.storage.delete(keys[7])
        values = await self.loadAll(keys)
        self.assertEqual(values[keys[5]], b"fresh")
        self.assertIsNone(values[keys[7]])
        self.assertEqual(values, self.expected(keys))

    async def test_killedMidStream(self) -> None:
        """
        A process killed while it streams is logged once, and the keys it
        had not given are read by the thread: nothing is lost.
        """
        keys = self.fill(2000, 4000)
        ahead = await self.plan(keys)
        assert ahead is not None and ahead.pid is not None
        first = await self.storage.loadMany(keys[:128])
        os.kill(ahead.pid, signal.SIGKILL)
        rest = await self.loadAll(keys[128:])
        self.assertEqual({**first, **rest}, self.expected(keys))
        self.assertEqual(eventIDs(self.events), [20205])
        self.assertIn(self.state, self.events[0]["log_format"].format(**self.events[0]))

    async def test_stopReaps(self) -> None:
        """
        Closing the storage during a read-ahead kills the process and
        waits until it is reaped; no descriptor is left open.
        """
        keys = self.fill(2000, 4000)
        before = await self.descriptors()
        ahead = await self.plan(keys)
        assert ahead is not None and ahead.pid is not None
        pid = ahead.pid
        await self.storage.close()
        with self.assertRaises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self.assertEqual(sorted(os.listdir("/proc/self/fd")), before)

    async def test_notPython(self) -> None:
        """
        When C{sys.executable} is not this Python (an embedding host's
        program that hangs), the helper is given up after
        L{HELLO_SECONDS}, not L{STALL_SECONDS}, and every value is read by
        the thread.
        """
        script = self.mktemp()
        writeBytes(script, b"#!/bin/sh\nexec sleep 60\n")
        os.chmod(script, 0o700)
        self.patch(sys, "executable", script)
        keys = self.fill(300, 100)
        await self.plan(keys)
        started = time.monotonic()
        self.assertEqual(await self.loadAll(keys), self.expected(keys))
        self.assertLess(time.monotonic() - started, STALL_SECONDS / 2)
        self.assertEqual(eventIDs(self.events), [20206])

    async def test_noDescriptorLeft(self) -> None:
        """
        A read-ahead read to its end leaves no descriptor open.
        """
        keys = self.fill(100, 100)
        before = await self.descriptors()
        self.storage.planReads(keys)
        await self.loadAll(keys)
        await self.storage.close()
        self.assertEqual(sorted(os.listdir("/proc/self/fd")), before)


class _Queue:
    """
    A storage's workers that run their jobs, in order, only when told.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def run(self, f: Any, *args: Any) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.jobs.append((f, args, done))
        return done

    def runAll(self) -> None:
        """
        Run the jobs queued, and those they queue.
        """
        while self.jobs:
            f, args, done = self.jobs.pop(0)
            maybeDeferred(f, *args).chainDeferred(done)


class FakeProcessStorageTests(SynchronousTestCase):
    """
    A L{DirectoryStorage} with read-ahead on a fake process: when the
    process is started, what it is given, and what the storage waits for.
    """

    def setUp(self) -> None:
        self.patch(directory_module, "READ_AHEAD_MIN", 2)
        self.patch(directory_module, "READ_AHEAD_FROM", 0)
        self.reactor = ProcessReactor()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.state = _makeState(self.mktemp())
        self.keys = []
        for name in ("a", "b"):
            for key in (renewalKey((f"{name}.example",)), certificateKey((f"{name}.example",))):
                writeBytes(os.path.join(self.state, key), b"old")
                self.keys.append(key)

    def storage(self, workers: Any = None, readAhead: bool = True) -> DirectoryStorage:
        """
        A storage on the state directory, its file operations in this
        thread unless C{workers} are given.
        """
        storage = DirectoryStorage(
            self.state, self.reactor, workers=workers or InThisThread(), readAhead=readAhead
        )
        self.addCleanup(storage.close)
        return storage

    def test_otherStorageWrites(self) -> None:
        """
        A key stored through another storage on the same directory is not
        given from what was read ahead before: it is read again.
        """
        reading, other = self.storage(), self.storage(readAhead=False)
        reading.planReads(self.keys)
        self.reactor.processes[0].protocol.frames(HELLO_FRAME + frame(0, b"old"))
        self.successResultOf(other.store(self.keys[0], b"fresh"))
        got = self.successResultOf(reading.loadMany(self.keys[:1]))
        self.assertEqual(got, {self.keys[0]: b"fresh"})

    def test_planAfterQueuedWrites(self) -> None:
        """
        The process is started from the workers' queue: the writes queued
        before the plan have landed when it starts, and the reactor
        thread touches no file to plan.
        """
        queue = _Queue()
        storage = self.storage(queue)
        stored = storage.store(self.keys[0], b"fresh")
        storage.planReads(self.keys)
        self.assertEqual(self.reactor.processes, [])
        seen = []
        spawn = self.reactor.spawnProcess

        def spawned(*args: Any, **kwargs: Any) -> Any:
            with open(os.path.join(self.state, self.keys[0]), "rb") as f:
                seen.append(f.read())
            return spawn(*args, **kwargs)

        self.patch(self.reactor, "spawnProcess", spawned)
        queue.runAll()
        self.successResultOf(stored)
        self.assertEqual(seen, [b"fresh"])
        self.assertEqual(len(self.reactor.processes), 1)

    def test_closeWaitsForTheEnd(self) -> None:
        """
        Closing the storage kills the process and fires only once its end
        is told.
        """
        storage = self.storage()
        storage.planReads(self.keys)
        process = self.reactor.processes[0]
        closed = storage.close()
        self.assertEqual(process.signals, [signal.SIGKILL])
        self.assertNoResult(closed)
        process.exit(signal=signal.SIGKILL)
        self.successResultOf(closed)

    def test_closedBeforeStart(self) -> None:
        """
        A storage closed before its workers opened the directory for the
        process starts none, and does not wait for one.
        """
        queue = _Queue()
        storage = self.storage(queue)
        storage.planReads(self.keys)
        closed = storage.close()
        queue.runAll()
        self.successResultOf(closed)
        self.assertEqual(self.reactor.processes, [])
        self.assertEqual(eventIDs(self.events), [])

    def test_badKeysLeftOut(self) -> None:
        """
        The keys planned that are not valid are not given to the process.
        """
        bad = ["../x", ".leases/a", "renewal//a.json", "/etc/passwd"]
        storage = self.storage()
        storage.planReads(bad + self.keys)
        ahead = storage._reads._ahead
        assert ahead is not None
        self.assertEqual([ahead.holds(key) for key in bad], [False] * len(bad))
        self.assertTrue(all(ahead.holds(key) for key in self.keys))

    def assertNoReadAhead(self) -> None:
        """
        Planning starts no process and logs nothing.
        """
        self.storage().planReads(self.keys)
        self.assertEqual(self.reactor.processes, [])
        self.assertEqual(eventIDs(self.events), [])

    def test_frozen(self) -> None:
        """
        In a frozen application, whose C{sys.executable} is itself, no
        process is tried.
        """
        sys.frozen = True  # type: ignore[attr-defined]
        self.addCleanup(delattr, sys, "frozen")
        self.assertNoReadAhead()

    def test_noExecutable(self) -> None:
        """
        Without a C{sys.executable}, no process is tried.
        """
        self.patch(sys, "executable", "")
        self.assertNoReadAhead()

    def test_noMemfd(self) -> None:
        """
        Without C{os.memfd_create} (not Linux), no process is tried.
        """
        saved = os.memfd_create
        del os.memfd_create
        self.addCleanup(setattr, os, "memfd_create", saved)
        self.assertNoReadAhead()

    def test_noPipeResize(self) -> None:
        """
        Without C{fcntl.F_SETPIPE_SZ} (not Linux), the process starts with
        the pipe as it is.
        """
        saved = fcntl.F_SETPIPE_SZ
        del fcntl.F_SETPIPE_SZ
        self.addCleanup(setattr, fcntl, "F_SETPIPE_SZ", saved)
        self.storage().planReads(self.keys)
        self.assertEqual(len(self.reactor.processes), 1)
        self.assertEqual(eventIDs(self.events), [])

    def test_openBelowRefusesNames(self) -> None:
        """
        C{openBelow} refuses a part that is not a file name with
        L{UnusablePath}, which the process reports as its key's.
        """
        root = os.open(self.state, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, root)
        for parts in ([".."], ["renewal", ""], ["a/b"]):
            with self.assertRaises(UnusablePath), openBelow(root, self.state, parts):
                pass


class _Taker:
    """
    A set loader's taker that keeps what it is given.
    """

    def __init__(self) -> None:
        self.errors: list[StorageError] = []

    def ignored(self, certificate: ManagedCertificate, error: StorageError) -> None:
        self.errors.append(error)

    def acceptable(self, certificate: ManagedCertificate, stored: Any) -> bool:
        return True

    def putInService(self, certificate: ManagedCertificate, stored: Any) -> None:
        raise AssertionError("no certificate is stored")


class NodeTests(TestCase):
    """
    A node's storage on its state directory alone reads ahead at start-up,
    its sets' records planned by the set loader.
    """

    def test_nodeStorageReadsAhead(self) -> None:
        """
        The storage of a node without a cluster reads ahead.
        """
        options = resourceOptions(stateDirectory=_makeState(self.mktemp()))
        storage = makeStorage(options, reactor, None, lambda: None)
        self.addCleanup(storage.close)
        self.assertTrue(storage._reads._readAhead)  # type: ignore[attr-defined]

    async def test_loaderPlans(self) -> None:
        """
        The set loader plans the records of every set it loads, in the
        order it loads them, and each set takes back its own.
        """
        self.patch(directory_module, "READ_AHEAD_MIN", 2)
        self.patch(directory_module, "READ_AHEAD_FROM", 0)
        state = _makeState(self.mktemp())
        storage = DirectoryStorage(state, reactor, readAhead=True)
        self.addCleanup(storage.close)
        planned: list[list[str]] = []
        plan = storage.planReads
        self.patch(storage, "planReads", lambda keys: (planned.append(keys), plan(keys)))
        sets = [(f"s{n}.example",) for n in range(200)]
        for domains in sets:
            writeBytes(os.path.join(state, renewalKey(domains)), b'{"nextAttempt": 0}')
        taker = _Taker()
        loader = SetLoader(Records(storage), taker, reactor, 86400, Logger())
        certificates = [ManagedCertificate(domains, "settings") for domains in sets]
        await loader.loadAll(certificates)
        self.assertEqual(len(planned), 1)
        self.assertEqual(planned[0][:2], [renewalKey(sets[0]), certificateKey(sets[0])])
        self.assertEqual([c.nextAttempt for c in certificates], [0] * 200)
        self.assertEqual(taker.errors, [])
