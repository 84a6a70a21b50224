"""
The status rows kept ahead wait while the control socket writes an answer.

The server makes its kept status rows between the reactor's other work
(L{Operations.keepRows <letsencrypt_resource.operations.Operations.keepRows>}),
a slice of about 10 ms at each turn.  An answer of 10,000 rows is 4.66 MB,
which the socket takes about 200 KB at a time, one write a turn: with a
slice of rows made at each of those turns, writing the answer asked right
at start-up took 0.2-0.7 s.  So the row-keeping pauses from the moment an
answer fills the connection's buffer until it is all written
(L{AnswerWrite}), and resumes when the last such answer is.
"""

from __future__ import annotations

from collections.abc import Iterator

from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import CooperativeTask, Cooperator
from zope.interface import implementer


class KeepingTasks:
    """
    The tasks that make the kept rows, run by a cooperator (see
    L{cooperate}), all paused while any answer is being written (from
    L{hold} until the matching L{release}).
    """

    def __init__(self, cooperator: Cooperator):
        self._cooperator = cooperator
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
    when its buffer holds more than it writes at once, which holds the
    row-keeping, and resumes it once all is written, or stops it when the
    connection is lost, which releases it.
    """

    def __init__(self, transport: IConsumer, tasks: KeepingTasks):
        self._transport = transport
        self._tasks = tasks
        self._held = False
        self._ended = False

    @classmethod
    def write(cls, transport: IConsumer, tasks: KeepingTasks, data: bytes) -> None:
        """
        Write C{data} on C{transport}, the row-keeping of C{tasks} held
        until it is all written if the transport does not take it at once.
        Written on a transport that is still writing an answer of its own,
        it is held with that answer, until all is written.
        """
        answer = cls(transport, tasks)
        try:
            transport.registerProducer(answer, True)
        except RuntimeError:
            # Another answer's producer: it holds the keeping until the
            # transport has written everything, this too.
            transport.write(data)
            return
        transport.write(data)
        if not answer._held and not answer._ended:
            # Taken at once: nothing to wait for.
            answer._ended = True
            transport.unregisterProducer()

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: hold the row-keeping.
        """
        if not self._held and not self._ended:
            self._held = True
            self._tasks.hold()

    def resumeProducing(self) -> None:
        """
        The transport has written all: release the row-keeping.
        """
        self._end()
        self._transport.unregisterProducer()

    def stopProducing(self) -> None:
        """
        The connection is lost: release the row-keeping.
        """
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            if self._held:
                self._tasks.release()
