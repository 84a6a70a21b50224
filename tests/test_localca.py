"""
Tests for L{letsencrypt_resource.localca} (the C{testca} command),
L{letsencrypt_resource.shutdown} and the demo's way of stopping.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from cryptography import x509
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from letsencrypt_resource import cli, localca
from letsencrypt_resource.pebble import RunningTestCA, freeTCPPort
from letsencrypt_resource.shutdown import holdingShutdown
from tests.helpers.pebblecase import TestCACase
from tests.helpers.processcase import ROOT, GroupProcess

#: Runs the C{testca} command as the C{letsencrypt-resource} script would.
DRIVER = """\
import argparse, sys
from twisted.internet.defer import Deferred
from twisted.internet.task import react
from letsencrypt_resource import localca

parser = argparse.ArgumentParser()
localca.addArguments(parser)
arguments = parser.parse_args(sys.argv[1:])

async def main(reactor):
    status = await localca.serve(reactor, arguments, sys.stdout)
    if status:
        raise SystemExit(status)

react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
"""


class FakeShutdownReactor:
    """
    The system event triggers of a reactor, and a shutdown that runs the
    C{"before"} ones and waits for their Deferreds, as the reactor does.

    @ivar finished: whether the shutdown went past its C{"before"} phase.
    """

    def __init__(self) -> None:
        self.before: list[tuple[str, Callable[[], Any]]] = []
        self.finished = False

    def addSystemEventTrigger(
        self, phase: str, event: str, callable: Callable[[], Any]
    ) -> tuple[str, Callable[[], Any]]:
        assert (phase, event) == ("before", "shutdown")
        handle = (phase, callable)
        self.before.append(handle)
        return handle

    def removeSystemEventTrigger(self, handle: tuple[str, Callable[[], Any]]) -> None:
        self.before.remove(handle)

    def shutdown(self) -> None:
        """
        Begin the shutdown.
        """
        results = [callable() for _, callable in self.before]
        waiting = [result for result in results if isinstance(result, Deferred)]
        gatherResults(waiting).addCallback(lambda _: setattr(self, "finished", True))


class HoldingShutdownTests(SynchronousTestCase):
    """
    Tests for L{holdingShutdown}.
    """

    def test_shutdownWaitsForBlock(self) -> None:
        """
        A shutdown fires the block's Deferred and goes on only once the
        block has ended.
        """
        reactor = FakeShutdownReactor()
        cleanup: Deferred[None] = Deferred()
        steps = []

        async def block() -> None:
            async with holdingShutdown(reactor) as stopping:
                await stopping
                steps.append("shutdown seen")
                await cleanup
                steps.append("cleaned up")

        Deferred.fromCoroutine(block())
        reactor.shutdown()
        self.assertEqual((steps, reactor.finished), (["shutdown seen"], False))
        cleanup.callback(None)
        self.assertEqual((steps, reactor.finished), (["shutdown seen", "cleaned up"], True))

    def test_shutdownDuringStart(self) -> None:
        """
        A shutdown that begins while the block is still starting waits for
        the whole block.
        """
        reactor = FakeShutdownReactor()
        started: Deferred[None] = Deferred()

        async def block() -> None:
            async with holdingShutdown(reactor) as stopping:
                await started
                await stopping

        done = Deferred.fromCoroutine(block())
        reactor.shutdown()
        self.assertFalse(reactor.finished)
        started.callback(None)
        self.assertTrue(reactor.finished)
        self.successResultOf(done)

    def test_blockEndsFirst(self) -> None:
        """
        A block that ends without a shutdown leaves no trigger behind, even
        when it fails.
        """
        reactor = FakeShutdownReactor()

        async def block() -> None:
            async with holdingShutdown(reactor):
                raise ValueError("failed")

        self.failureResultOf(Deferred.fromCoroutine(block()), ValueError)
        self.assertEqual(reactor.before, [])


def parse(*argv: str) -> argparse.Namespace:
    """
    The C{testca} command's options from C{argv}.
    """
    parser = argparse.ArgumentParser()
    localca.addArguments(parser)
    return parser.parse_args(argv)


class ArgumentsTests(SynchronousTestCase):
    """
    Tests for L{localca.addArguments}.
    """

    def test_defaults(self) -> None:
        """
        By default the ports are pebble's own, so that the lines pasted once
        keep working at every start.
        """
        arguments = parse()
        self.assertEqual(
            (arguments.directory, arguments.challenge_port, arguments.acme_port),
            ("testca-state", 5002, 14000),
        )

    def test_badPort(self) -> None:
        """
        A port that is no TCP port is refused, naming the value.
        """
        for bad in ("0", "65536", "http"):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            self.assertRaises(SystemExit, parse, "--acme-port", bad)
            self.assertIn(f"{bad!r} is not a TCP port", stderr.getvalue())


#: A configuration with two https services.
MY_INI = """\
[resources/le]
type = lets-encrypt
address = 127.0.0.1
port = 5002

[services/files]
type = https
name = files-https
address = 127.0.0.1
port = 8443
path = /nonexistent/files
ssl_domains = files.mine.test, www.mine.test

[services/reports]
type = https
name = reports-https
address = 127.0.0.1
port = 9443
path = /nonexistent/reports
ssl_domains = reports.mine.test
"""


class ConfigTests(SynchronousTestCase):
    """
    C{testca} takes C{--config} before or after itself, and then names the
    configuration's services in the client commands it prints.
    """

    def running(self) -> RunningTestCA:
        """
        A test CA as it is once started, for L{localca.instructions}.
        """
        return RunningTestCA(
            directoryURL="https://localhost:14000/dir",
            caFile="/state/pebble/listener-ca.pem",
            managementURL="https://localhost:15000",
            directory="/state/pebble",
            reactor=None,
            processes=(),
        )

    def test_configAfterTestca(self) -> None:
        """
        C{--config} after C{testca} is accepted, as before it.
        """
        for argv in (["testca", "--config", "my.ini"], ["--config", "my.ini", "testca"]):
            arguments = cli.parser().parse_args(argv)
            self.assertEqual((arguments.command, arguments.config), ("testca", "my.ini"))

    def test_servicesNamed(self) -> None:
        """
        With a configuration, the openssl and curl commands name each https
        service's first name and its port instead of placeholders.
        """
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write(MY_INI)
        services = localca._services(path)
        self.assertEqual(services, (("files.mine.test", "8443"), ("reports.mine.test", "9443")))
        text = localca.instructions(self.running(), 5002, "/state", "/state/i.pem", services)
        self.assertIn("-connect 127.0.0.1:8443 -servername files.mine.test ", text)
        self.assertIn("https://reports.mine.test:9443/", text)
        self.assertNotIn("NAME", text)

    def test_placeholdersWithout(self) -> None:
        """
        Without a configuration, the commands hold C{NAME} and C{PORT}.
        """
        text = localca.instructions(
            self.running(), 5002, "/state", "/state/i.pem", localca._services(None)
        )
        self.assertIn("--resolve NAME:PORT:127.0.0.1 https://NAME:PORT/", text)


class ServeRefusalTests(SynchronousTestCase):
    """
    L{localca.serve} refuses, before starting anything, what would make the
    test CA unusable or untrustworthy.
    """

    def serve(self, *argv: str) -> tuple[int, str, str]:
        """
        Run the command with C{argv}; the test CA must not start.

        @return: the exit status, the output and the error output.
        """
        reactor = FakeShutdownReactor()
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stderr", err)
        status = self.successResultOf(
            Deferred.fromCoroutine(localca.serve(reactor, parse(*argv), out))
        )
        self.assertEqual(reactor.before, [])
        return status, out.getvalue(), err.getvalue()

    def test_acmePortInUse(self) -> None:
        """
        A taken ACME port is named, with the option that changes it.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            status, out, err = self.serve("--directory", self.mktemp(), "--acme-port", str(port))
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"127.0.0.1 port {port}", err)
        self.assertIn("--acme-port", err)

    def test_portFreeAfterClosedConnection(self) -> None:
        """
        A port whose listener just stopped, after closing a connection
        first (the connection then waits in TIME-WAIT, as pebble's do once
        it stops), is free: a restart is not refused.
        """
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port)) as client:
                accepted, _ = listener.accept()
                accepted.close()
                self.assertEqual(client.recv(1), b"")
        localca._checkFree(port)

    def test_invalidConfig(self) -> None:
        """
        An invalid configuration given with C{--config} is refused with exit
        status 2, naming the file and the problem.
        """
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write("[services/files]\ntype = https\nprot = 8443\n")
        arguments = parse("--directory", self.mktemp())
        arguments.config = path
        reactor = FakeShutdownReactor()
        self.patch(sys, "stderr", io.StringIO())
        status = self.successResultOf(
            Deferred.fromCoroutine(localca.serve(reactor, arguments, io.StringIO()))
        )
        self.assertEqual(status, 2)
        self.assertIn(f"{path}: ", sys.stderr.getvalue())
        self.assertEqual(reactor.before, [])

    def test_folderOthersCanWrite(self) -> None:
        """
        A folder that other users can write in is refused: whoever writes
        its files decides what the server and its clients trust.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        os.chmod(directory, 0o777)
        status, out, err = self.serve("--directory", directory, "--acme-port", str(freeTCPPort()))
        self.assertEqual((status, out), (1, ""))
        self.assertIn(directory, err)
        self.assertEqual(os.listdir(directory), [])


def pasted(output: str) -> dict[str, str]:
    """
    The C{option = value} lines, flush left, of the command's output.
    """
    return dict(re.findall(r"^([a-z_]+) = (.*)$", output, re.MULTILINE))


class ServeTests(TestCACase):
    """
    The C{testca} command, run as a user runs it, against a real pebble.
    """

    def start(self, directory: str | None = None) -> tuple[GroupProcess, dict[str, str], str]:
        """
        Start the command on free ports in a new folder, or again on the
        same ports in C{directory}.

        @return: the process, the lines it printed to paste, and its folder.
        """
        if directory is None:
            directory = os.path.abspath(self.mktemp())
            self.challengePort, self.acmePort = freeTCPPort(), freeTCPPort()
        process = GroupProcess(
            self,
            [
                "-c",
                DRIVER,
                "--directory",
                directory,
                "--challenge-port",
                str(self.challengePort),
                "--acme-port",
                str(self.acmePort),
            ],
            cwd=os.getcwd(),
        )
        output = process.readUntil("to stop the test CA.")
        return process, pasted(output), directory

    def test_linesToPaste(self) -> None:
        """
        It prints, flush left and without a log prefix, the options that
        point a lets-encrypt resource at it, and the issuers a client
        trusts, as a file and in the openssl and curl commands.
        """
        process, options, directory = self.start()
        self.assertEqual(
            options,
            {
                "acme_url": f"https://localhost:{self.acmePort}/dir",
                "acme_ca_file": os.path.join(directory, "pebble", "listener-ca.pem"),
                "address": "127.0.0.1",
                "port": str(self.challengePort),
                "agree_tos": "yes",
                "state_directory": os.path.join(directory, "state"),
            },
        )
        with open(options["acme_ca_file"], "rb") as stream:
            x509.load_pem_x509_certificate(stream.read())
        issuers = os.path.join(directory, localca.ISSUERS_FILE)
        with open(issuers, "rb") as stream:
            self.assertEqual(len(x509.load_pem_x509_certificates(stream.read())), 2)
        lines = process.output.splitlines()
        self.assertIn(issuers, lines)
        openssl = [line for line in lines if line.startswith("openssl s_client ")]
        self.assertIn(f"-CAfile {issuers} ", openssl[0])
        curl = [line for line in lines if line.startswith(f"curl --cacert {issuers} ")]
        self.assertEqual(len(curl), 1)
        self.assertEqual(os.stat(directory).st_mode & 0o777, 0o700)
        with socket.create_connection(("127.0.0.1", self.acmePort)):
            pass
        self.assertEqual(process.stopWith(signal.SIGTERM), 0)

    def test_restartStillTrusted(self) -> None:
        """
        Started again at once in the same folder, after a client's
        connection to it (left in TIME-WAIT as it stops), the command
        starts on the same ports, prints the same lines, and its ACME
        server verifies against the C{acme_ca_file} of the first start,
        whose content has not changed.
        """
        process, options, directory = self.start()
        with open(options["acme_ca_file"], "rb") as stream:
            first = stream.read()
        client = socket.create_connection(("127.0.0.1", self.acmePort))
        self.assertEqual(process.stopWith(signal.SIGTERM), 0)
        client.close()
        process, again, _ = self.start(directory)
        self.assertEqual(again, options)
        with open(options["acme_ca_file"], "rb") as stream:
            self.assertEqual(stream.read(), first)
        context = ssl.create_default_context(cafile=options["acme_ca_file"])
        with socket.create_connection(("127.0.0.1", self.acmePort)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /dir HTTP/1.0\r\nHost: localhost\r\n\r\n")
                answer = b"".join(iter(lambda: tls.recv(65536), b""))
        self.assertIn(b"newAccount", answer)
        self.assertEqual(process.stopWith(signal.SIGTERM), 0)

    def test_stopsPebbleOnSIGTERM(self) -> None:
        """
        C{SIGTERM} to the command alone stops pebble and its DNS helper
        before it exits, with status 0.
        """
        process, _, _ = self.start()
        self.assertEqual(process.stopWith(signal.SIGTERM), 0)
        self.assertFalse(process.groupLeftover(), process.output)

    def test_stopsPebbleOnSIGINT(self) -> None:
        """
        So does C{SIGINT} to the command alone.
        """
        process, _, _ = self.start()
        self.assertEqual(process.stopWith(signal.SIGINT), 0)
        self.assertFalse(process.groupLeftover(), process.output)


class DemoStopTests(TestCACase):
    """
    The demo, stopped by a signal to its own process only.
    """

    def startDemo(self) -> GroupProcess:
        """
        Start the demo in a new folder and wait until it tells how to look.
        """
        process = GroupProcess(
            self,
            ["-m", "letsencrypt_resource.demo", "--directory", os.path.abspath(self.mktemp())],
            cwd=os.getcwd(),
        )
        process.readUntil("Press Ctrl-C to stop.")
        return process

    def test_linesPlain(self) -> None:
        """
        The lines for the user to copy carry no log prefix.
        """
        process = self.startDemo()
        lines = process.output.splitlines()
        self.assertIn("Press Ctrl-C to stop.", lines)
        self.assertTrue(any(line.startswith("  openssl s_client ") for line in lines))
        process.stopWith(signal.SIGTERM)

    def test_statusCommandWorks(self) -> None:
        """
        The status command the demo prints runs as printed (the installed
        C{letsencrypt-resource} script, when there is one) and shows both
        services' certificates.
        """
        process = self.startDemo()
        [line] = [x for x in process.output.splitlines() if "from another terminal:" in x]
        command = line.split("from another terminal: ", 1)[1].split()
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("files.example.test", result.stdout)
        self.assertIn("reports.example.test", result.stdout)
        self.assertIn("ftp.example.test", result.stdout)
        process.stopWith(signal.SIGTERM)

    def test_ftpsCommandWorks(self) -> None:
        """
        The curl command the demo prints downloads the demo's file over
        explicit FTPS with PROT P, the certificate checked against the test
        CA for the FTPS service's name.
        """
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed")
        process = self.startDemo()
        [line] = [x for x in process.output.splitlines() if x.startswith("  curl ")]
        command = shlex.split(line)
        self.assertIn("--ssl-reqd", command)
        result = subprocess.run(
            [*command, "--silent", "--show-error", "--max-time", "30"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, "Hello from letsencrypt-resource.\n", ""),
        )
        process.stopWith(signal.SIGTERM)

    def test_SIGTERM(self) -> None:
        """
        C{SIGTERM} to the demo alone stops pebble before the demo exits.
        """
        process = self.startDemo()
        self.assertEqual(process.stopWith(signal.SIGTERM), 0)
        self.assertFalse(process.groupLeftover(), process.output)

    def test_SIGINT(self) -> None:
        """
        So does C{SIGINT} to the demo alone.
        """
        process = self.startDemo()
        self.assertEqual(process.stopWith(signal.SIGINT), 0)
        self.assertFalse(process.groupLeftover(), process.output)
