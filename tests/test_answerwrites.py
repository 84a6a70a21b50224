"""
The status rows kept ahead wait while the control socket writes an answer
(L{letsencrypt_resource.answerwrites}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, Cooperator
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.answerwrites import HOLD_LIMIT, AnswerWrite, KeepingTasks
from letsencrypt_resource.controlsocket import STATUS_ANSWER_WAIT
from tests.helpers.slowsocket import SlowSocket


class PausingReader:
    """
    What reads a connection: records its resumes in C{calls}.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        """
        Never called: the connection's protocol pauses itself.
        """
        raise AssertionError("pauseProducing")

    def resumeProducing(self) -> None:
        """
        Read again.
        """
        self.calls.append("resume")


class KeepingCase(SynchronousTestCase):
    """
    Tasks of a cooperator whose turns the test runs (L{turns}), counting
    their steps.
    """

    def setUp(self) -> None:
        self.scheduled: list[Callable[[], None]] = []

        def schedule(work: Callable[[], None]) -> object:
            self.scheduled.append(work)
            return self

        # One step of each task a turn.
        cooperator = Cooperator(
            scheduler=schedule, terminationPredicateFactory=lambda: lambda: True
        )
        self.clock = Clock()
        self.keeping = KeepingTasks(cooperator, self.clock)
        self.steps = 0

    def write(self, socket: SlowSocket, data: bytes) -> None:
        """
        Write C{data} as an answer on C{socket}, which reads it too.
        """
        AnswerWrite.write(socket, socket, self.keeping, data)

    def cancel(self) -> None:
        """
        A scheduled turn cancelled (the cooperator's stop): nothing to do.
        """

    def counting(self, n: int = 100) -> Iterator[None]:
        """
        C{n} steps, counted.
        """
        for _ in range(n):
            self.steps += 1
            yield None

    def turns(self, n: int = 3) -> int:
        """
        Run C{n} of the cooperator's turns, if scheduled; return the steps
        made in them.
        """
        before = self.steps
        for _ in range(n):
            if self.scheduled:
                self.scheduled.pop(0)()
        return self.steps - before


class AnswerWriteTests(KeepingCase):
    """
    L{AnswerWrite.write} holds the row-keeping while an answer that leaves
    more than the transport's buffer (64 KiB) pending is being written.
    """

    def test_heldUntilWritten(self) -> None:
        """
        An answer of more than the transport's buffer, which the socket
        takes in three writes, holds the row-keeping from the moment it is
        given until its last part is written; then the transport has no
        producer left.
        """
        self.keeping.cooperate(self.counting())
        self.assertGreater(self.turns(1), 0)
        socket = SlowSocket(100_000)
        self.write(socket, b"x" * 250_000)
        self.assertEqual(self.turns(), 0)
        socket.doWrite()
        socket.doWrite()
        self.assertEqual(self.turns(), 0)
        socket.doWrite()
        self.assertEqual(socket.written, b"x" * 250_000)
        self.assertIsNone(socket.producer)
        self.assertGreater(self.turns(), 0)

    def test_shortAnswerHoldsNothing(self) -> None:
        """
        An answer shorter than the transport's buffer does not hold the
        row-keeping, and leaves no producer.
        """
        self.keeping.cooperate(self.counting())
        socket = SlowSocket(100_000)
        self.write(socket, b"x" * 1000)
        self.assertIsNone(socket.producer)
        self.assertGreater(self.turns(), 0)

    def test_lostReleases(self) -> None:
        """
        A connection lost while its answer is written releases the
        row-keeping.
        """
        self.keeping.cooperate(self.counting())
        socket = SlowSocket(100_000)
        self.write(socket, b"x" * 250_000)
        socket.connectionLost(Failure(ConnectionDone()))
        self.assertGreater(self.turns(), 0)

    def test_heldUntilLastConnectionWritten(self) -> None:
        """
        With answers written on two connections, the row-keeping is held
        until both are written.
        """
        self.keeping.cooperate(self.counting())
        first, second = SlowSocket(100_000), SlowSocket(100_000)
        self.write(first, b"x" * 150_000)
        self.write(second, b"x" * 150_000)
        first.doWrite()
        first.doWrite()
        self.assertEqual(self.turns(), 0)
        second.doWrite()
        second.doWrite()
        self.assertGreater(self.turns(), 0)

    def test_holdBounded(self) -> None:
        """
        An answer its client does not read holds the row-keeping for
        L{HOLD_LIMIT} seconds, no longer; the answer is still written as
        the client reads, and its end releases nothing twice.
        """
        self.keeping.cooperate(self.counting())
        socket = SlowSocket(100_000)
        self.write(socket, b"x" * 250_000)
        self.clock.advance(HOLD_LIMIT - 0.1)
        self.assertEqual(self.turns(), 0)
        self.clock.advance(0.1)
        self.assertGreater(self.turns(1), 0)
        self.keeping.hold()
        for _ in range(3):
            socket.doWrite()
        self.assertEqual(socket.written, b"x" * 250_000)
        self.assertEqual(self.turns(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unreadConnectionAborted(self) -> None:
        """
        A connection whose answer is not all written after
        L{STATUS_ANSWER_WAIT} seconds is aborted; one written in time is
        not.
        """
        unread, read = SlowSocket(100_000), SlowSocket(100_000)
        self.write(unread, b"x" * 250_000)
        self.write(read, b"x" * 250_000)
        self.clock.advance(STATUS_ANSWER_WAIT - 1)
        for _ in range(3):
            read.doWrite()
        self.assertEqual((unread.aborted, read.aborted), (False, False))
        self.clock.advance(1)
        self.assertEqual((unread.aborted, read.aborted), (True, False))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_readOnceWritten(self) -> None:
        """
        The connection's reader is resumed once the answer is written: a
        short one at once, a held one when its last part is.
        """
        socket = SlowSocket(100_000)
        reader = PausingReader()
        AnswerWrite.write(socket, reader, self.keeping, b"x" * 1000)
        self.assertEqual(reader.calls, ["resume"])
        AnswerWrite.write(socket, reader, self.keeping, b"x" * 250_000)
        socket.doWrite()
        socket.doWrite()
        self.assertEqual(reader.calls, ["resume"])
        socket.doWrite()
        self.assertEqual(reader.calls, ["resume", "resume"])

    def test_notReadAfterLoss(self) -> None:
        """
        A connection lost while its answer is held is not read again.
        """
        socket = SlowSocket(100_000)
        reader = PausingReader()
        AnswerWrite.write(socket, reader, self.keeping, b"x" * 250_000)
        socket.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(reader.calls, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class KeepingTasksTests(KeepingCase):
    """
    L{KeepingTasks} pauses every task between L{KeepingTasks.hold} and
    L{KeepingTasks.release}.
    """

    def test_startedWhileHeld(self) -> None:
        """
        A task started while an answer is written waits for its end.
        """
        self.keeping.hold()
        self.keeping.cooperate(self.counting())
        self.assertEqual(self.turns(), 0)
        self.keeping.release()
        self.assertGreater(self.turns(), 0)

    def test_endedTasksForgotten(self) -> None:
        """
        Tasks that ended, done or stopped, are not paused or resumed.
        """
        stopped = self.keeping.cooperate(self.counting())
        self.keeping.cooperate(self.counting(1))
        self.turns()
        stopped.stop()
        self.keeping.hold()
        self.keeping.release()
        self.assertEqual(self.turns(), 0)
