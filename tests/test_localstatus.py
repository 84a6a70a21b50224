"""
The operations command's C{status} read in its own thread when no server
runs (L{letsencrypt_resource.localstatus}): the full command's output,
without the reactor or the server's parts, and the full command whenever
it does not fit.
"""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from letsencrypt_resource import config, localstatus
from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.cli import _checks, run
from letsencrypt_resource.config import Configuration, ConfigurationError
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.localstatus import localStatus
from letsencrypt_resource.statechecks import STATUS_CHECKS
from letsencrypt_resource.storage.lock import StateLock
from letsencrypt_resource.testing import FakeACMEServer
from tests.helpers.resourcecase import DAY
from tests.helpers.statedir import StateDirectory

#: The root of this tree, whose package the subprocess imports.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The names of the set whose certificate is stored.
STORED = ("stored.example.test", "www.stored.example.test")

#: A configuration of two sets, its state directory beside it.
CONFIGURATION = """\
[resources/le]
type = lets-encrypt
address = 127.0.0.1
port = 1
acme_url = https://acme.test/directory
agree_tos = yes
challenge_site = no
{extra}
[services/stored]
type = https
name = stored-https
address = 127.0.0.1
port = 2
path = {public}
ssl_domains = stored.example.test, www.stored.example.test

[services/new]
type = https
name = new-https
address = 127.0.0.1
port = 3
path = {public}
ssl_domains = new.example.test
"""

#: What the status read in the command's thread must not import: the
#: reactor, TLS, Twisted's endpoints, and the server's parts.
SERVER_MODULES = frozenset(
    {
        "OpenSSL",
        "twisted.internet.endpoints",
        "twisted.internet.ssl",
        "twisted.internet.tcp",
        "twisted.internet.reactor",
        "twisted.internet.epollreactor",
        "twisted.internet.selectreactor",
        "letsencrypt_resource.composition",
        "letsencrypt_resource.control",
        "letsencrypt_resource.host",
        "letsencrypt_resource.localca",
        "letsencrypt_resource.operations",
        "letsencrypt_resource.resource",
    }
)


def configure(directory: str, extra: str = "", store: bool = True) -> str:
    """
    Write the configuration in C{directory} and, when C{store}, make its
    state directory, a certificate stored for the first set: return the
    configuration's path.
    """
    public = os.path.join(directory, "public")
    os.makedirs(public)
    path = os.path.join(directory, "server.ini")
    with open(path, "w") as stream:
        stream.write(CONFIGURATION.format(public=public, extra=extra))
    if store:
        state = os.path.join(directory, "lets-encrypt")
        os.makedirs(state, 0o700)
        clock = MemoryReactorClock()
        clock.advance(time.time() - DAY)
        key = generateKey("ecdsa-p256")
        chain = FakeACMEServer(clock).issue(key.public_key(), STORED, 90 * DAY)
        StateDirectory(state).saveCertificate(STORED, CertifiedKey.fromParts(key, chain))
    return path


class SameOutputTests(TestCase):
    """
    L{localStatus} prints what the full command prints.
    """

    async def test_asTheFullCommand(self) -> None:
        """
        The table and the JSON are the full command's, byte for byte, and
        the state directory's lock is let go after.
        """
        directory = os.path.abspath(self.mktemp())
        path = configure(directory)
        for argv in (["status", "-c", path], ["status", "--json", "--config", path]):
            local = io.StringIO()
            self.assertTrue(localStatus(argv, local))
            full = io.StringIO()
            code = await run(reactor, argv, full, io.StringIO())
            self.assertEqual(code, 0)
            self.assertEqual(local.getvalue(), full.getvalue())
        lock = StateLock(os.path.join(directory, "lets-encrypt"))
        lock.acquire()
        lock.release()


class CollectionTests(SynchronousTestCase):
    """
    What L{localStatus} reads lives until the command ends.
    """

    def test_paused(self) -> None:
        """
        The collector's automatic collections pause while the
        configuration is read, and resume after.
        """
        path = configure(os.path.abspath(self.mktemp()))
        seen: list[bool] = []

        def loadConfiguration(path: str) -> Configuration:
            seen.append(gc.isenabled())
            return config.loadConfiguration(path)

        self.patch(localstatus, "loadConfiguration", loadConfiguration)
        self.assertTrue(gc.isenabled())
        self.assertTrue(localStatus(["status", "-c", path], io.StringIO()))
        self.assertEqual(seen, [False])
        self.assertTrue(gc.isenabled())


class ReaderLockTests(SynchronousTestCase):
    """
    L{localStatus} holds the state directory's lock as a reader, which a
    server that starts meanwhile waits for (see L{StateLock.acquire}).
    """

    def test_heldAsReader(self) -> None:
        """
        While the records are read, the lock file names this process as a
        reader; the lock is let go after.
        """
        directory = os.path.abspath(self.mktemp())
        path = configure(directory)
        lockFile = os.path.join(directory, "lets-encrypt", "lock")
        holders: list[str] = []
        read = localstatus.readRows

        def readRows(*args: Any) -> list[dict[str, Any]]:
            with open(lockFile) as stream:
                holders.append(stream.read())
            return read(*args)

        self.patch(localstatus, "readRows", readRows)
        self.assertTrue(localStatus(["status", "-c", path], io.StringIO()))
        self.assertEqual(holders, [f"{os.getpid()} reader"])
        after = StateLock(os.path.join(directory, "lets-encrypt"))
        after.acquire()
        after.release()


class FullCommandTests(SynchronousTestCase):
    """
    Where L{localStatus} does not fit, it prints nothing, changes nothing
    and leaves the full command to run.
    """

    def assertLeft(self, argv: list[str]) -> None:
        """
        L{localStatus} of C{argv} leaves it to the full command.
        """
        out = io.StringIO()
        self.assertFalse(localStatus(argv, out))
        self.assertEqual(out.getvalue(), "")

    def test_otherCommands(self) -> None:
        """
        Another command, or another form of C{status}, is the full
        command's.
        """
        path = configure(os.path.abspath(self.mktemp()))
        self.assertLeft(["renew", "-c", path])
        self.assertLeft(["status", "--verbose", "-c", path])
        self.assertLeft(["status"])

    def test_lockHeld(self) -> None:
        """
        While another process holds the state directory's lock (a server
        starting, another command), the full command asks it.
        """
        directory = os.path.abspath(self.mktemp())
        path = configure(directory)
        state = os.path.join(directory, "lets-encrypt")
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from letsencrypt_resource.storage.lock import StateLock; "
                f"StateLock({state!r}).acquire(); print('held', flush=True); sys.stdin.read()",
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdin.close)  # type: ignore[union-attr]
        self.assertEqual(holder.stdout.readline(), b"held\n")  # type: ignore[union-attr]
        self.assertLeft(["status", "-c", path])

    def test_notARegularFile(self) -> None:
        """
        A configuration that is not a regular file (a pipe, C{/dev/stdin}, a
        process substitution) can be read once only: it is the full
        command's, left unread.
        """
        directory = os.path.abspath(self.mktemp())
        path = configure(directory, store=False)
        with open(path, "rb") as stream:
            text = stream.read()
        reading, writing = os.pipe()
        self.addCleanup(os.close, reading)
        os.write(writing, text)
        os.close(writing)
        self.assertLeft(["status", "-c", f"/dev/fd/{reading}"])
        self.assertEqual(os.read(reading, len(text) + 1), text)

    def test_noStateDirectory(self) -> None:
        """
        A state directory that does not exist is the full command's, which
        says so; nothing is created.
        """
        directory = os.path.abspath(self.mktemp())
        path = configure(directory, store=False)
        self.assertLeft(["status", "-c", path])
        self.assertFalse(os.path.lexists(os.path.join(directory, "lets-encrypt")))

    def test_invalidConfiguration(self) -> None:
        """
        A configuration the full command refuses is the full command's,
        which says why.
        """
        directory = os.path.abspath(self.mktemp())
        path = configure(directory, extra="unknown_option = 1\n")
        self.assertLeft(["status", "-c", path])
        self.assertLeft(["status", "-c", os.path.join(directory, "missing.ini")])

    def test_statusChecks(self) -> None:
        """
        The configuration is checked by the full command's own checks of
        C{status} (one tuple, L{STATUS_CHECKS}): one that refuses it leaves
        it to the full command.
        """
        path = configure(os.path.abspath(self.mktemp()))
        self.assertIs(_checks("status"), STATUS_CHECKS)
        checked: list[Configuration] = []

        def refuse(configuration: Configuration) -> None:
            checked.append(configuration)
            raise ConfigurationError("resources/le", None, "refused")

        self.patch(localstatus, "STATUS_CHECKS", (refuse,))
        self.assertLeft(["status", "-c", path])
        [configuration] = checked
        self.assertEqual(configuration.resource.section, "resources/le")  # type: ignore[union-attr]

    def test_cluster(self) -> None:
        """
        A cluster node's status, which reads the cluster's database, is
        the full command's.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key = os.path.join(directory, "cluster.key")
        with open(key, "wb") as stream:
            stream.write(os.urandom(32).hex().encode() + b"\n")
        os.chmod(key, 0o600)
        path = configure(
            directory,
            extra=f"cluster_database = postgresql:///nowhere\ncluster_key_file = {key}\n",
        )
        self.assertLeft(["status", "-c", path])


class ImportTests(SynchronousTestCase):
    """
    The status read in the command's thread imports neither the reactor
    nor the server's parts.
    """

    def test_lean(self) -> None:
        """
        The command's entry point prints the status, read from the state
        directory, without importing the reactor, TLS, Twisted's endpoints,
        the resource, its operations, the control socket's server or the
        test CA.
        """
        path = configure(os.path.abspath(self.mktemp()))
        # At exit: the full command's reactor ends the process itself.
        code = (
            "import atexit, sys; "
            "atexit.register(lambda: print(' '.join(sys.modules), file=sys.stderr)); "
            "from letsencrypt_resource.cli import main; "
            f"main(['status', '--json', '-c', {path!r}])"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        self.assertEqual(len(json.loads(done.stdout)), 2)
        loaded = set(done.stderr.split())
        self.assertIn("letsencrypt_resource.statusreader", loaded)
        self.assertEqual(SERVER_MODULES & loaded, set())
