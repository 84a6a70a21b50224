"""
The status rows kept ahead wait while the control socket writes an answer
(L{letsencrypt_resource.answerwrites}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Cooperator
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.answerwrites import AnswerWrite, KeepingTasks
from tests.helpers.slowsocket import SlowSocket


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
        self.keeping = KeepingTasks(cooperator)
        self.steps = 0

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
    L{AnswerWrite.write} holds the row-keeping while an answer too long for
    one write of the socket is being written.
    """

    def test_heldUntilWritten(self) -> None:
        """
        An answer the socket takes in three writes holds the row-keeping
        from the moment it is given until its last part is written; then
        the transport has no producer left.
        """
        self.keeping.cooperate(self.counting())
        self.assertGreater(self.turns(1), 0)
        socket = SlowSocket(100_000)
        AnswerWrite.write(socket, self.keeping, b"x" * 250_000)
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
        AnswerWrite.write(socket, self.keeping, b"x" * 1000)
        self.assertIsNone(socket.producer)
        self.assertGreater(self.turns(), 0)

    def test_lostReleases(self) -> None:
        """
        A connection lost while its answer is written releases the
        row-keeping.
        """
        self.keeping.cooperate(self.counting())
        socket = SlowSocket(100_000)
        AnswerWrite.write(socket, self.keeping, b"x" * 250_000)
        socket.connectionLost(Failure(ConnectionDone()))
        self.assertGreater(self.turns(), 0)

    def test_secondAnswerHeldWithFirst(self) -> None:
        """
        A second answer on a connection still writing its first is written
        after it, and the row-keeping held until both are written.
        """
        self.keeping.cooperate(self.counting())
        socket = SlowSocket(100_000)
        AnswerWrite.write(socket, self.keeping, b"a" * 150_000)
        AnswerWrite.write(socket, self.keeping, b"b" * 150_000)
        socket.doWrite()
        socket.doWrite()
        self.assertEqual(self.turns(), 0)
        socket.doWrite()
        self.assertEqual(socket.written, b"a" * 150_000 + b"b" * 150_000)
        self.assertGreater(self.turns(), 0)

    def test_heldUntilLastConnectionWritten(self) -> None:
        """
        With answers written on two connections, the row-keeping is held
        until both are written.
        """
        self.keeping.cooperate(self.counting())
        first, second = SlowSocket(100_000), SlowSocket(100_000)
        AnswerWrite.write(first, self.keeping, b"x" * 150_000)
        AnswerWrite.write(second, self.keeping, b"x" * 150_000)
        first.doWrite()
        first.doWrite()
        self.assertEqual(self.turns(), 0)
        second.doWrite()
        second.doWrite()
        self.assertGreater(self.turns(), 0)


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
