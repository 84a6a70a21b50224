"""
Deploy hooks: the C{deploy_command} run after each new certificate is
stored and exported, so that the programs that read the exported files
(see C{docs/operation.rst}) load them.

The command is an argument list run without a shell, one run at a time,
in a process group of its own, with a minimal environment: C{PATH} and
C{LANG} of the server, and the C{LETSENCRYPT_} variables of L{environment}
-- no other variable of the server's, so that no secret it holds reaches
the command.  Past C{deploy_timeout} seconds its whole process group is
killed.  Its output is logged as events, within bounds (see
L{letsencrypt_resource.deployoutput}).  A failure is event 20247 and the
command runs again at the next check; nothing else waits for it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .certificates import CertifiedKey
from .config import ResourceOptions
from .coroutines import deferred
from .deploycommand import findProgram
from .deployoutput import OutputLines
from .limiter import Limiter
from .managed import ManagedCertificate
from .reporting import unexpected

#: Run by the interpreter as the child: make a new session (so a new
#: process group, of which the command is the leader), then become the
#: command: C{argv[1]} is the program's path, C{argv[2:]} its arguments.
NEW_GROUP = "import os,sys;os.setsid();os.execv(sys.argv[1],sys.argv[2:])"
#: The variables of the server's environment the command gets.
PASSED_VARIABLES = ("PATH", "LANG")


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
    store directory).
    """
    env = {name: passed[name] for name in PASSED_VARIABLES if name in passed}
    env.setdefault("PATH", os.defpath)
    env["LETSENCRYPT_DOMAINS"] = " ".join(domains)
    env["LETSENCRYPT_NOT_AFTER"] = issued.notAfter.isoformat()
    if folder is not None:
        env["LETSENCRYPT_DIRECTORY"] = folder
        env["LETSENCRYPT_CERTIFICATE"] = os.path.join(folder, "cert.pem")
        env["LETSENCRYPT_KEY"] = os.path.join(folder, "privkey.pem")
        env["LETSENCRYPT_CHAIN"] = os.path.join(folder, "chain.pem")
        env["LETSENCRYPT_FULLCHAIN"] = os.path.join(folder, "fullchain.pem")
    return env


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
    One run: its output goes to L{OutputLines}; C{exited} fires with the
    exception that tells how it exited (C{ProcessDone} or
    C{ProcessTerminated}).
    """

    def __init__(self, output: OutputLines):
        self._output = output
        self.exited: Deferred[BaseException | None] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._output.received(childFD, data)

    def processExited(self, reason: Failure) -> None:
        # Not processEnded: a program the command left running in the
        # background may hold the pipes open for ever.
        self._output.finished()
        self.exited.callback(reason.value)


def _exitProblem(error: BaseException | None) -> str | None:
    """
    What went wrong, by how the process exited; C{None} when it worked.
    """
    if not isinstance(error, ProcessTerminated):
        return None
    if error.signal is not None:
        return f"it was ended by signal {error.signal} ({signal.Signals(error.signal).name})"
    return f"it exited with code {error.exitCode}"


class DeployHooks(Service):
    """
    Runs the deploy command for each new certificate, one run at a time,
    and again at each check for those whose last run failed.
    """

    def __init__(
        self,
        options: ResourceOptions,
        reactor: Any,
        log: Logger,
        environ: Mapping[str, str] = os.environ,
        killGroup: Callable[[int, int], None] = os.killpg,
        python: str = sys.executable,
    ):
        """
        @param reactor: Spawns the processes and times them out.
        @param log: Where events go.
        @param environ: The server's environment, of which only
            L{PASSED_VARIABLES} are passed.
        @param killGroup: Sends a signal to a process group.
        @param python: The interpreter that starts each command in a
            process group of its own (see L{NEW_GROUP}).
        """
        self._command = options.deployCommand
        self._timeout = options.deployTimeout
        self._reactor = reactor
        self._log = log
        self._environ = environ
        self._killGroup = killGroup
        self._python = python
        self._runs = Limiter(1)
        self._pending: set[Deferred[bool]] = set()
        self._running: dict[int, Any] = {}
        self._latest: dict[frozenset[str], object] = {}
        self._failed: dict[frozenset[str], tuple[ManagedCertificate, CertifiedKey, str | None]] = {}

    def deploy(
        self, certificate: ManagedCertificate, issued: CertifiedKey, folder: str | None
    ) -> Deferred[bool]:
        """
        Run the command, if one is configured, for C{issued}, the new
        certificate of C{certificate}, exported to C{folder}, after the runs
        before it.

        @return: A Deferred that fires with whether it ran and worked; it
            never fails.
        """
        if self._command is None or not self.running:
            return succeed(False)
        key = frozenset(certificate.domains)
        token = self._latest[key] = object()
        self._failed.pop(key, None)
        run = self._runs.run(self._runOnce, certificate, issued, folder)
        self._pending.add(run)

        def ended(result: bool | Failure) -> bool:
            self._pending.discard(run)
            if isinstance(result, Failure):
                if not result.check(CancelledError):
                    unexpected(self._log, result)
                return False
            if not result and self._latest.get(key) is token:
                self._failed[key] = (certificate, issued, folder)
            return result

        return run.addBoth(ended)

    def retry(self) -> None:
        """
        Run the command again for each certificate whose last run failed.
        """
        failed, self._failed = self._failed, {}
        for certificate, issued, folder in failed.values():
            self.deploy(certificate, issued, folder)

    def forget(self, certificate: ManagedCertificate) -> None:
        """
        C{certificate}'s set is no longer used: its failed run is not run
        again.
        """
        key = frozenset(certificate.domains)
        self._failed.pop(key, None)
        self._latest.pop(key, None)

    @property
    def failed(self) -> frozenset[frozenset[str]]:
        """
        The domain sets whose last run failed, to run again.
        """
        return frozenset(self._failed)

    def stopService(self) -> Deferred[None]:
        """
        Drop the runs waiting and kill the process group of the one running.
        """
        super().stopService()
        for pid in list(self._running):
            self._kill(pid)
        for run in list(self._pending):
            run.cancel()
        return succeed(None)

    @deferred
    async def _runOnce(
        self, certificate: ManagedCertificate, issued: CertifiedKey, folder: str | None
    ) -> bool:
        """
        Run the command once, and log how it went.
        """
        if not self.running:
            return False
        label = certificate.label
        env = environment(self._environ, certificate.domains, issued, folder)
        try:
            await self._spawn(label, env)
        except DeployFailed as failure:
            events.DEPLOY_FAILED.emit(self._log, domains=label, details=failure.details)
            return False
        return True

    async def _spawn(self, label: str, env: dict[str, str]) -> None:
        """
        Spawn the command and wait for it to exit.

        @raise DeployFailed: saying why it failed.
        """
        assert self._command is not None
        program = findProgram(self._command[0], env["PATH"])
        if program is None:
            raise DeployFailed(f"the program {self._command[0]!r} is not found")
        events.DEPLOY_STARTED.emit(self._log, domains=label, command=" ".join(self._command))
        started = self._reactor.seconds()
        process = _DeployProcess(OutputLines(label, self._log))
        arguments = [self._python, "-I", "-S", "-c", NEW_GROUP, program, *self._command]
        try:
            transport = self._reactor.spawnProcess(
                process, self._python, arguments, env=env, path="/"
            )
        except OSError as error:
            raise DeployFailed(f"it could not be started: {error}") from None
        transport.closeStdin()
        pid = transport.pid
        self._running[pid] = transport
        timedOut: list[bool] = []

        def timeUp() -> None:
            timedOut.append(True)
            self._kill(pid)

        timer = self._reactor.callLater(self._timeout, timeUp)
        try:
            reason = await process.exited
        finally:
            del self._running[pid]
            if timer.active():
                timer.cancel()
            transport.loseConnection()
        if timedOut:
            raise DeployFailed(
                f"it ran longer than {self._timeout:.0f} seconds; its process group was killed"
            )
        problem = _exitProblem(reason)
        if problem is not None:
            raise DeployFailed(problem)
        events.DEPLOY_SUCCEEDED.emit(
            self._log, domains=label, duration=f"{self._reactor.seconds() - started:.1f}"
        )

    def _kill(self, pid: int) -> None:
        """
        Kill the process group of the command of process C{pid}, or the
        process alone when it has not made its group yet (just spawned).
        """
        try:
            self._killGroup(pid, signal.SIGKILL)
        except OSError:
            try:
                self._running[pid].signalProcess("KILL")
            except (OSError, ProcessExitedAlready):
                pass
