"""
A state directory's files read ahead by a process of their own, while the
reactor thread takes back the sets already read (see
L{DirectoryStorage.planReads
<letsencrypt_resource.storage.directory.DirectoryStorage.planReads>}).

A reader I{thread} beside a busy reactor thread waits for the interpreter
at each of its system calls, so the reads and the reactor's work take
turns; a reader I{process} runs on another core meanwhile, and the reactor
makes one read of its pipe for many files.  The process
(L{letsencrypt_resource.storage.readerchild}) is given the held state
directory's descriptor and the keys, in the order they will be asked for,
and reads them under the very rules of the storage's thread
(L{letsencrypt_resource.storage.fileread}).

Each value is given once: taken by L{ReadAhead.take}, or forgotten when
the key is written (L{ReadAhead.forget}), so that no read older than a
write of this process is given.  The pipe is read while no more than
L{HELD_KEYS} values wait to be taken, or while a take waits: memory holds
the pipe's content, one batch and those (see
L{letsencrypt_resource.storage.readerprocess} for how it is read).  A process that cannot be
started, does not greet within L{HELLO_SECONDS} (a C{sys.executable}
that is not this Python, or hangs), dies, writes a frame that is not one,
or gives nothing for L{STALL_SECONDS} while a take waits for it, is killed
and logged once (events 20205, 20206); the keys it has not given are then
the storage's thread's to read.  Where no process can be made as it needs
(a frozen application, no C{sys.executable}, no C{memfd_create}),
L{available} says so and none is tried.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import events
from .fileread import Result
from .framing import Frames, MalformedFrame
from .readerchild import command
from .readerprocess import ReaderProcess
from .readerprocess import available as _systemHas

#: The fewest keys a read-ahead is started for (2,000 sets): below, the
#: process's start costs more than it saves (C{bench/readahead.py}: at
#: 1,000 sets the load took as much CPU with it and longer; the CPU it
#: saves grows from 2,000 sets, 0.27 s at 10,000).
READ_AHEAD_MIN = 4000
#: How many of the keys planned first are left to the storage's thread: it
#: reads them while the process starts (some 50 ms, which the first
#: batches would otherwise wait).
READ_AHEAD_FROM = 512
#: How long the process has, once spawned, to write its first frame.
HELLO_SECONDS = 1.0
#: How long a take waits for the process's next frame before the process
#: is given up.
STALL_SECONDS = 10.0
#: How long L{ReadAhead.stop} waits for the killed process to be reaped
#: (a host whose reactor handles no C{SIGCHLD} never reaps it).
STOP_WAIT = 5.0
#: How many values read ahead wait to be taken before the pipe is no
#: longer read (unless a take waits).
HELD_KEYS = 512

_log = Logger()


def available() -> bool:
    """
    Whether a read-ahead process can be started here: C{sys.executable} is
    this Python (not a frozen application, which would run itself again)
    and the system has what the process needs.
    """
    return bool(sys.executable) and not getattr(sys, "frozen", False) and _systemHas()


class _Take:
    """
    A take that waits: what it has, and the keys it still waits for.
    """

    def __init__(self, got: dict[str, Result], waiting: set[str]):
        self.got = got
        self.waiting = waiting
        self.done: Deferred[dict[str, Result]] = Deferred()


class ReadAhead:
    """
    The read-ahead of some keys of a state directory.
    """

    def __init__(self, reactor: Any, directory: str, keys: Sequence[str], limit: int):
        """
        @param reactor: Spawns the process and times it.
        @param directory: The state directory's path: named in events and
            errors, never opened by the process.
        @param keys: The keys, each once, in the order they will be taken.
        @param limit: The most bytes a file is read of.
        """
        self._reactor = reactor
        self._directory = directory
        self._keys = list(keys)
        self._limit = limit
        #: The keys planned whose value has not been given nor forgotten.
        self._planned = {key: index for index, key in enumerate(self._keys)}
        self._frames = Frames(directory, self._keys, limit)
        self._held: dict[str, Result] = {}
        self._takes: list[_Take] = []
        self._process = ReaderProcess(reactor, self)
        self._paused = False
        self._stall: Any = None
        self._over = False

    def start(self, root: int) -> None:
        """
        Start the process, giving it C{root}, the state directory's
        descriptor (which the caller closes once this returns).
        """
        joined = "\0".join(self._keys)
        if joined.count("\0") != len(self._keys) - 1:
            # A key holding the separator (no valid key does) would shift
            # every key after it.
            self.notStarted("a key holds a zero byte")
            return
        keys = joined.encode("utf-8", "surrogateescape")
        if self._over:
            return
        try:
            self._process.start(command(self._directory, self._limit), keys, root)
        except Exception as error:
            self.notStarted(str(error))
            return
        self._flow()

    def notStarted(self, why: str) -> None:
        """
        The process could not be started, for C{why}: the keys are the
        storage's thread's to read.
        """
        if not self._over:
            self._giveUp(events.READ_AHEAD_NOT_STARTED, why)

    @property
    def finished(self) -> bool:
        """
        Whether the process has ended, or was given up.
        """
        return self._over

    @property
    def pid(self) -> int | None:
        """
        The process's ID, while it runs.
        """
        return self._process.pid

    def holds(self, key: str) -> bool:
        """
        Whether the value of C{key} is (or will be) given by L{take}.
        """
        return key in self._planned

    def take(self, keys: Sequence[str]) -> Deferred[dict[str, Result]]:
        """
        The values of C{keys}, all held (see L{holds}), once they are read:
        a key forgotten meanwhile, or not read as the process was given up,
        is left out.  The values read ahead of keys planned before them
        and not taken are let go: they were read otherwise.
        """
        keys = list(dict.fromkeys(keys))
        first = min(self._planned[key] for key in keys)
        for skipped in [k for k in self._held if self._planned[k] < first]:
            del self._held[skipped], self._planned[skipped]
        got: dict[str, Result] = {}
        waiting = set()
        for key in keys:
            if key in self._held:
                got[key] = self._held.pop(key)
                del self._planned[key]
            else:
                waiting.add(key)
        if not waiting:
            self._flow()
            return succeed(got)
        take = _Take(got, waiting)
        self._takes.append(take)
        self._flow()
        return take.done

    def forget(self, key: str) -> None:
        """
        Let go the value of C{key}, read or to be read: the key is being
        written.
        """
        if self._planned.pop(key, None) is None:
            return
        self._held.pop(key, None)
        for take in self._takes:
            take.waiting.discard(key)
        self._answer()

    def received(self, data: bytes) -> None:
        """
        The process wrote C{data}.
        """
        if self._over:
            return
        try:
            results = self._frames.feed(data)
        except MalformedFrame as error:
            self._giveUp(events.READ_AHEAD_STOPPED, str(error))
            return
        takes = self._takes
        for key, result in results:
            if key not in self._planned:
                continue
            for take in takes:
                if key in take.waiting:
                    take.waiting.remove(key)
                    take.got[key] = result
                    del self._planned[key]
                    break
            else:
                self._held[key] = result
        self._answer()

    def ended(self, reason: Failure, output: bytes) -> None:
        """
        The process ended, for C{reason}, having written C{output} on its
        error output.
        """
        if output:
            events.READ_AHEAD_OUTPUT.emit(
                _log, directory=self._directory, output=output.decode("utf-8", "replace")
            )
        if not self._over:
            if self._frames.complete and reason.check(ProcessDone):
                self._over = True
            else:
                why = f"it ended before it had read every file ({reason.value})"
                self._giveUp(events.READ_AHEAD_STOPPED, why)

    def pipeEnded(self) -> None:
        """
        The process's frames' pipe ended: with frames missing, it is given
        up at once, even before its end is told.
        """
        if not self._over and not self._frames.complete:
            why = "its output ended before it had read every file"
            self._giveUp(events.READ_AHEAD_STOPPED, why)

    def stop(self) -> Deferred[None]:
        """
        Kill the process, if it runs, and give every take what it has.

        @return: A Deferred that fires once the process has ended, or
            after L{STOP_WAIT} seconds.
        """
        if not self._over:
            self._over = True
            self._end()
        return self._process.reapedWithin(STOP_WAIT)

    def _giveUp(self, event: events.EventType, why: str) -> None:
        """
        Kill the process, log C{event} for C{why}, and leave the keys not
        given to the storage's thread.
        """
        self._over = True
        event.emit(_log, directory=self._directory, why=why, remaining=len(self._planned))
        self._end()

    def _end(self) -> None:
        """
        Kill the process, if it runs; give every take what it has, and
        let every value held go.
        """
        self._process.kill()
        self._planned.clear()
        self._held.clear()
        for take in self._takes:
            take.waiting.clear()
        self._answer()

    def _answer(self) -> None:
        """
        Fire the takes that wait for nothing more, then read the pipe on,
        or not (see L{_flow}).
        """
        done = [take for take in self._takes if not take.waiting]
        if done:
            self._takes = [take for take in self._takes if take.waiting]
            for take in done:
                take.done.callback(take.got)
        self._flow()

    def _flow(self) -> None:
        """
        Read the pipe while a take waits or few values are held; time the
        process while a take waits, or until its first frame.
        """
        pause = not self._takes and len(self._held) >= HELD_KEYS
        if pause != self._paused:
            self._paused = pause
            (self._process.pause if pause else self._process.resume)()
        stall, greeted = self._stall, self._frames.greeted
        if (self._takes or not greeted) and self._process.started and not self._over:
            if stall is None or not stall.active():
                wait = STALL_SECONDS if greeted else HELLO_SECONDS
                self._stall = self._reactor.callLater(wait, self._stalled)
            elif greeted:
                stall.reset(STALL_SECONDS)
        elif stall is not None and stall.active():
            stall.cancel()

    def _stalled(self) -> None:
        """
        The process has not written its first frame in L{HELLO_SECONDS}
        (it is not this Python, or hangs), or a take has waited
        L{STALL_SECONDS} for its next frame.
        """
        if not self._frames.greeted:
            why = f"it did not answer within {HELLO_SECONDS} seconds"
            self._giveUp(events.READ_AHEAD_NOT_STARTED, why)
        else:
            why = f"it read nothing for {STALL_SECONDS} seconds"
            self._giveUp(events.READ_AHEAD_STOPPED, why)
