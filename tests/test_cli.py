"""
The operations command as operators run it: the installed console script
C{letsencrypt-resource}, in a subprocess, on this tree's code.
"""

from __future__ import annotations

import json
import os
import sys

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from letsencrypt_resource import __version__
from letsencrypt_resource.cli import standInConsumers
from letsencrypt_resource.config import Configuration
from letsencrypt_resource.consumerregistry import SubscriberLeaf
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.pebble import freeTCPPort
from tests.helpers.processcase import environment, operationsScript
from tests.helpers.serviceoptions import makeOptions

#: The console script, installed beside the Python running the tests.
SCRIPT = operationsScript()

#: A configuration whose served folder and CA bundle are not on this
#: machine, as when the operations command runs on a copy of the file.
ELSEWHERE = """\
[resources/le]
type = lets-encrypt
address = 127.0.0.1
port = {port}
acme_ca_file = /nonexistent/ca.pem

[services/files]
type = https
name = files-https
address = 127.0.0.1
port = {servicePort}
path = /nonexistent/public
ssl_domains = files.example.test
"""


class _ClosedOutput(ProcessProtocol):
    """
    Closes the command's standard output at once, as C{head} does once it
    has read enough, and keeps its standard error.
    """

    def __init__(self) -> None:
        self.err = b""
        self.ended: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdout()

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value.exitCode)


class CommandTests(TestCase):
    """
    The console script, run as a user would.
    """

    def setUp(self) -> None:
        if not os.path.exists(SCRIPT):
            self.skipTest(f"{SCRIPT} is not installed: pip install the package")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "server.ini")
        with open(self.path, "w") as stream:
            stream.write(ELSEWHERE.format(port=freeTCPPort(), servicePort=freeTCPPort()))

    async def command(self, *argv: str, status: int = 0) -> tuple[str, str]:
        """
        Run the script with C{argv}; assert its exit status; return its
        standard output and error.
        """
        out, err, code = await getProcessOutputAndValue(
            SCRIPT, argv, env=environment(), path=self.directory
        )
        self.assertEqual(code, status, (out + err).decode())
        return out.decode(), err.decode()

    async def test_version(self) -> None:
        """
        C{--version} gives the command's name and version.
        """
        out, _ = await self.command("--version")
        self.assertEqual(out, f"letsencrypt-resource {__version__}\n")

    async def test_moduleStillWorks(self) -> None:
        """
        C{python -m letsencrypt_resource} runs the same command, under that
        name.
        """
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "letsencrypt_resource", "--version"],
            env=environment(),
            path=self.directory,
        )
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out.decode(), f"python -m letsencrypt_resource {__version__}\n")

    async def test_configBeforeOrAfter(self) -> None:
        """
        C{--config} works before the subcommand and after it, as in git.
        """
        before, _ = await self.command("--config", self.path, "status", "--json")
        after, _ = await self.command("status", "--json", "--config", self.path)
        short, _ = await self.command("status", "-c", self.path, "--json")
        self.assertEqual(json.loads(after)[0]["names"], ["files.example.test"])
        for out in before, short:
            self.assertEqual([row["names"] for row in json.loads(out)], [["files.example.test"]])

    async def test_configMissing(self) -> None:
        """
        A subcommand that needs a configuration and has none says so.
        """
        _, err = await self.command("status", status=2)
        self.assertIn("error: status needs --config FILE", err)

    async def test_statusWithoutServer(self) -> None:
        """
        Without a running server, the table says so first and in its
        C{serving} column, and the JSON has C{server_running} false and
        nothing served.
        """
        out, _ = await self.command("status", "--config", self.path)
        state = os.path.join(self.directory, "lets-encrypt")
        first, header = out.splitlines()[:2]
        self.assertEqual(
            first,
            f"No server is running on the state directory {state}: this is the "
            "state it stored, and no service is serving it.",
        )
        self.assertEqual(header.split()[:2], ["names", "serving"])
        self.assertIn("no server running", out)
        self.assertIn("because no CA-issued certificate yet", out)
        out, _ = await self.command("status", "--json", "--config", self.path)
        [row] = json.loads(out)
        self.assertFalse(row["server_running"])
        self.assertEqual(row["serving"], {})

    async def test_statusCreatesNothing(self) -> None:
        """
        C{status} on a configuration whose state directory does not exist
        (a new machine, a mistyped path) says so and creates nothing, not
        even the lock.
        """
        state = os.path.join(self.directory, "lets-encrypt")
        _, err = await self.command("status", "--config", self.path)
        self.assertIn(f"note: the state directory {state} does not exist yet", err)
        self.assertFalse(os.path.lexists(state))

    async def test_readOnlyChecksOnlyWhatItUses(self) -> None:
        """
        C{status} runs although the served folder and the CA bundle are not
        on this machine; C{renew}, which reaches the CA, names the bundle
        it cannot read.
        """
        await self.command("status", "--config", self.path)
        _, err = await self.command("renew", "--config", self.path, status=2)
        self.assertIn("[resources/le] option 'acme_ca_file'", err)

    async def test_closedOutput(self) -> None:
        """
        A reader that stops reading (C{status | head -1}) gets no
        traceback on the standard error.
        """
        os.mkdir(os.path.join(self.directory, "lets-encrypt"), 0o700)
        protocol = _ClosedOutput()
        reactor.spawnProcess(
            protocol,
            SCRIPT,
            [SCRIPT, "status", "--config", self.path],
            env=environment(),
            path=self.directory,
        )
        code = await protocol.ended
        self.assertEqual(protocol.err, b"")
        self.assertEqual(code, 1)


class StandInConsumersTests(SynchronousTestCase):
    """
    L{standInConsumers}, the consumers of a command run without the server.
    """

    def test_oneForEachServiceInPlace(self) -> None:
        """
        Each service has a stand-in consumer under its section, carrying its
        names, registered in place: 10,000 services are not copied 10,000
        times.
        """
        services = tuple(
            attrs.evolve(
                makeOptions("/srv"), section=f"s{i}", name=f"s{i}", domains=(f"n{i}.test",)
            )
            for i in range(3)
        )
        registry = standInConsumers(Configuration("cli test", None, services))
        leaf = registry.utilities._subscribers[0][ICertificateConsumer][""]
        self.assertIsInstance(leaf, SubscriberLeaf)
        self.assertEqual(
            [
                (name, consumer.domains)
                for name, consumer in registry.getUtilitiesFor(ICertificateConsumer)
            ],
            [(f"s{i}", (f"n{i}.test",)) for i in range(3)],
        )
