"""
The read-ahead process of a state directory, as its parent runs it (see
L{letsencrypt_resource.storage.readahead}): started with its keys in an
anonymous file and the state directory's descriptor, its frames read from
a pipe of its own in large reads (one read of up to L{READ_SIZE} bytes,
not Twisted's 8 KiB, of a pipe enlarged to L{PIPE_SIZE} bytes when the
system allows), its error output kept for the log, up to L{OUTPUT_KEPT}
bytes.
"""

from __future__ import annotations

import fcntl
import os
import signal
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ProcessExitedAlready
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

#: The most bytes one read of the process's frames takes.
READ_SIZE = 1 << 20
#: The size the frames' pipe is given, when the system allows.
PIPE_SIZE = 1 << 20
#: How much of what the process writes on its error output is kept.
OUTPUT_KEPT = 4096
#: How often, and how many times, a process whose frames' pipe is closed
#: is looked for with C{waitpid} (C{WNOHANG}) when its end is not told (a
#: reactor that handles no C{SIGCHLD}).
REAP_POLL = 0.1
REAP_TRIES = 50


def available() -> bool:
    """
    Whether this system has what a read-ahead process needs: an anonymous
    file for its keys (the pipe's enlargement is optional).
    """
    return hasattr(os, "memfd_create")


class Sink(Protocol):
    """
    What is told what the process writes, and how it ended.
    """

    def received(self, data: bytes) -> None:
        """
        The process wrote C{data} on its frames' pipe.
        """

    def ended(self, reason: Failure, output: bytes) -> None:
        """
        The process ended for C{reason}, its frames' pipe closed, having
        written C{output} on its error output.
        """

    def pipeEnded(self) -> None:
        """
        The process's frames' pipe has ended: it writes nothing more.
        """


def _keysFile(keys: bytes) -> int:
    """
    An anonymous file holding C{keys}, read from its start: the process
    has its keys at once, however busy the reactor is.
    """
    fd = os.memfd_create("letsencrypt-readahead-keys", os.MFD_CLOEXEC)
    try:
        view = memoryview(keys)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


@implementer(IReadDescriptor)
class _Frames:
    """
    The reading end of the frames' pipe, in the reactor.
    """

    def __init__(self, fd: int, process: ReaderProcess):
        self._fd = fd
        self._process = process

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "letsencrypt-readahead"

    def doRead(self) -> Failure | None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as error:
            return Failure(error)
        if not data:
            return Failure(ConnectionDone())
        self._process.frames(data)
        return None

    def connectionLost(self, reason: Failure) -> None:
        self._process.framesClosed()
        self._process.pipeEnded()


class ReaderProcess(ProcessProtocol):
    """
    A read-ahead process, once started.

    @ivar reaped: Fires once the process has ended and its frames' pipe is
        closed.
    """

    def __init__(self, reactor: Any, sink: Sink):
        self._reactor = reactor
        self._sink = sink
        self._reader: _Frames | None = None
        self._reading = False
        self._output = bytearray()
        self._exit: Failure | None = None
        self._poll: Any = None
        self.reaped: Deferred[None] = Deferred()

    def start(self, argv: list[str], keys: bytes, root: int) -> None:
        """
        Start the process C{argv}, giving it C{keys} on its standard input
        and C{root} as its descriptor 3.

        @raise OSError: when it cannot be started.
        """
        keysFd = _keysFile(keys)
        try:
            readEnd, writeEnd = os.pipe()
            try:
                resize = getattr(fcntl, "F_SETPIPE_SZ", None)
                if resize is not None:
                    try:
                        fcntl.fcntl(writeEnd, resize, PIPE_SIZE)
                    except OSError:
                        pass
                self._reactor.spawnProcess(
                    self,
                    argv[0],
                    argv,
                    env={},
                    childFDs={0: keysFd, 1: writeEnd, 2: "r", 3: root},
                )
            except BaseException:
                os.close(readEnd)
                raise
            finally:
                os.close(writeEnd)
        finally:
            os.close(keysFd)
        os.set_blocking(readEnd, False)
        self._reader = _Frames(readEnd, self)
        self.resume()

    @property
    def started(self) -> bool:
        """
        Whether the process was spawned.
        """
        return self.transport is not None

    @property
    def pid(self) -> int | None:
        """
        The process's ID, while it runs.
        """
        return None if self.transport is None else self.transport.pid

    def pause(self) -> None:
        """
        Read no more frames until L{resume}.
        """
        if self._reader is not None and self._reading:
            self._reading = False
            self._reactor.removeReader(self._reader)

    def resume(self) -> None:
        """
        Read frames again.
        """
        if self._reader is not None and not self._reading:
            self._reading = True
            self._reactor.addReader(self._reader)

    def kill(self) -> None:
        """
        Kill the process, if it runs, and read nothing more of it.  One
        never started is taken as reaped.
        """
        if not self.started and not self.reaped.called:
            self.reaped.callback(None)
        if self._exit is None and self.transport is not None:
            try:
                self.transport.signalProcess(signal.SIGKILL)
            except ProcessExitedAlready:
                pass
        self.framesClosed()

    def reapedWithin(self, seconds: float) -> Deferred[None]:
        """
        A Deferred that fires once the process is reaped, or after
        C{seconds} (a host that never reaps it).
        """
        reaped: Deferred[None] = Deferred()

        def done(result: object = None) -> None:
            if timer.active():
                timer.cancel()
            if not reaped.called:
                reaped.callback(None)

        timer = self._reactor.callLater(seconds, done)
        self.reaped.addBoth(done)
        return reaped

    def frames(self, data: bytes) -> None:
        """
        The process wrote C{data} on its frames' pipe.
        """
        self._sink.received(data)

    def framesClosed(self) -> None:
        """
        The frames' pipe is closed, or not read any more.
        """
        reader = self._reader
        if reader is None:
            return
        self.pause()
        self._reader = None
        os.close(reader.fileno())
        self._reaped()
        if self._exit is None and self.transport is not None:
            self._poll = self._reactor.callLater(REAP_POLL, self._reap, REAP_TRIES)

    def pipeEnded(self) -> None:
        """
        The frames' pipe has ended: tell the sink.
        """
        self._sink.pipeEnded()

    def _reap(self, tries: int) -> None:
        """
        Reap the process if it has ended (C{processEnded} follows), else
        look again later, C{tries} times at most.
        """
        transport: Any = self.transport
        if self._exit is not None or transport is None or transport.pid is None:
            return
        transport.reapProcess()
        if self._exit is None and tries > 1:
            self._poll = self._reactor.callLater(REAP_POLL, self._reap, tries - 1)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._output += data[: OUTPUT_KEPT - len(self._output)]

    def processEnded(self, reason: Failure) -> None:
        self._exit = reason
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._reaped()

    def _reaped(self) -> None:
        """
        Tell the sink how the process ended, once it has and its frames'
        pipe is closed.
        """
        if self._exit is not None and self._reader is None and not self.reaped.called:
            self._sink.ended(self._exit, bytes(self._output))
            self.reaped.callback(None)
