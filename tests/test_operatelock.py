"""
The operations command's full path (L{letsencrypt_resource.cli}) and the
state directory's lock: a C{status} run alone holds it as a reader, and a
lock held by a reader is waited for on the reactor's clock, not blocking
it.
"""

from __future__ import annotations

import io
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import cli, control
from letsencrypt_resource.storage.lock import StateDirectoryLocked, StateLock


class OperateLockTests(SynchronousTestCase):
    """
    C{cli._operate} with no server answering, an operation run alone
    standing in for the real one.
    """

    def setUp(self) -> None:
        self.state = os.path.abspath(self.mktemp())
        os.makedirs(self.state, 0o700)
        self.clock = Clock()
        self.holders: list[str] = []
        self.slept: list[float] = []

        async def askServer(*args: Any) -> object:
            raise ConnectError("no server")

        async def runAlone(*args: Any, **kwargs: Any) -> str:
            with open(os.path.join(self.state, "lock")) as stream:
                self.holders.append(stream.read())
            return "done"

        def timedLock(directory: str) -> StateLock:
            return StateLock(directory, sleep=self.sleep, now=self.clock.seconds)

        self.patch(control, "askServer", askServer)
        self.patch(control, "StateLock", timedLock)
        self.patch(cli, "_runAlone", runAlone)

    def sleep(self, seconds: float) -> None:
        """
        A blocking wait, noted; the fake time goes on.
        """
        self.slept.append(seconds)
        self.clock.advance(seconds)

    def operate(self, name: str) -> Deferred[tuple[Any, bool]]:
        """
        Run the operation C{name} as the command does.
        """
        return Deferred.fromCoroutine(
            cli._operate(self.clock, None, self.state, name, {}, io.StringIO())  # type: ignore[arg-type]
        )

    def test_statusAsReader(self) -> None:
        """
        A C{status} run alone holds the lock as a reader (a server that
        starts meanwhile waits for it); another operation as a holder that
        changes the state.
        """
        self.assertEqual(self.successResultOf(self.operate("status")), ("done", False))
        self.assertEqual(self.successResultOf(self.operate("renew")), ("done", False))
        pid = os.getpid()
        self.assertEqual(self.holders, [f"{pid} reader", f"{pid}"])

    def test_readerWaitedOnTheClock(self) -> None:
        """
        While a reader holds the lock, the command waits on its reactor's
        clock, asking again, without blocking; it runs once the reader lets
        go.
        """
        reader = StateLock(self.state)
        reader.acquire(reader=True)
        self.addCleanup(reader.release)
        operating = self.operate("renew")
        self.clock.advance(cli.SERVER_START_WAIT / 2)
        self.assertNoResult(operating)
        reader.release()
        self.clock.advance(cli.SERVER_START_WAIT / 2)
        self.assertEqual(self.successResultOf(operating), ("done", False))
        self.assertEqual(self.slept, [])

    def test_readerStays(self) -> None:
        """
        A reader that keeps the lock past L{cli.SERVER_START_WAIT} seconds
        refuses the command, naming it, without a blocking wait.
        """
        reader = StateLock(self.state)
        reader.acquire(reader=True)
        self.addCleanup(reader.release)
        operating = self.operate("status")
        self.clock.advance(cli.SERVER_START_WAIT)
        error = self.failureResultOf(operating, StateDirectoryLocked).value
        self.assertEqual(error.holder, f"pid {os.getpid()}")
        self.assertEqual(self.slept, [])
