"""
The file reads and writes of FTPS transfers, in a small pool of threads of
the service's own: a slow disk or a big file never holds up the reactor,
and so the other sessions.

A download reads its file L{CHUNK_SIZE} bytes at a time, one read ahead of
what the data connection has taken (L{ThreadedFileSender}); an upload
writes what it receives a chunk at a time, and pauses its data connection
while L{UPLOAD_BUFFER} bytes wait to be written (L{ThreadedFileWriter}).
Neither ever holds more than a few chunks in memory, whatever the file's
size or the speeds of the disk and the network.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

T = TypeVar("T")
#: What each read of a download, and each write of an upload, carries.
CHUNK_SIZE = 256 * 1024
#: The most bytes of an upload received and not yet written; its data
#: connection is paused above it.
UPLOAD_BUFFER = 4 * CHUNK_SIZE
#: Runs a function in a thread: C{inThread(f, *args)} gives a Deferred of
#: C{f(*args)}, fired in the reactor thread.
InThread = Callable[..., Deferred[Any]]


class PoolStopped(Exception):
    """
    Work was given to the threads of a service that stopped.
    """


class ServicePool:
    """
    A bounded pool of threads of one service, started and stopped with it.
    Work given to it once it stopped fails at once (L{PoolStopped}), so
    that what waits for it closes its files.

    @ivar threadPool: The threads, new at each start.
    """

    def __init__(self, reactor: Any, name: str, threads: int):
        """
        @param reactor: The reactor, an C{IReactorFromThreads} with system
            event triggers.
        @param name: The name of the threads.
        """
        self._reactor = reactor
        self._name = name
        self._threads = threads
        self.threadPool = ThreadPool(0, threads, name)
        self._trigger: Any = None
        self._running = False

    def start(self) -> None:
        """
        Start new threads; they are stopped as well when the reactor stops
        without stopping the service (they would keep the process alive).
        """
        self.threadPool = ThreadPool(0, self._threads, self._name)
        self.threadPool.start()
        self._running = True
        self._trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self.threadPool.stop
        )

    def stop(self) -> Deferred[None]:
        """
        Stop the threads once the work given them is done, waiting for
        them in a thread of its own: a read that hangs (a failing disk)
        never holds up the reactor.

        @return: A Deferred that fires once the threads stopped.
        """
        self._running = False
        trigger, self._trigger = self._trigger, None
        # Unless the reactor's shutdown stopped them already.
        if trigger is None or not self.threadPool.started:
            return succeed(None)
        self._reactor.removeSystemEventTrigger(trigger)
        pool = self.threadPool
        stopped: Deferred[None] = Deferred()

        def stopping() -> None:
            pool.stop()
            self._reactor.callFromThread(stopped.callback, None)

        threading.Thread(target=stopping, name=f"{self._name}-stop", daemon=True).start()
        return stopped

    def run(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Call C{function(*args)} in a thread of the pool.

        @return: A Deferred of its result; failed with L{PoolStopped} when
            the pool stopped.
        """
        if not self._running:
            return fail(PoolStopped(f"the threads {self._name} stopped"))
        reactor: IReactorFromThreads = self._reactor
        return deferToThreadPool(reactor, self.threadPool, function, *args)


class StoppedProducing(Exception):
    """
    The consumer of a download stopped it (its data connection ended).
    """


@implementer(IPushProducer)
class ThreadedFileSender:
    """
    Sends an open file, from an offset to its end, to a consumer: each
    L{CHUNK_SIZE} read in a thread, the next read while the consumer sends
    the last, and no more read while a chunk waits for a paused consumer.

    The file descriptor is closed once the transfer is over, never while a
    read of it runs.
    """

    def __init__(self, fd: int, offset: int, inThread: InThread):
        """
        @param fd: The open file, which this takes over.
        """
        self._fd = fd
        self._position = offset
        self._inThread = inThread
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._reading = False
        self._paused = False
        self._ready: bytes | None = None

    def beginFileTransfer(self, consumer: IConsumer) -> Deferred[None]:
        """
        Send the file to C{consumer}, unregistering from it at the end.

        @return: A Deferred that fires once all was written to C{consumer},
            or fails when a read fails or the consumer stops the transfer.
        """
        self._consumer = consumer
        self._done = Deferred()
        consumer.registerProducer(self, True)
        self._read()
        return self._done

    def _read(self) -> None:
        self._reading = True
        reading = self._inThread(os.pread, self._fd, CHUNK_SIZE, self._position)
        reading.addCallbacks(self._chunkRead, self._readFailed)

    def _chunkRead(self, chunk: bytes) -> None:
        self._reading = False
        if self._done is None:
            self._close()
        elif not chunk:
            assert self._consumer is not None
            self._consumer.unregisterProducer()
            self._finish(None)
        elif self._paused:
            self._ready = chunk
        else:
            self._send(chunk)

    def _readFailed(self, failure: Failure) -> None:
        self._reading = False
        self._finish(failure)

    def _send(self, chunk: bytes) -> None:
        assert self._consumer is not None
        self._position += len(chunk)
        self._consumer.write(chunk)
        # Read the next chunk while the consumer sends this one, even when
        # writing paused this producer: the chunk read then waits.
        if self._done is not None:
            self._read()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        chunk, self._ready = self._ready, None
        if chunk is not None and self._done is not None:
            self._send(chunk)

    def stopProducing(self) -> None:
        self._finish(Failure(StoppedProducing("the data connection ended")))

    def _finish(self, outcome: Failure | None) -> None:
        done, self._done = self._done, None
        self._ready = None
        if not self._reading:
            self._close()
        if done is not None:
            if outcome is None:
                done.callback(None)
            else:
                done.errback(outcome)

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


@implementer(IConsumer)
class ThreadedFileWriter:
    """
    Writes what a producer brings to an open file, a chunk at a time in a
    thread, one write at a time; pauses the producer while more than
    L{UPLOAD_BUFFER} bytes wait, and stops it at the first failed write.
    """

    def __init__(self, fd: int, inThread: InThread):
        """
        @param fd: The open file, which stays its owner's to close, once
            L{flush} fired.
        """
        self._fd = fd
        self._inThread = inThread
        self._producer: Any = None
        self._pending: list[bytes] = []
        self._pendingSize = 0
        self._writing: Deferred[None] | None = None
        self._paused = False
        #: The first failed write, if any.
        self.failure: Failure | None = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        """
        Take C{data} to write.

        @raise Exception: the error of a write that failed before.
        """
        if self.failure is not None:
            self.failure.raiseException()
        self._pending.append(data)
        self._pendingSize += len(data)
        if self._writing is None and self._pendingSize >= CHUNK_SIZE:
            self._writeNext()
        if self._pendingSize > UPLOAD_BUFFER and not self._paused and self._producer is not None:
            self._paused = True
            self._producer.pauseProducing()

    def _writeNext(self) -> None:
        chunk = b"".join(self._pending)
        self._pending, self._pendingSize = [], 0
        self._writing = self._inThread(writeAll, self._fd, chunk)
        self._writing.addCallbacks(self._written, self._writeFailed)

    def _written(self, _: None) -> None:
        self._writing = None
        if self._pendingSize >= CHUNK_SIZE:
            self._writeNext()
        if self._paused and self._pendingSize <= UPLOAD_BUFFER:
            self._paused = False
            if self._producer is not None:
                self._producer.resumeProducing()

    def _writeFailed(self, failure: Failure) -> None:
        self._writing = None
        self._pending, self._pendingSize = [], 0
        self.failure = failure
        if self._producer is not None:
            self._producer.stopProducing()

    def flush(self) -> Deferred[None]:
        """
        Write what is left.

        @return: A Deferred that fires once all was written, or fails with
            the error of the first failed write.
        """
        if self.failure is not None:
            return fail(self.failure)
        if self._writing is not None:
            return self._afterWrite().addCallback(lambda _: self.flush())
        if self._pending:
            self._writeNext()
            return self.flush()
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """
        Drop what waits to be written.

        @return: A Deferred that fires once no write runs: the file may then
            be closed.
        """
        self._pending, self._pendingSize = [], 0
        if self._writing is None:
            return succeed(None)
        return self._afterWrite()

    def _afterWrite(self) -> Deferred[None]:
        """
        A Deferred that fires once the write that runs ended.
        """
        assert self._writing is not None
        after: Deferred[None] = Deferred()
        # The write's chain ends in None, whether it wrote or failed.
        self._writing.addCallback(after.callback)
        return after


def writeAll(fd: int, data: bytes) -> None:
    """
    Write all of C{data} to C{fd}.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
