"""
Tests for the deploy command: its options, its environment, how a run is
spawned, timed out and logged, its failures retried at the next check, and
when the resource runs it.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import deployrun
from letsencrypt_resource.config import ConfigurationError, parseConfiguration
from letsencrypt_resource.deploy import RETRY_BASE, RETRY_MAX, DeployHooks
from letsencrypt_resource.deploycommand import findProgram, parseCommand
from letsencrypt_resource.deployoutput import MAX_LINE_BYTES, MAX_LINES
from letsencrypt_resource.deployrun import KILL_GRACE, OUTPUT_GRACE, environment
from letsencrypt_resource.host import checkDeployCommand
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.testing import FakeACMEServer
from tests.helpers import selfSigned
from tests.helpers.configuration import resource
from tests.helpers.fakeprocess import FakeProcess, ProcessReactor
from tests.helpers.resourcecase import DAY, ResourceTestCase, resourceOptions
from tests.helpers.statedir import StateDirectory

#: The program the tests' commands name: one that exists everywhere.
PROGRAM = sys.executable


def configure(**options: str) -> Any:
    """
    A configuration whose resource sets C{options}.
    """
    return parseConfiguration(resource(**options), "/etc/le")


class CommandOptionTests(SynchronousTestCase):
    """
    C{deploy_command} and C{deploy_timeout} as the file has them.
    """

    def test_splitLikeAShell(self) -> None:
        """
        The command is split into arguments as a shell splits words, with
        quotes and backslashes, and nothing else a shell does.
        """
        self.assertEqual(
            parseCommand("""/usr/bin/reload 'a b' "c d" e\\ f $HOME *"""),
            ("/usr/bin/reload", "a b", "c d", "e f", "$HOME", "*"),
        )

    def test_refused(self) -> None:
        """
        An empty command, unbalanced quotes and a relative path are refused
        with a message saying which.
        """
        for text, expected in [
            ("''", "names no program"),
            ("/bin/reload 'a", "check its quotes"),
            ('/bin/reload "a', "check its quotes"),
            ("bin/reload", "relative path"),
            ("./reload", "relative path"),
        ]:
            with self.assertRaises(ValueError) as raised:
                parseCommand(text)
            self.assertIn(expected, str(raised.exception), text)

    def test_configurationNamesOption(self) -> None:
        """
        A bad command is a configuration error naming C{deploy_command}; a
        good one is the resource's C{deployCommand}, with the default time
        limit of 60 seconds.
        """
        with self.assertRaises(ConfigurationError) as raised:
            configure(deploy_command="/bin/reload 'unclosed")
        self.assertEqual(raised.exception.option, "deploy_command")
        resource = configure(deploy_command="systemctl reload vsftpd").resource
        self.assertEqual(resource.deployCommand, ("systemctl", "reload", "vsftpd"))
        self.assertEqual(resource.deployTimeout, 60.0)
        self.assertIsNone(configure().resource.deployCommand)

    def test_timeout(self) -> None:
        """
        The time limit is seconds, or a number with s, m or h, from one
        second to one hour.
        """
        for text, seconds in [("90", 90.0), ("2m", 120.0), ("1h", 3600.0)]:
            self.assertEqual(configure(deploy_timeout=text).resource.deployTimeout, seconds)
        for text in ("2h", "-1", "1.5", "soon"):
            with self.assertRaises(ConfigurationError):
                configure(deploy_timeout=text)
        with self.assertRaises(ConfigurationError) as raised:
            configure(deploy_timeout="0")
        self.assertEqual(raised.exception.option, "deploy_timeout")

    def test_programFoundAtLoad(self) -> None:
        """
        When the server loads its configuration, the program must be an
        executable file, or a name found on C{PATH}.
        """
        checkDeployCommand(configure(deploy_command=f"{PROGRAM} -c pass"))
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        script = os.path.join(folder, "reload")
        with open(script, "w") as stream:
            stream.write("#!/bin/sh\n")
        for command, expected in [
            (script, "is not an executable file"),
            ("no-such-program-here", "is not found on PATH"),
        ]:
            with self.assertRaises(ConfigurationError) as raised:
                checkDeployCommand(configure(deploy_command=command))
            self.assertEqual(raised.exception.option, "deploy_command")
            self.assertIn(expected, raised.exception.message)
        os.chmod(script, stat.S_IRWXU)
        self.assertEqual(findProgram("reload", folder), script)
        self.assertIsNone(findProgram("reload", "/nonexistent"))

    def test_setsidFoundAtLoad(self) -> None:
        """
        C{setsid(1)}, which starts the command, must be there too.
        """
        self.patch(deployrun, "SETSID", "/nonexistent/setsid")
        with self.assertRaises(ConfigurationError) as raised:
            checkDeployCommand(configure(deploy_command=f"{PROGRAM} -c pass"))
        self.assertEqual(raised.exception.option, "deploy_command")
        self.assertIn("/nonexistent/setsid (util-linux)", raised.exception.message)


class EnvironmentTests(SynchronousTestCase):
    """
    What the command's environment holds.
    """

    def test_onlyPathLangAndNames(self) -> None:
        """
        Only C{PATH} and C{LANG} of the server's environment are passed,
        with the names, the expiry and the exported files' paths.
        """
        issued = selfSigned(("a.example", "b.example"))
        passed = {"PATH": "/bin", "LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "x", "HOME": "/r"}
        env = environment(passed, ("a.example", "b.example"), issued, "/srv/le/a.example")
        self.assertEqual(
            env,
            {
                "PATH": "/bin",
                "LANG": "C.UTF-8",
                "LETSENCRYPT_DOMAINS": "a.example b.example",
                "LETSENCRYPT_NOT_AFTER": issued.notAfter.isoformat(),
                "LETSENCRYPT_DIRECTORY": "/srv/le/a.example",
                "LETSENCRYPT_CERTIFICATE": "/srv/le/a.example/cert.pem",
                "LETSENCRYPT_KEY": "/srv/le/a.example/privkey.pem",
                "LETSENCRYPT_CHAIN": "/srv/le/a.example/chain.pem",
                "LETSENCRYPT_FULLCHAIN": "/srv/le/a.example/fullchain.pem",
            },
        )

    def test_relativeFolderMadeAbsolute(self) -> None:
        """
        The paths are absolute, since the command runs from C{/}, even when
        an embedder's store directory is relative.
        """
        env = environment({}, ("a.example",), selfSigned(("a.example",)), "le/a.example")
        self.assertEqual(env["LETSENCRYPT_DIRECTORY"], os.path.abspath("le/a.example"))
        self.assertTrue(os.path.isabs(env["LETSENCRYPT_KEY"]))

    def test_notExported(self) -> None:
        """
        Without a store directory there are no paths, and a server without
        C{PATH} gives the system's default search path.
        """
        env = environment({}, ("a.example",), selfSigned(("a.example",)), None)
        self.assertEqual(set(env), {"PATH", "LETSENCRYPT_DOMAINS", "LETSENCRYPT_NOT_AFTER"})
        self.assertEqual(env["PATH"], os.defpath)


class DeployHooksTests(SynchronousTestCase):
    """
    L{DeployHooks} on a reactor that spawns fake processes.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.certificate = ManagedCertificate(("a.example",))
        self.issued = selfSigned(("a.example",))
        self.certificate.current = self.issued
        self.managed = {frozenset(self.certificate.domains): self.certificate}
        self.saved: list[tuple[str, bool]] = []
        self.written: Deferred[None] = succeed(None)

    def hooks(self, command: tuple[str, ...] = (PROGRAM, "reload"), **options: Any) -> DeployHooks:
        hooks = DeployHooks(
            resourceOptions(deployCommand=command, **options),
            self.reactor,
            Logger(),
            self.managed,
            lambda c: self.saved.append((c.label, c.deployPending)),
            lambda: self.written,
            environ={"PATH": "/bin", "SECRET": "s"},
            killGroup=self.reactor.killGroup,
            setsid="/usr/bin/setsid",
        )
        hooks.startService()
        return hooks

    def spawn(
        self, hooks: DeployHooks, certificate: ManagedCertificate | None = None
    ) -> tuple[FakeProcess, list[bool]]:
        results: list[bool] = []
        hooks.deploy(certificate or self.certificate, self.issued, "/srv/a.example").addCallback(
            results.append
        )
        return self.reactor.processes[-1], results

    def texts(self, eventID: int) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("event_id") == eventID]

    def test_spawnedInOwnGroup(self) -> None:
        """
        The command is run by C{setsid(1)}, which puts it in a process
        group of its own, with its arguments, the minimal environment, and
        its input closed; exiting with 0 is event 20246, and what it left
        in its group is killed.
        """
        hooks = self.hooks()
        process, results = self.spawn(hooks)
        self.assertEqual(process.executable, "/usr/bin/setsid")
        self.assertEqual(process.args, ["/usr/bin/setsid", "--", PROGRAM, "reload"])
        self.assertNotIn("SECRET", process.env)
        self.assertEqual(process.env["LETSENCRYPT_KEY"], "/srv/a.example/privkey.pem")
        self.assertTrue(process.stdinClosed)
        self.assertEqual(
            self.texts(20245), [f"20245 Running the deploy command for a.example: {PROGRAM} reload"]
        )
        self.reactor.advance(2)
        self.assertEqual(self.reactor.killed, [])
        process.exit(0)
        self.assertEqual(results, [True])
        self.assertTrue(process.pipesClosed)
        self.assertEqual(self.reactor.killed, [(process.pid, signal.SIGKILL)])
        self.assertEqual(
            self.texts(20246),
            ["20246 The deploy command for a.example ended successfully after 2.0 seconds."],
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(hooks.failed, frozenset())

    def test_exitedBeforeSpawnReturned(self) -> None:
        """
        A command that ended before C{spawnProcess} returned (reaped at
        once, its transport's C{pid} gone) is still a run that ended: its
        exit code says how, and its process group is the one killed.
        """
        hooks = self.hooks()
        self.reactor.exitAtOnce = 1
        process, results = self.spawn(hooks)
        self.assertEqual(results, [False])
        self.assertEqual(self.reactor.killed, [(1000, signal.SIGKILL)])
        self.assertEqual(
            self.texts(20247),
            [
                "20247 The deploy command for a.example failed: it exited with code 1; "
                "it runs again at the next check."
            ],
        )
        self.reactor.exitAtOnce = 0
        process, results = self.spawn(hooks)
        self.assertEqual(results, [True])
        self.assertEqual(self.reactor.killed[-1], (1001, signal.SIGKILL))

    def test_commandQuoted(self) -> None:
        """
        Event 20245 shows the command quoted as a shell would need it, a
        newline in an argument escaped.
        """
        self.spawn(self.hooks(command=(PROGRAM, "a b", "x\n20246 forged")))
        self.assertEqual(
            self.texts(20245),
            [f"20245 Running the deploy command for a.example: {PROGRAM} 'a b' 'x\\n20246 forged'"],
        )

    def test_pendingRecorded(self) -> None:
        """
        A run is recorded as due (on this node: see
        L{letsencrypt_resource.deployflags}) before it starts; a failure
        leaves it due, success clears it.
        """
        hooks = self.hooks()
        process, _ = self.spawn(hooks)
        self.assertEqual(self.saved, [("a.example", True)])
        self.assertTrue(self.certificate.deployPending)
        process.exit(1)
        self.assertEqual(self.saved, [("a.example", True)])
        self.reactor.advance(RETRY_BASE)
        hooks.retry()
        self.reactor.processes[-1].exit(0)
        self.assertEqual(self.saved, [("a.example", True), ("a.example", False)])
        self.assertFalse(self.certificate.deployPending)

    def test_pendingRunAtStart(self) -> None:
        """
        A run a saved renewal state says is due (it was killed, or had no
        time to start, when the server stopped) is asked for again at the
        first check, by L{DeployHooks.again}.
        """
        restored = ManagedCertificate(("a.example",))
        restored.restore({"deploy_pending": True})
        self.assertTrue(restored.deployPending)
        restored.current = self.issued
        self.managed[frozenset(restored.domains)] = restored
        hooks = self.hooks()
        asked: list[ManagedCertificate] = []
        hooks.again = asked.append
        hooks.retry()
        hooks.retry()
        self.assertEqual(asked, [restored])

    def test_failuresRetriedWithBackoff(self) -> None:
        """
        An exit code or a signal is event 20247; the set is run again by
        L{DeployHooks.retry}, which the scheduler calls at each check, once
        L{RETRY_BASE} seconds have passed, a wait doubled by each failure in
        a row.
        """
        hooks = self.hooks()
        process, results = self.spawn(hooks)
        process.exit(3)
        self.assertEqual(results, [False])
        self.assertEqual(
            self.texts(20247),
            [
                "20247 The deploy command for a.example failed: it exited with code 3; "
                "it runs again at the next check."
            ],
        )
        self.assertEqual(hooks.failed, {frozenset({"a.example"})})
        hooks.retry()
        self.assertEqual(len(self.reactor.processes), 1)
        self.reactor.advance(RETRY_BASE)
        hooks.retry()
        self.assertEqual(len(self.reactor.processes), 2)
        self.reactor.processes[-1].exit(signal=signal.SIGTERM)
        self.assertIn("it was ended by signal 15 (SIGTERM)", self.texts(20247)[-1])
        self.reactor.advance(RETRY_BASE)
        hooks.retry()
        self.assertEqual(len(self.reactor.processes), 2)
        self.reactor.advance(RETRY_BASE)
        hooks.retry()
        self.reactor.processes[-1].exit(0)
        self.assertEqual(hooks.failed, frozenset())
        self.reactor.advance(RETRY_MAX)
        hooks.retry()
        self.assertEqual(len(self.reactor.processes), 3)

    def test_timeoutKillsGroup(self) -> None:
        """
        Past C{deploy_timeout}, the process group is killed and the run
        fails (event 20247) once the process has exited.
        """
        hooks = self.hooks(deployTimeout=30.0)
        process, results = self.spawn(hooks)
        self.reactor.advance(29)
        self.assertEqual(self.reactor.killed, [])
        self.reactor.advance(1)
        self.assertEqual(self.reactor.killed, [(process.pid, signal.SIGKILL)])
        process.exit(signal=signal.SIGKILL)
        self.assertEqual(results, [False])
        self.assertIn(
            "it ran longer than 30 seconds; its process group was killed", self.texts(20247)[0]
        )
        self.assertEqual(hooks.failed, {frozenset({"a.example"})})
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_unkillableFreesSlot(self) -> None:
        """
        A command that does not exit when killed (uninterruptible sleep)
        fails all the same L{KILL_GRACE} seconds later, and the next run
        starts.
        """
        hooks = self.hooks(deployTimeout=30.0)
        _, results = self.spawn(hooks)
        self.spawn(hooks, ManagedCertificate(("b.example",)))
        self.reactor.advance(30)
        self.reactor.advance(KILL_GRACE - 1)
        self.assertEqual((results, len(self.reactor.processes)), ([], 1))
        self.reactor.advance(1)
        self.assertEqual(results, [False])
        self.assertIn("it ran longer than 30 seconds", self.texts(20247)[0])
        self.assertEqual(len(self.reactor.processes), 2)

    def test_outputAfterExit(self) -> None:
        """
        Output still in the pipes when the command exits is logged: the run
        ends when they close, or L{OUTPUT_GRACE} seconds after the exit
        when a program left in the background holds them.
        """
        hooks = self.hooks()
        process, results = self.spawn(hooks)
        process.exit(1, pipesHeld=True)
        process.write(2, b"last words\n")
        self.assertEqual(results, [])
        self.reactor.advance(OUTPUT_GRACE)
        self.assertEqual(results, [False])
        self.assertEqual(
            self.texts(20248),
            ["20248 The deploy command for a.example wrote on stderr: last words"],
        )
        self.assertIn("it exited with code 1", self.texts(20247)[0])

    def test_notFound(self) -> None:
        """
        A program no longer found, or one that cannot be started, is a
        failure, retried at the next check.
        """
        hooks = self.hooks(command=("/nonexistent/reload",))
        results: list[bool] = []
        hooks.deploy(self.certificate, self.issued, None).addCallback(results.append)
        self.assertEqual(results, [False])
        self.assertEqual(self.reactor.processes, [])
        self.assertIn("the program '/nonexistent/reload' is not found", self.texts(20247)[0])
        self.reactor.refuse = OSError(24, "Too many open files")
        hooks = self.hooks()
        hooks.deploy(self.certificate, self.issued, None).addCallback(results.append)
        self.assertEqual(results, [False, False])
        self.assertIn("it could not be started", self.texts(20247)[1])
        self.assertEqual(hooks.failed, {frozenset({"a.example"})})

    def test_oneAtATime(self) -> None:
        """
        Runs wait for the one before them; a newer run for a set replaces
        the failure of an older one.
        """
        hooks = self.hooks()
        first, _ = self.spawn(hooks)
        hooks.deploy(ManagedCertificate(("b.example",)), self.issued, None)
        self.assertEqual(len(self.reactor.processes), 1)
        first.exit(1)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(self.reactor.processes[1].env["LETSENCRYPT_DOMAINS"], "b.example")
        self.reactor.processes[1].exit(0)
        self.spawn(hooks)[0].exit(0)
        self.assertEqual(hooks.failed, frozenset())

    def test_outputLoggedWithinBounds(self) -> None:
        """
        Each line of output is event 20248, its control characters escaped;
        past L{MAX_LINES} lines, or L{MAX_LINE_BYTES} bytes in a line, the
        rest is counted in event 20249.
        """
        hooks = self.hooks()
        process, _ = self.spawn(hooks)
        process.write(1, b"reloaded\r\nfake \x1b[31m")
        process.write(2, b"warn\n")
        process.write(1, b"line\n20246 forged\n")
        process.write(2, b"x" * (MAX_LINE_BYTES + 5) + b"\n")
        process.write(1, b"\n".join(b"more %d" % n for n in range(MAX_LINES)) + b"\n")
        process.exit(0)
        texts = self.texts(20248)
        self.assertEqual(len(texts), MAX_LINES)
        self.assertEqual(
            texts[:4],
            [
                "20248 The deploy command for a.example wrote on stdout: reloaded",
                "20248 The deploy command for a.example wrote on stderr: warn",
                "20248 The deploy command for a.example wrote on stdout: fake \\x1b[31mline",
                "20248 The deploy command for a.example wrote on stdout: 20246 forged",
            ],
        )
        self.assertTrue(texts[4].endswith("x" * MAX_LINE_BYTES))
        self.assertTrue(texts[5].endswith(": xxxxx"))
        self.assertEqual(
            self.texts(20249),
            [
                "20249 The deploy command for a.example wrote more than the 50 lines "
                "logged: 6 more line(s), 42 bytes, not logged."
            ],
        )

    def test_stopWaitsForWritesAndRuns(self) -> None:
        """
        Stopping waits for the writes under way (an export that ends asks
        for its run, which is taken), then for the run under way and those
        waiting, within C{deploy_timeout}; no run is taken once stopped,
        but it is recorded as due.
        """
        hooks = self.hooks()
        self.written = Deferred()
        stopped = hooks.stopService()
        process, results = self.spawn(hooks)
        self.spawn(hooks, ManagedCertificate(("b.example",)))
        self.written.callback(None)
        process.exit(0)
        self.assertNoResult(stopped)
        self.reactor.processes[-1].exit(0)
        self.successResultOf(stopped)
        self.assertEqual((results, self.reactor.killed[-1]), ([True], (1001, signal.SIGKILL)))
        late = ManagedCertificate(("c.example",))
        self.assertEqual(self.successResultOf(hooks.deploy(late, self.issued, None)), False)
        self.assertEqual((len(self.reactor.processes), late.deployPending), (2, True))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stopKillsAfterTimeout(self) -> None:
        """
        Past C{deploy_timeout} seconds of stopping, the run under way is
        killed and the runs waiting are dropped, each event 20247; they
        stay due, to run at the next start.
        """
        hooks = self.hooks(deployTimeout=30.0)
        first, _ = self.spawn(hooks, ManagedCertificate(("z.example",)))
        process, results = self.spawn(hooks)
        other = ManagedCertificate(("b.example",))
        self.spawn(hooks, other)
        stopped = hooks.stopService()
        self.reactor.advance(20)
        first.exit(0)
        process = self.reactor.processes[-1]
        self.reactor.advance(9)
        self.assertEqual(self.reactor.killed, [(first.pid, signal.SIGKILL)])
        self.reactor.advance(1)
        self.assertEqual(self.reactor.killed[1:], [(process.pid, signal.SIGKILL)])
        process.exit(signal=signal.SIGKILL)
        self.successResultOf(stopped)
        self.assertEqual(results, [False])
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(
            self.texts(20247),
            [
                "20247 The deploy command for a.example failed: the server stopped while it "
                "ran; its process group was killed; it runs again at the next check.",
                "20247 The deploy command for b.example failed: the server stopped before it "
                "ran; it runs again at the next check.",
            ],
        )
        self.assertTrue(self.certificate.deployPending and other.deployPending)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stopBeforeGroupMade(self) -> None:
        """
        A run killed before its child has made its process group is
        killed as a process.
        """
        hooks = self.hooks(deployTimeout=1.0)
        process, _ = self.spawn(hooks)
        self.reactor.noGroups = True
        hooks.stopService()
        self.reactor.advance(1)
        self.assertEqual(process.signals, ["KILL"])

    def test_forget(self) -> None:
        """
        A set no longer used loses its failures, and is not run again at
        the next check.
        """
        hooks = self.hooks()
        self.spawn(hooks)[0].exit(1)
        hooks.forget(self.certificate)
        del self.managed[frozenset(self.certificate.domains)]
        self.reactor.advance(RETRY_MAX)
        hooks.retry()
        self.assertEqual((hooks.failed, len(self.reactor.processes)), (frozenset(), 1))

    def test_noCommand(self) -> None:
        """
        Without a command, nothing runs, and nothing is recorded as due.
        """
        hooks = DeployHooks(resourceOptions(), self.reactor, Logger())
        hooks.startService()
        results: list[bool] = []
        hooks.deploy(self.certificate, self.issued, None).addCallback(results.append)
        self.assertEqual((results, self.reactor.processes), ([False], []))
        self.assertFalse(self.certificate.deployPending)


class ResourceDeployTests(ResourceTestCase):
    """
    When the resource runs the deploy command.
    """

    def setUp(self) -> None:
        super().setUp()
        self.reactor = ProcessReactor()
        self.reactor.advance(1_800_000_000)
        self.server = FakeACMEServer(self.reactor)

    def test_afterExport(self) -> None:
        """
        With a store directory, the command runs for each new certificate
        once its files are exported, with their paths; at a restart that
        loads the stored certificates, it does not run.
        """
        store = self.mktemp()
        os.mkdir(store)
        self.store = StateDirectory(self.mktemp())
        resource = self.start(storeDirectory=store, deployCommand=(PROGRAM, "reload"))
        envs = {p.env["LETSENCRYPT_DOMAINS"]: p.env for p in self.runAll()}
        self.assertEqual(set(envs), {"files.example.test www.example.test", "reports.example.test"})
        env = envs["reports.example.test"]
        folder = os.path.join(store, "reports.example.test")
        self.assertEqual(
            env["LETSENCRYPT_CERTIFICATE"], os.path.join(os.path.abspath(folder), "cert.pem")
        )
        with open(env["LETSENCRYPT_FULLCHAIN"], "rb") as stream:
            served = self.consumers["reports"].received[-1]
            self.assertEqual(stream.read(), served.fullchainPEM)
        resource.stopService()
        spawned = len(self.reactor.processes)
        self.start(storeDirectory=store, deployCommand=(PROGRAM, "reload"))
        self.assertEqual(len(self.reactor.processes), spawned)

    def test_killedAtStopRunsAtNextStart(self) -> None:
        """
        Stopping the resource waits for the runs under way; one still
        running C{deploy_timeout} seconds later is killed (event 20247),
        and the restarted resource runs it again, for the certificate it
        stored, and only it.
        """
        store = self.mktemp()
        os.mkdir(store)
        self.store = StateDirectory(self.mktemp())
        command = {"storeDirectory": store, "deployCommand": (PROGRAM, "reload")}
        resource = self.start(**command)
        [first] = self.reactor.processes
        stopped = resource.stopService()
        self.reactor.advance(10)
        first.exit(0)
        second = self.reactor.processes[1]
        self.assertNoResult(stopped)
        self.reactor.advance(50)
        second.exit(signal=signal.SIGKILL)
        self.successResultOf(stopped)
        self.assertIn("the server stopped while it ran", self.eventTexts(20247)[-1])
        self.start(**command)
        [again] = self.reactor.processes[2:]
        self.assertEqual(again.env["LETSENCRYPT_DOMAINS"], second.env["LETSENCRYPT_DOMAINS"])
        again.exit(0)
        self.start(**command)
        self.assertEqual(len(self.reactor.processes), 3)

    def test_withoutStoreDirectory(self) -> None:
        """
        Without a store directory, the command runs once the certificate is
        stored, without paths; a failure runs again at the next check.
        """
        self.start(deployCommand=(PROGRAM, "reload"))
        self.assertEqual(self.eventIDs().count(20015), 2)
        [first] = self.reactor.processes
        self.assertNotIn("LETSENCRYPT_CERTIFICATE", first.env)
        first.exit(1)
        self.reactor.processes[1].exit(0)
        self.reactor.advance(DAY)
        retried = self.reactor.processes[2:]
        self.assertEqual(
            [p.env["LETSENCRYPT_DOMAINS"] for p in retried], [first.env["LETSENCRYPT_DOMAINS"]]
        )

    def test_droppedNotRetried(self) -> None:
        """
        A set dropped by a reload of the consumers after its command failed
        is not run again at the next check.
        """
        resource = self.start(deployCommand=(PROGRAM, "reload"))
        self.reactor.processes[0].exit(1)
        self.reactor.processes[1].exit(1)
        failed = {p.env["LETSENCRYPT_DOMAINS"] for p in self.reactor.processes}
        self.assertIn("reports.example.test", failed)
        self.registry.unregisterUtility(self.consumers["reports"], ICertificateConsumer, "reports")
        self.successResultOf(resource.reloadConsumers())
        self.reactor.advance(DAY)
        retried = [p.env["LETSENCRYPT_DOMAINS"] for p in self.runAll()[2:]]
        self.assertEqual(retried, ["files.example.test www.example.test"])

    def runAll(self) -> list[FakeProcess]:
        """
        Let every run spawned so far, and those they let start, end well.
        """
        done = len([p for p in self.reactor.processes if p.pipesClosed])
        while done < len(self.reactor.processes):
            self.reactor.processes[done].exit(0)
            done += 1
        return self.reactor.processes
