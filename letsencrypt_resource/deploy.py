"""
Deploy hooks: the C{deploy_command} run after each new certificate is
stored and exported, so that the programs that read the exported files
(see C{docs/operation.rst}) load them.

The command is an argument list run without a shell, one run at a time,
in a process group of its own, with a minimal environment (see
L{letsencrypt_resource.deployrun}).  A run that is due is recorded, as a
fact of this node (see L{letsencrypt_resource.deployflags}), before it
starts and cleared once it worked, so that a run that failed, was killed
at a stop, or had no time to start runs again: at the next check, after a
failure (at a pace that slows down while it keeps failing), or at the
next start.  In a cluster each node runs the command for the
certificates it puts in service, whichever node ordered them, and a node
that was down when another stored a new certificate runs it at its next
start (see L{letsencrypt_resource.deployflags}).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .certificates import CertifiedKey
from .config import ResourceOptions
from .coroutines import deferred
from .deployflags import DeployFlags
from .deployrun import SETSID, DeployFailed, DeployRun, environment
from .limiter import Limiter
from .managed import ManagedCertificate
from .reporting import unexpected

#: Seconds before a failed run is tried again, doubled at each failure
#: after the first, up to L{RETRY_MAX}.
RETRY_BASE = 300.0
#: The longest wait before a failed run is tried again.
RETRY_MAX = 86400.0
#: Why a run under way when the server stops is killed.
STOPPED = "the server stopped while it ran; its process group was killed"
#: Why a run that was waiting when the server stopped did not run.
NOT_STARTED = "the server stopped before it ran"


class DeployHooks(Service):
    """
    Runs the deploy command for each new certificate, one run at a time,
    and again at the checks for those whose run is still due.

    @ivar again: Asks for the run of a set whose run is still due, at a
        check: by exporting its certificate again, then running the
        command (see L{letsencrypt_resource.composition}); by default, by
        running it with no folder.
    """

    def __init__(
        self,
        options: ResourceOptions,
        reactor: Any,
        log: Logger,
        managed: Mapping[frozenset[str], ManagedCertificate] | None = None,
        save: Callable[[ManagedCertificate], object] = lambda certificate: None,
        written: Callable[[], Deferred[None]] = lambda: succeed(None),
        environ: Mapping[str, str] = os.environ,
        killGroup: Callable[[int, int], None] = os.killpg,
        setsid: str = SETSID,
        recorded: DeployFlags | None = None,
    ):
        """
        @param reactor: Spawns the processes and times them out.
        @param log: Where events go.
        @param managed: The sets in service, by their names.
        @param save: Records whether the run of a set is due on this node,
            as its C{deployPending} flag says, after the writes before it.
        @param written: Waits for the writes under way: at a stop, the
            exports that end meanwhile still ask for their runs.
        @param environ: The server's environment, of which only
            C{PATH} and C{LANG} are passed.
        @param killGroup: Sends a signal to a process group.
        @param setsid: The program that starts each command in a session
            of its own (see L{letsencrypt_resource.deployrun}).
        @param recorded: The records of the runs due on this node, read by
            L{readRecorded} at the start: a set they name is due again;
            their writes that failed are tried again at each check.
        """
        self._command = options.deployCommand
        self._timeout = options.deployTimeout
        self._reactor = reactor
        self._log = log
        self._managed = managed if managed is not None else {}
        self._save = save
        self._written = written
        self._environ = environ
        self._killGroup = killGroup
        self._setsid = setsid
        self._recorded = recorded
        self._runs = Limiter(1)
        self._pending: set[Deferred[bool]] = set()
        self._underWay: set[DeployRun] = set()
        self._latest: dict[frozenset[str], object] = {}
        self._failures: dict[frozenset[str], int] = {}
        self._retryAt: dict[frozenset[str], float] = {}
        self._stopped = False
        self.again: Callable[[ManagedCertificate], object] = lambda certificate: self.deploy(
            certificate, certificate.issued, None
        )

    def want(self, certificate: ManagedCertificate) -> None:
        """
        A new certificate of C{certificate} will be exported: record, with
        its renewal state, that its run is due.
        """
        if self._command is not None and not certificate.deployPending:
            certificate.deployPending = True
            self._save(certificate)

    def deploy(
        self, certificate: ManagedCertificate, issued: CertifiedKey | None, folder: str | None
    ) -> Deferred[bool]:
        """
        Run the command, if one is configured, for C{issued}, the new
        certificate of C{certificate}, exported to C{folder}, after the runs
        before it; stopped, only record that it is due.  With no command,
        a run due has nothing left to do: it is no longer due.

        @return: A Deferred that fires with whether it ran and worked; it
            never fails.
        """
        if self._command is None:
            if certificate.deployPending:
                # Recorded by another node, or while a command was set:
                # nothing is left to do now that the certificate is exported.
                certificate.deployPending = False
                self._save(certificate)
            return succeed(False)
        if issued is None:
            return succeed(False)
        self.want(certificate)
        if not self.running:
            return succeed(False)
        key = frozenset(certificate.domains)
        token = self._latest[key] = object()
        run = self._runs.run(self._runOnce, certificate, issued, folder)
        self._pending.add(run)

        def ended(result: bool | Failure) -> bool:
            self._pending.discard(run)
            if isinstance(result, Failure):
                if not result.check(CancelledError):
                    unexpected(self._log, result)
                result = False
            if self._latest.get(key) is token:
                del self._latest[key]
                self._ended(certificate, result)
            return result

        return run.addBoth(ended)

    def _ended(self, certificate: ManagedCertificate, worked: bool) -> None:
        """
        The latest run for C{certificate} ended: when it C{worked}, it is no
        longer due; otherwise it is tried again later, each failure in a row
        doubling the wait.
        """
        key = frozenset(certificate.domains)
        if worked:
            self._failures.pop(key, None)
            self._retryAt.pop(key, None)
            certificate.deployPending = False
            self._save(certificate)
            return
        if self._stopped:
            return
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = min(RETRY_BASE * 2 ** (failures - 1), RETRY_MAX)
        self._retryAt[key] = self._reactor.seconds() + delay

    def retry(self) -> None:
        """
        Ask again for the run of each set in service whose run is due (it
        failed, or was left when the server last stopped) and is not under
        way, once its wait after its failures is over.
        """
        now = self._reactor.seconds()
        recorded = self._recorded
        if recorded is not None:
            recorded.retry()
        # Usually none is left to ask for: not a key made for every set.
        asking = recorded if recorded is not None and recorded.waiting else None
        for certificate in list(self._managed.values()):
            if asking is not None and asking.wasDue(certificate):
                certificate.deployPending = True
            if not certificate.deployPending or certificate.issued is None:
                # A set not in service yet (its stored certificate is still
                # being read at the start) runs at the first check after.
                continue
            key = frozenset(certificate.domains)
            if key not in self._latest and now >= self._retryAt.get(key, 0.0):
                # Not again before the export it may wait for is done.
                self._retryAt[key] = now + RETRY_BASE
                self.again(certificate)

    def forget(self, certificate: ManagedCertificate) -> None:
        """
        C{certificate}'s set is no longer used: forget its failures.
        """
        key = frozenset(certificate.domains)
        self._failures.pop(key, None)
        self._retryAt.pop(key, None)

    @property
    def failed(self) -> frozenset[frozenset[str]]:
        """
        The domain sets whose last run failed, to run again.
        """
        return frozenset(self._failures)

    def startService(self) -> None:
        """
        Start; the runs recorded as due are read once the sets are loaded
        (see L{readRecorded}).
        """
        self._stopped = False
        super().startService()

    @deferred
    async def readRecorded(self) -> None:
        """
        Read the runs recorded as due on this node (when it last ran, or by
        another node that stored a new certificate meanwhile) and ask for
        them, now for the sets in service, at the checks for the others;
        then delete the records of sets this node does not manage.
        """
        recorded = self._recorded
        if recorded is None:
            return
        await recorded.load()
        if self.running:
            self.retry()
            recorded.dropLeft()

    @deferred
    async def stopService(self) -> None:
        """
        Wait for the writes under way (an export that ends still asks for
        its run), then for the runs under way and waiting, up to
        C{deploy_timeout} seconds; then kill the one under way and drop the
        others, each event 20247.  They are still due in the sets' renewal
        state, and run at the next start.
        """
        await self._written()
        super().stopService()
        timer = self._reactor.callLater(self._timeout, self._stop)
        await DeferredList(list(self._pending))
        if timer.active():
            timer.cancel()

    def _stop(self) -> None:
        """
        Stop waiting for the runs: kill the one under way, start no other.
        """
        self._stopped = True
        for run in list(self._underWay):
            run.kill(STOPPED)

    @deferred
    async def _runOnce(
        self, certificate: ManagedCertificate, issued: CertifiedKey, folder: str | None
    ) -> bool:
        """
        Run the command once, and log how it went.
        """
        label = certificate.label
        if self._stopped:
            events.DEPLOY_FAILED.emit(self._log, domains=label, details=NOT_STARTED)
            return False
        assert self._command is not None
        env = environment(self._environ, certificate.domains, issued, folder)
        run = DeployRun(
            self._command, self._timeout, self._reactor, self._log, self._killGroup, self._setsid
        )
        self._underWay.add(run)
        try:
            await run.run(label, env)
        except DeployFailed as failure:
            events.DEPLOY_FAILED.emit(self._log, domains=label, details=failure.details)
            return False
        finally:
            self._underWay.discard(run)
        return True
