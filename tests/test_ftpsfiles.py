"""
Tests for L{letsencrypt_resource.ftpsfiles} and the resumed uploads of
L{letsencrypt_resource.ftpsshell}: the file reads and writes of FTPS
transfers, with a thread runner whose work the tests finish by hand.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import ftpsshell
from letsencrypt_resource.folder import openFolder
from letsencrypt_resource.ftpsfiles import (
    CHUNK_SIZE,
    UPLOAD_BUFFER,
    StoppedProducing,
    ThreadedFileSender,
    ThreadedFileWriter,
)
from letsencrypt_resource.ftpsshell import ConfinedShell, RestartInvalid
from tests.helpers.transferfakes import KeepingConsumer, QueuedThreads, RecordingProducer


def _isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class SenderTests(SynchronousTestCase):
    """
    Tests for L{ThreadedFileSender}.
    """

    def setUp(self) -> None:
        self.content = os.urandom(3 * CHUNK_SIZE + 10)
        path = self.mktemp()
        with open(path, "wb") as file:
            file.write(self.content)
        self.fd = os.open(path, os.O_RDONLY)
        self.addCleanup(lambda: _isOpen(self.fd) and os.close(self.fd))
        self.threads = QueuedThreads()
        self.consumer = KeepingConsumer()

    def test_sendsFromOffset(self) -> None:
        """
        The file is sent from the offset to its end in chunks, each read in
        a thread, one read at a time; then the sender unregisters and the
        file is closed.
        """
        sender = ThreadedFileSender(self.fd, 5, self.threads)
        done = sender.beginFileTransfer(self.consumer)
        self.assertIs(self.consumer.producer, sender)
        while self.threads.waiting:
            self.assertEqual(len(self.threads.waiting), 1)
            self.threads.runNext()
        self.successResultOf(done)
        self.assertEqual(b"".join(self.consumer.chunks), self.content[5:])
        self.assertEqual(len(self.consumer.chunks), 4)
        self.assertTrue(self.consumer.unregistered)
        self.assertFalse(_isOpen(self.fd))

    def test_pausedReadsOneAhead(self) -> None:
        """
        While the consumer is paused, one chunk is read ahead and held, no
        more; it is written when the consumer resumes.
        """
        sender = ThreadedFileSender(self.fd, 0, self.threads)
        sender.beginFileTransfer(self.consumer)
        self.threads.runNext()
        sender.pauseProducing()
        self.threads.runNext()
        self.assertEqual((len(self.consumer.chunks), self.threads.waiting), (1, []))
        sender.resumeProducing()
        self.assertEqual(len(self.consumer.chunks), 2)
        self.assertEqual(len(self.threads.waiting), 1)

    def test_stoppedDuringRead(self) -> None:
        """
        A transfer stopped while a read runs fails at once, and its file is
        closed only once the read ended, never under it.
        """
        sender = ThreadedFileSender(self.fd, 0, self.threads)
        done = sender.beginFileTransfer(self.consumer)
        sender.stopProducing()
        self.failureResultOf(done, StoppedProducing)
        self.assertTrue(_isOpen(self.fd))
        self.threads.runNext()
        self.assertFalse(_isOpen(self.fd))
        self.assertEqual((self.consumer.chunks, self.consumer.unregistered), ([], False))

    def test_readFails(self) -> None:
        """
        A read that fails fails the transfer, closes the file, and leaves
        the consumer registered (its connection is cut, not closed as if
        complete).
        """
        sender = ThreadedFileSender(self.fd, 0, self.threads)
        done = sender.beginFileTransfer(self.consumer)
        result, _, _ = self.threads.waiting.pop()
        result.errback(Failure(OSError(errno.EIO, "Input/output error")))
        self.failureResultOf(done, OSError)
        self.assertFalse(_isOpen(self.fd))
        self.assertFalse(self.consumer.unregistered)


class WriterTests(SynchronousTestCase):
    """
    Tests for L{ThreadedFileWriter}.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT)
        self.addCleanup(os.close, self.fd)
        self.threads = QueuedThreads()
        self.writer = ThreadedFileWriter(self.fd, self.threads)
        self.producer = RecordingProducer()
        self.writer.registerProducer(self.producer, True)

    def written(self) -> bytes:
        with open(self.path, "rb") as file:
            return file.read()

    def test_writesByChunks(self) -> None:
        """
        What comes is written a chunk at a time, one write at a time, in a
        thread; L{ThreadedFileWriter.flush} writes the rest.
        """
        small = b"x" * (CHUNK_SIZE // 2)
        self.writer.write(small)
        self.assertEqual(self.threads.waiting, [])
        self.writer.write(small)
        self.writer.write(small)
        self.assertEqual(len(self.threads.waiting), 1)
        flushed = self.writer.flush()
        while self.threads.waiting:
            self.threads.runNext()
        self.successResultOf(flushed)
        self.assertEqual(self.written(), small * 3)

    def test_pausesAboveBuffer(self) -> None:
        """
        The producer is paused while more than L{UPLOAD_BUFFER} bytes wait,
        and resumed once they are written.
        """
        for _ in range(UPLOAD_BUFFER // CHUNK_SIZE + 2):
            self.writer.write(b"y" * CHUNK_SIZE)
        self.assertEqual(self.producer.calls, ["pause"])
        self.threads.runNext()
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.assertEqual(len(self.threads.waiting), 1)

    def test_writeFails(self) -> None:
        """
        A failed write stops the producer; the next write raises its error,
        and L{ThreadedFileWriter.flush} fails with it.
        """
        self.writer.write(b"z" * CHUNK_SIZE)
        result, _, _ = self.threads.waiting.pop()
        result.errback(Failure(OSError(errno.ENOSPC, "No space left on device")))
        self.assertEqual(self.producer.calls, ["stop"])
        self.assertRaises(OSError, self.writer.write, b"more")
        self.assertEqual(self.failureResultOf(self.writer.flush(), OSError).value.errno, 28)

    def test_stopWaitsForWrite(self) -> None:
        """
        L{ThreadedFileWriter.stop} drops what waits and fires only once the
        write that runs ended: only then may the file be closed.
        """
        self.writer.write(b"a" * CHUNK_SIZE)
        self.writer.write(b"b")
        stopped = self.writer.stop()
        self.assertNoResult(stopped)
        self.threads.runNext()
        self.successResultOf(stopped)
        self.assertEqual((self.written(), self.threads.waiting), (b"a" * CHUNK_SIZE, []))


class ResumedUploadTests(SynchronousTestCase):
    """
    Tests for resumed uploads of L{ConfinedShell}: the kept bytes copied
    into the temporary file, in turns of a thread.
    """

    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.mkdir(self.folder)
        self.target = os.path.join(self.folder, "file.bin")
        self.original = os.urandom(2 * 1000 + 500)
        with open(self.target, "wb") as file:
            file.write(self.original)
        self.threads = QueuedThreads()
        self.shell = ConfinedShell(openFolder(self.folder), True, inThread=self.threads)
        self.addCleanup(self.shell.logout)
        self.patch(ftpsshell, "COPY_STEP", 1000)

    def runAll(self) -> int:
        """
        Run the work given to threads, and give how many turns it took.
        """
        turns = 0
        while self.threads.waiting:
            self.threads.runNext()
            turns += 1
        return turns

    def test_copiedInTurns(self) -> None:
        """
        C{REST 2400} then C{STOR}: the 2400 bytes kept are copied in turns
        of L{ftpsshell.COPY_STEP} bytes; the file is replaced only when the
        upload is closed.
        """
        upload: Any = self.successResultOf(self.shell.openForWriting(["file.bin"], 2400))
        receiving = upload.receive()
        self.assertEqual(self.runAll(), 3)
        consumer = self.successResultOf(receiving)
        consumer.write(b"new end")
        closing = upload.close()
        with open(self.target, "rb") as file:
            self.assertEqual(file.read(), self.original)
        self.runAll()
        self.successResultOf(closing)
        with open(self.target, "rb") as file:
            self.assertEqual(file.read(), self.original[:2400] + b"new end")
        self.assertEqual(os.listdir(self.folder), ["file.bin"])

    def appendPlus(self, upload: Any) -> None:
        """
        Let C{upload} copy what it keeps, write C{+} after it, and close.
        """
        receiving = upload.receive()
        self.runAll()
        self.successResultOf(receiving).write(b"+")
        closing = upload.close()
        self.runAll()
        self.successResultOf(closing)

    def test_append(self) -> None:
        """
        An append keeps the whole file.
        """
        upload: Any = self.successResultOf(self.shell.openForWriting(["file.bin"], None))
        self.appendPlus(upload)
        with open(self.target, "rb") as file:
            self.assertEqual(file.read(), self.original + b"+")

    def test_progressAtEachStep(self) -> None:
        """
        Each step of the copy tells its session it is not idle.
        """
        upload: Any = self.successResultOf(self.shell.openForWriting(["file.bin"], 2400))
        steps: list[None] = []
        receiving = upload.receive(lambda: steps.append(None))
        self.runAll()
        self.successResultOf(receiving)
        self.assertEqual(len(steps), 3)
        upload.abort()

    def test_abortedDuringCopy(self) -> None:
        """
        An upload aborted while a step of its copy runs (its session ended)
        copies no more: once the step ended, its temporary file is removed
        and it tells it stopped.
        """
        upload: Any = self.successResultOf(self.shell.openForWriting(["file.bin"], None))
        receiving = upload.receive()
        stopped = upload.whenStopped()
        upload.abort()
        # The step that runs still has its file.
        self.assertEqual(len(os.listdir(self.folder)), 2)
        self.assertNoResult(stopped)
        self.assertEqual(self.runAll(), 1)
        self.failureResultOf(receiving, ftpsshell.UploadCancelled)
        self.successResultOf(stopped)
        self.assertEqual(os.listdir(self.folder), ["file.bin"])

    def test_accountCopiesInTurns(self) -> None:
        """
        Two resumed uploads of one account (of two files) copy one step at
        a time: work of other sessions given meanwhile runs between their
        steps.
        """
        shutil.copyfile(self.target, os.path.join(self.folder, "other.bin"))
        turns = DeferredLock()
        other = ConfinedShell(openFolder(self.folder), True, inThread=self.threads, copyTurns=turns)
        self.addCleanup(other.logout)
        shell = ConfinedShell(openFolder(self.folder), True, inThread=self.threads, copyTurns=turns)
        self.addCleanup(shell.logout)
        first: Any = self.successResultOf(shell.openForWriting(["file.bin"], None))
        second: Any = self.successResultOf(other.openForWriting(["other.bin"], None))
        receiving = [first.receive(), second.receive()]
        self.assertEqual(len(self.threads.waiting), 1)
        self.threads(lambda: "read")
        self.threads.runNext()
        # The other session's read comes before the next step.
        self.assertEqual([work[1] for work in self.threads.waiting][1:], [ftpsshell._copyBytes])
        self.assertEqual(self.threads.waiting[0][1](), "read")
        self.assertEqual(self.runAll(), 6)
        for upload, done in zip((first, second), receiving, strict=True):
            self.successResultOf(done)
            upload.abort()

    def test_modeKept(self) -> None:
        """
        A resumed upload keeps the mode of the file it replaces, in its
        temporary file as well.
        """
        os.chmod(self.target, 0o600)
        upload: Any = self.successResultOf(self.shell.openForWriting(["file.bin"], None))
        temporary = os.path.join(self.folder, upload.temporary)
        self.assertEqual(stat.S_IMODE(os.stat(temporary).st_mode), 0o600)
        self.appendPlus(upload)
        self.assertEqual(stat.S_IMODE(os.stat(self.target).st_mode), 0o600)

    def test_beyondEnd(self) -> None:
        """
        A restart offset beyond the end of the file is refused, and no
        temporary file is left.
        """
        self.failureResultOf(self.shell.openForWriting(["file.bin"], 2501), RestartInvalid)
        self.assertEqual(os.listdir(self.folder), ["file.bin"])


class StoredUploadTests(SynchronousTestCase):
    """
    Tests for the storing of a complete upload of L{ConfinedShell}: its
    temporary file is flushed to disk, in a thread, before it is renamed.
    """

    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.mkdir(self.folder)
        self.threads = QueuedThreads()
        self.shell = ConfinedShell(openFolder(self.folder), True, inThread=self.threads)
        self.addCleanup(self.shell.logout)
        self.synced: list[list[str]] = []
        self.patch(os, "fsync", self.fsync)

    def fsync(self, fd: int) -> None:
        """
        Note which files the folder has when C{fd} is flushed.
        """
        self.synced.append(sorted(os.listdir(self.folder)))

    def upload(self) -> Deferred[None]:
        """
        Upload C{b"new"} to C{file.bin}, and give what closing it gives.
        """
        upload: Any = self.successResultOf(self.shell.openForWriting(["file.bin"], 0))
        self.successResultOf(upload.receive()).write(b"new")
        closing: Deferred[None] = upload.close()
        while self.threads.waiting:
            self.assertEqual(self.synced, [])
            self.threads.runNext()
        return closing

    def test_syncedBeforeRename(self) -> None:
        """
        The file is flushed once, in a thread, while it has its temporary
        name; then it takes its own.
        """
        self.successResultOf(self.upload())
        self.assertEqual(len(self.synced), 1)
        [[temporary]] = self.synced
        self.assertTrue(temporary.startswith(ftpsshell.UPLOAD_PREFIX))
        self.assertEqual(os.listdir(self.folder), ["file.bin"])

    def test_syncFails(self) -> None:
        """
        When the file cannot be flushed (an I/O error), the upload fails
        and is removed; nothing takes the name.
        """

        def failing(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.patch(os, "fsync", failing)
        self.failureResultOf(self.upload())
        self.assertEqual(os.listdir(self.folder), [])
