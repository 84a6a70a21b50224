"""
One run of the deploy command: spawned in a session (so a process group)
of its own by C{setsid(1)}, its output logged within bounds (see
L{letsencrypt_resource.deployoutput}), its process group killed past its
time limit, when the server stops, and once it has ended (so that nothing
it started in the background outlives it), and how it ended told as a
L{DeployFailed} or a return.

Why C{setsid(1)} and not a Python wrapper: Twisted's C{spawnProcess} has
no C{preexec_fn}, so something must call C{setsid()} between the fork and
the command.  C{setsid(1)} (util-linux) calls it and C{exec}s the command
in the same process (a child of the server never leads a process group,
so it does not fork), keeping the signal dispositions Twisted gave the
child: Twisted resets the signals the server ignores to their default
before C{exec}.  An interpreter would ignore C{SIGPIPE} and C{SIGXFSZ}
again at its start, and C{exec} keeps ignored signals; and in a frozen or
embedded host C{sys.executable} is not an interpreter at all.
"""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .certificates import CertifiedKey
from .deploycommand import findProgram
from .deployoutput import OutputLines, printable

#: The program that starts each command in a session of its own.
SETSID = "/usr/bin/setsid"
#: The variables of the server's environment the command gets.
PASSED_VARIABLES = ("PATH", "LANG")
#: Seconds the output of a command that has exited may still be read:
#: pipes a program it left in the background holds are not waited for
#: longer.
OUTPUT_GRACE = 2.0
#: Seconds a killed command has to exit before its run ends all the same
#: (a process in uninterruptible sleep outlives C{SIGKILL}).
KILL_GRACE = 5.0


def environment(
    passed: Mapping[str, str],
    domains: tuple[str, ...],
    issued: CertifiedKey,
    folder: str | None,
) -> dict[str, str]:
    """
    The environment of a deploy command: L{PASSED_VARIABLES} from
    C{passed}, and the C{LETSENCRYPT_} variables for the set of C{domains}
    and its certificate C{issued}, exported to C{folder} (none without a
    store directory; made absolute, since the command runs from C{/}).
    """
    env = {name: passed[name] for name in PASSED_VARIABLES if name in passed}
    env.setdefault("PATH", os.defpath)
    env["LETSENCRYPT_DOMAINS"] = " ".join(domains)
    env["LETSENCRYPT_NOT_AFTER"] = issued.notAfter.isoformat()
    if folder is not None:
        folder = os.path.abspath(folder)
        env["LETSENCRYPT_DIRECTORY"] = folder
        env["LETSENCRYPT_CERTIFICATE"] = os.path.join(folder, "cert.pem")
        env["LETSENCRYPT_KEY"] = os.path.join(folder, "privkey.pem")
        env["LETSENCRYPT_CHAIN"] = os.path.join(folder, "chain.pem")
        env["LETSENCRYPT_FULLCHAIN"] = os.path.join(folder, "fullchain.pem")
    return env


def commandText(command: tuple[str, ...]) -> str:
    """
    C{command} as event 20245 shows it: quoted as a shell would need it,
    its control characters (a newline in an argument) escaped.
    """
    return printable(shlex.join(command).encode("utf-8", "surrogateescape"))


class DeployFailed(Exception):
    """
    A deploy command failed.

    @ivar details: How, for event 20247.
    """

    def __init__(self, details: str):
        super().__init__(details)
        self.details = details


class _DeployProcess(ProcessProtocol):
    """
    One process: its output goes to L{OutputLines}; C{ended} fires with the
    exception that tells how it exited (C{ProcessDone} or
    C{ProcessTerminated}), or C{None} when it was given up on.

    @ivar pid: The process's ID, and so its process group's, read when it
        is connected: a process that exits at once is reaped before
        C{spawnProcess} returns, and its transport's C{pid} is then C{None}.
    """

    def __init__(self, output: OutputLines, reactor: Any):
        self._output = output
        self._reactor = reactor
        self._grace: Any = None
        self.pid = 0
        self.ended: Deferred[BaseException | None] = Deferred()

    def makeConnection(self, transport: Any) -> None:
        self.pid = transport.pid
        super().makeConnection(transport)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._output.received(childFD, data)

    def processExited(self, reason: Failure) -> None:
        # The last lines may still be in the pipes: read them until they
        # close (processEnded), but a program the command left running in
        # the background may hold them open for ever.
        self._grace = self._reactor.callLater(OUTPUT_GRACE, self.end, reason.value)

    def processEnded(self, reason: Failure) -> None:
        self.end(reason.value)

    def end(self, reason: BaseException | None) -> None:
        """
        The run is over, whatever the process does next.
        """
        if self.ended.called:
            return
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._output.finished()
        self.ended.callback(reason)


def _exitProblem(error: BaseException | None) -> str | None:
    """
    What went wrong, by how the process exited; C{None} when it worked.
    """
    if not isinstance(error, ProcessTerminated):
        return None
    if error.signal is not None:
        return f"it was ended by signal {error.signal} ({signal.Signals(error.signal).name})"
    return f"it exited with code {error.exitCode}"


class DeployRun:
    """
    One run of the command, from its spawning to its end.

    @ivar killed: Why its process group was killed, if it was.
    """

    def __init__(
        self,
        command: tuple[str, ...],
        timeout: float,
        reactor: Any,
        log: Logger,
        killGroup: Callable[[int, int], None],
        setsid: str,
    ):
        self._command = command
        self._timeout = timeout
        self._reactor = reactor
        self._log = log
        self._killGroup = killGroup
        self._setsid = setsid
        self._transport: Any = None
        self._pid = 0
        self._giveUp: Any = None
        self._process: _DeployProcess | None = None
        self.killed: str | None = None

    async def run(self, label: str, env: dict[str, str]) -> None:
        """
        Spawn the command for the set shown as C{label}, with C{env}, and
        wait for it to end; success is event 20246.

        @raise DeployFailed: saying why it failed.
        """
        program = findProgram(self._command[0], env["PATH"])
        if program is None:
            raise DeployFailed(f"the program {self._command[0]!r} is not found")
        events.DEPLOY_STARTED.emit(self._log, domains=label, command=commandText(self._command))
        started = self._reactor.seconds()
        process = self._process = _DeployProcess(OutputLines(label, self._log), self._reactor)
        arguments = [self._setsid, "--", program, *self._command[1:]]
        try:
            transport = self._transport = self._reactor.spawnProcess(
                process, self._setsid, arguments, env=env, path="/"
            )
        except OSError as error:
            raise DeployFailed(f"it could not be started: {error}") from None
        transport.closeStdin()
        self._pid = process.pid
        timer = self._reactor.callLater(
            self._timeout,
            self.kill,
            f"it ran longer than {self._timeout:.0f} seconds; its process group was killed",
        )
        try:
            reason = await process.ended
        finally:
            for call in (timer, self._giveUp):
                if call is not None and call.active():
                    call.cancel()
            transport.loseConnection()
            # What it left running in its group ends with it.
            self._signalGroup()
        if self.killed is not None:
            raise DeployFailed(self.killed)
        problem = _exitProblem(reason)
        if problem is not None:
            raise DeployFailed(problem)
        events.DEPLOY_SUCCEEDED.emit(
            self._log, domains=label, duration=f"{self._reactor.seconds() - started:.1f}"
        )

    def kill(self, why: str) -> None:
        """
        Kill the process group, for the reason C{why}; the run ends once
        the process exits, or L{KILL_GRACE} seconds later all the same.
        """
        if self._process is None or self._process.ended.called or self.killed is not None:
            return
        self.killed = why
        if not self._signalGroup():
            try:
                self._transport.signalProcess("KILL")
            except (OSError, ProcessExitedAlready):
                pass
        self._giveUp = self._reactor.callLater(KILL_GRACE, self._process.end, None)

    def _signalGroup(self) -> bool:
        """
        Send C{SIGKILL} to the command's process group.

        @return: Whether there was one (there is none before the child
            made it, nor once everything in it has exited).
        """
        try:
            self._killGroup(self._pid, signal.SIGKILL)
        except OSError:
            return False
        return True
