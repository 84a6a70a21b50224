"""
The status rows kept ahead wait while the control socket writes an answer.

The server makes its kept status rows between the reactor's other work
(L{Operations.keepRows <letsencrypt_resource.operations.Operations.keepRows>}),
a slice of about 10 ms at each turn.  An answer of 10,000 rows is 4.66 MB,
which the socket takes about 200 KB at a time, one write a turn: with a
slice of rows made at each of those turns, writing the answer asked right
at start-up took 0.2-0.7 s.  So the row-keeping pauses from the moment an
answer leaves more than the transport's buffer (64 KiB) pending until it
is all written (L{AnswerWrite}), and resumes when no answer holds it:
each holds it until it is written or for L{HOLD_LIMIT} seconds, whichever
comes first, so a client that asks and never reads holds the keeping no
longer than that.
A connection is not read from a request until its answer is written (one
answer at a time pending per connection), and is closed when its answer
is still not written after L{STATUS_ANSWER_WAIT
<letsencrypt_resource.controlsocket.STATUS_ANSWER_WAIT>} seconds, by when
a client of ours gave up waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.task import CooperativeTask, Cooperator
from zope.interface import implementer

from .controlsocket import STATUS_ANSWER_WAIT

#: The most seconds one answer holds the row-keeping: a local socket
#: writes the 4.66 MB answer of 10,000 rows in about 0.1 s to a client
#: that reads.
HOLD_LIMIT = 2.0


class Connection(Protocol):
    """
    The transport an answer is written on: a C{IConsumer} that can be
    aborted.
    """

    def write(self, data: bytes) -> None:
        """
        Write C{data}, buffering what the socket does not take.
        """

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """
        Pause C{producer} while the buffer is full, resume it when empty.
        """

    def unregisterProducer(self) -> None:
        """
        Forget the producer.
        """

    def abortConnection(self) -> None:
        """
        Close the connection at once, dropping what is not written.
        """


class Reader(Protocol):
    """
    What reads a connection: paused while a request runs, resumed once
    its answer is written.
    """

    def pauseProducing(self) -> None:
        """
        Stop reading the connection.
        """

    def resumeProducing(self) -> None:
        """
        Read the connection again.
        """


class KeepingTasks:
    """
    The tasks that make the kept rows, run by a cooperator (see
    L{cooperate}), all paused while any answer is being written (from
    L{hold} until the matching L{release}).
    """

    def __init__(self, cooperator: Cooperator, clock: IReactorTime):
        self._cooperator = cooperator
        #: The clock that bounds the holds (see L{AnswerWrite}).
        self.clock = clock
        self._tasks: set[CooperativeTask] = set()
        self._writing = 0

    def cooperate(self, steps: Iterator[None]) -> CooperativeTask:
        """
        Run C{steps} with the cooperator, as C{Cooperator.cooperate} does;
        paused at once while an answer is being written.
        """
        task = self._cooperator.cooperate(steps)
        self._tasks.add(task)
        task.whenDone().addBoth(lambda _: self._tasks.discard(task))
        if self._writing:
            task.pause()
        return task

    def hold(self) -> None:
        """
        An answer is being written: pause the tasks, if none was.
        """
        self._writing += 1
        if self._writing == 1:
            for task in self._tasks:
                task.pause()

    def release(self) -> None:
        """
        An answer has been written (or its connection lost): resume the
        tasks, if it was the last being written.
        """
        self._writing -= 1
        if not self._writing:
            for task in self._tasks:
                task.resume()


@implementer(IPushProducer)
class AnswerWrite:
    """
    One answer written on a connection, registered as its transport's
    producer while it is written (see L{write}): the transport pauses it
    when more than its buffer (64 KiB) is pending, which holds the
    row-keeping, and resumes it once all is written, which releases it
    and reads the connection again, or stops it when the connection is
    lost, which releases the keeping.  The keeping is released anyway
    after L{HOLD_LIMIT} seconds, and the connection aborted after
    L{STATUS_ANSWER_WAIT
    <letsencrypt_resource.controlsocket.STATUS_ANSWER_WAIT>}.
    """

    def __init__(self, transport: Connection, reader: Reader, tasks: KeepingTasks):
        self._transport = transport
        self._reader = reader
        self._tasks = tasks
        self._paused = False
        self._holding = False
        self._ended = False
        self._timers: list[IDelayedCall] = []

    @classmethod
    def write(cls, transport: Connection, reader: Reader, tasks: KeepingTasks, data: bytes) -> None:
        """
        Write C{data} on C{transport}, the row-keeping of C{tasks} held
        (for L{HOLD_LIMIT} seconds at most) until it is all written if
        more than the transport's buffer is pending, and resume C{reader},
        what reads the connection (paused while the request ran), once it
        is written: at once or then.  One answer at a time on a transport:
        the next is written once C{reader} is resumed.
        """
        answer = cls(transport, reader, tasks)
        transport.registerProducer(answer, True)
        transport.write(data)
        if not answer._paused and not answer._ended:
            # Taken at once: nothing to wait for.
            answer._ended = True
            transport.unregisterProducer()
            reader.resumeProducing()

    def pauseProducing(self) -> None:
        """
        More than the transport's buffer is pending: hold the row-keeping
        for L{HOLD_LIMIT} seconds at most, and abort the connection if the
        answer is not written in L{STATUS_ANSWER_WAIT
        <letsencrypt_resource.controlsocket.STATUS_ANSWER_WAIT>} seconds.
        """
        if self._paused or self._ended:
            return
        self._paused = self._holding = True
        self._tasks.hold()
        clock = self._tasks.clock
        self._timers = [
            clock.callLater(HOLD_LIMIT, self._letGo),
            clock.callLater(STATUS_ANSWER_WAIT, self._transport.abortConnection),
        ]

    def resumeProducing(self) -> None:
        """
        The transport has written all: release the row-keeping and read
        the connection again.
        """
        self._end()
        self._transport.unregisterProducer()
        self._reader.resumeProducing()

    def stopProducing(self) -> None:
        """
        The connection is lost: release the row-keeping.
        """
        self._end()

    def _letGo(self) -> None:
        """
        Held for L{HOLD_LIMIT} seconds: release the row-keeping, though the
        answer is not all written.
        """
        self._timers.pop(0)
        self._holding = False
        self._tasks.release()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []
        if self._holding:
            self._holding = False
            self._tasks.release()
