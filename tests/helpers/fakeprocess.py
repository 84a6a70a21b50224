"""
A memory reactor that spawns no process: it records each C{spawnProcess}
call and lets the test say what the process writes and how it exits.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure


class FakeProcess:
    """
    A process spawned on L{ProcessReactor}: what it was spawned with, and
    what became of its pipes.
    """

    def __init__(
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: dict[str, str],
        path: str | None,
        pid: int | None,
    ):
        self.protocol = protocol
        self.executable = executable
        self.args = args
        self.env = env
        self.path = path
        self.pid = pid
        self.stdinClosed = False
        self.pipesClosed = False
        self.signals: list[str] = []
        #: How many times the process was looked for with C{reapProcess}.
        self.reaps = 0
        self._untold: Failure | None = None

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def loseConnection(self) -> None:
        self.pipesClosed = True

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)

    def write(self, fd: int, data: bytes) -> None:
        """
        The process writes C{data} on C{fd}.
        """
        self.protocol.childDataReceived(fd, data)

    def exit(
        self, code: int = 0, signal: int | None = None, pipesHeld: bool = False, told: bool = True
    ) -> None:
        """
        The process exits with C{code}, or is ended by C{signal}; then its
        pipes close, unless C{pipesHeld} (a program it left in the
        background holds them).  Unless C{told}, the protocol learns it
        only at the next L{reapProcess} (a reactor that handles no
        C{SIGCHLD}).
        """
        if code == 0 and signal is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(code if signal is None else None, signal))
        if not told:
            self._untold = reason
            return
        self._tell(reason, pipesHeld)

    def reapProcess(self) -> None:
        """
        Look for the process's end, as C{waitpid} with C{WNOHANG} does.
        """
        self.reaps += 1
        reason, self._untold = self._untold, None
        if reason is not None:
            self._tell(reason, False)

    def _tell(self, reason: Failure, pipesHeld: bool) -> None:
        """
        Tell the protocol that the process ended for C{reason}.
        """
        self.protocol.processExited(reason)
        if not pipesHeld:
            self.protocol.processEnded(reason)


class ProcessReactor(MemoryReactorClock):
    """
    A memory reactor with a clock whose C{spawnProcess} records a
    L{FakeProcess}, and whose process groups are killed by L{killGroup}.

    @ivar processes: Every process spawned, in order.
    @ivar killed: Each (process group, signal) sent by L{killGroup}.
    @ivar refuse: When set, C{spawnProcess} raises it.
    @ivar noGroups: Whether L{killGroup} finds no group, as before the
        child has made its own.
    @ivar exitAtOnce: When set, each process exits with this code before
        C{spawnProcess} returns, and its C{pid} is C{None} then: Twisted
        reaps a child that ended before its reaper was registered at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.killed: list[tuple[int, int]] = []
        self.refuse: OSError | None = None
        self.noGroups = False
        self.exitAtOnce: int | None = None

    def spawnProcess(
        self,
        processProtocol: Any,
        executable: str,
        args: Any = (),
        env: Any = None,
        path: str | None = None,
        uid: Any = None,
        gid: Any = None,
        usePTY: bool = False,
        childFDs: Any = None,
    ) -> FakeProcess:
        if self.refuse is not None:
            raise self.refuse
        process = FakeProcess(
            processProtocol, executable, list(args), dict(env), path, 1000 + len(self.processes)
        )
        self.processes.append(process)
        processProtocol.makeConnection(process)
        if self.exitAtOnce is not None:
            process.exit(self.exitAtOnce)
            process.pid = None
        return process

    def killGroup(self, pgid: int, signal: int) -> None:
        """
        Record that C{signal} was sent to the process group C{pgid}.
        """
        if self.noGroups:
            raise ProcessLookupError(3, "No such process")
        self.killed.append((pgid, signal))
