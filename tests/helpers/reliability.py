"""
Shared pieces of the slow reliability tests (L{tests.helpers.slow}): the
tally of a campaign's runs and a twistd process watched line by line.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from tests.helpers.processcase import environment, twistdCommand


@attrs.define
class Row:
    """
    One line of the result table.

    @ivar fault: What was done.
    @ivar runs: How many times.
    @ivar passed: How many runs met every check.
    @ivar dataLost: Runs after which stored data was missing, older than
        before, or not loadable.
    @ivar notes: Measurements and findings.
    """

    fault: str
    runs: int = 0
    passed: int = 0
    dataLost: int = 0
    notes: list[str] = attrs.Factory(list)
    failures: list[str] = attrs.Factory(list)

    def record(self, problems: list[str], lost: bool = False) -> None:
        """
        Count one run with C{problems} (none: it passed).
        """
        self.runs += 1
        if not problems:
            self.passed += 1
        if lost:
            self.dataLost += 1
        self.failures.extend(f"run {self.runs}: {p}" for p in problems)

    @property
    def ok(self) -> bool:
        """
        Whether it ran, every run passed, and none lost data.
        """
        return self.runs > 0 and self.passed == self.runs and self.dataLost == 0

    def report(self) -> str:
        """
        The row as a line of text: what was done, the counts, the notes and
        the failures.
        """
        lines = [
            f"{self.fault}: {self.passed}/{self.runs} passed, data lost after {self.dataLost}",
            *(f"  note: {note}" for note in self.notes),
            *(f"  failure: {failure}" for failure in self.failures[:200]),
        ]
        return "\n".join(lines)


def assertAllPassed(case: Any, rows: list[Row]) -> None:
    """
    Fail C{case} unless every row of a campaign ran and passed, with the
    whole table as the message; the table goes to the test log either way.
    """
    table = "\n".join(row.report() for row in rows)
    print(table)
    case.assertTrue(all(row.ok for row in rows), table)


class WatchedTwistd(ProcessProtocol):
    """
    C{twistd -n lets-encrypt --config PATH}, its output kept and written to
    a log file, with Deferreds that fire when a text has appeared so many
    times.
    """

    def __init__(self, reactor: Any, configPath: str, logPath: str) -> None:
        self.reactor = reactor
        self.output = b""
        self.ended: Deferred[int | None] = Deferred()
        self.exitCode: int | None = None
        self.exitSignal: int | None = None
        self._waiting: list[tuple[bytes, int, Deferred[None]]] = []
        self._log = open(logPath, "wb")
        command = twistdCommand()
        self.process = reactor.spawnProcess(
            self,
            command[0],
            command + ["-n", "--pidfile=", "lets-encrypt", "--config", configPath],
            env=environment(),
            path=os.path.dirname(configPath),
        )
        self.started = reactor.seconds()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self._log.write(data)
        for entry in list(self._waiting):
            text, count, deferred = entry
            if self.output.count(text) >= count:
                self._waiting.remove(entry)
                deferred.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self._log.close()
        self.exitCode = getattr(reason.value, "exitCode", None)
        self.exitSignal = getattr(reason.value, "signal", None)
        waiting, self._waiting = self._waiting, []
        for _, _, deferred in waiting:
            deferred.errback(EOFError("twistd ended"))
        self.ended.callback(self.exitCode)

    def seen(self, text: bytes, count: int = 1) -> Deferred[None]:
        """
        Fire once C{text} appeared C{count} times in the output.
        """
        deferred: Deferred[None] = Deferred()
        if self.output.count(text) >= count:
            deferred.callback(None)
        elif self.ended.called:
            deferred.errback(EOFError("twistd ended"))
        else:
            self._waiting.append((text, count, deferred))
        return deferred

    @property
    def running(self) -> bool:
        return not self.ended.called

    def kill(self) -> Deferred[int | None]:
        """
        SIGKILL, and fire when it has ended.
        """
        if self.running:
            self.process.signalProcess(signal.SIGKILL)
        return self.ended

    def terminate(self) -> Deferred[int | None]:
        """
        SIGTERM, and fire when it has ended.
        """
        if self.running:
            self.process.signalProcess(signal.SIGTERM)
        return self.ended

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")
