"""
The product as users run it: C{twistd -n lets-encrypt --config FILE}.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from letsencrypt_resource.control import StateLock
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.storage.availability import KEY_CHECK, KEY_CHECK_TEXT
from letsencrypt_resource.storage.lock import READER_WAIT
from letsencrypt_resource.storage.postgres import PostgresStorage
from letsencrypt_resource.storage.sealed import SealedStorage
from letsencrypt_resource.storage.sealing import Sealer
from tests.helpers.configuration import CONFIGURATION, HELLO
from tests.helpers.pebblecase import TestCACase
from tests.helpers.postgres import PostgresCase
from tests.helpers.processcase import environment, twistdCommand
from tests.helpers.tlsclient import connectTLS, fetchOverTLS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WatchedProcess(ProcessProtocol):
    """
    Collects a process's output and fires when a text appears in it often
    enough.

    @ivar seen: Fires when the text given at creation has appeared.
    """

    def __init__(self, text: bytes, count: int):
        self.output = b""
        self._watches: list[tuple[bytes, int, Deferred[None]]] = []
        self.seen = self.waitFor(text, count)
        self.ended: Deferred[None] = Deferred()

    def waitFor(self, text: bytes, count: int = 1) -> Deferred[None]:
        """
        A Deferred that fires once C{text} has appeared C{count} times in
        the output, or fails with the output if the process ends first.
        """
        watch: Deferred[None] = Deferred()
        self._watches.append((text, count, watch))
        self._check()
        return watch

    def _check(self) -> None:
        for entry in list(self._watches):
            text, count, watch = entry
            if self.output.count(text) >= count:
                self._watches.remove(entry)
                watch.callback(None)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self._check()

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        watches, self._watches = self._watches, []
        for _, _, watch in watches:
            watch.errback(AssertionError(self.output.decode("utf-8", "replace")))
        self.ended.callback(None)


class TwistdTests(TestCACase):
    """
    Runs twistd with the plugin, for real.
    """

    def writeConfiguration(self, text: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "public"))
        with open(os.path.join(directory, "public", "hello.txt"), "wb") as stream:
            stream.write(HELLO)
        path = os.path.join(directory, "server.ini")
        with open(path, "w") as stream:
            stream.write(text)
        return path

    def runServer(self, path: str) -> tuple[WatchedProcess, Any, Callable[[], Deferred[None]]]:
        """
        Start twistd on the configuration at C{path}, stopped with SIGTERM
        at the end of the test.

        @return: Its watcher, seeing three services on CA certificates
            (20016); its process; and a function that stops it and fires
            when it ended.
        """
        watcher = WatchedProcess(b" 20016 ", 3)
        process = reactor.spawnProcess(
            watcher,
            twistdCommand()[0],
            twistdCommand() + ["-n", "--pidfile=", "lets-encrypt", "--config", path],
            env=environment(),
            path=os.path.dirname(path),
        )

        def stop() -> Deferred[None]:
            if process.pid is not None:
                process.signalProcess(signal.SIGTERM)
            return watcher.ended

        self.addCleanup(stop)
        return watcher, process, stop

    async def test_servesIssuedCertificates(self) -> None:
        """
        Within 10 seconds of start, every service presents a certificate
        from the CA, and the log shows 20015 and 20016 for each.
        """
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        ports = [freeTCPPort() for _ in range(3)]
        path = self.writeConfiguration(
            CONFIGURATION.format(
                challengePort=challengePort,
                directoryURL=testCA.directoryURL,
                caFile=testCA.caFile,
                keyType="rsa-2048",
                ports=ports,
            )
        )
        started = time.monotonic()
        watcher, _, stop = self.runServer(path)
        await watcher.seen.addTimeout(10, reactor)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 10)
        self.assertEqual(watcher.output.count(b" 20015 "), 2)
        issuers = await testCA.fetchIssuerPEM()
        for port, name in zip(
            ports, ["files.example.test", "www.example.test", "reports.example.test"], strict=False
        ):
            _, received = await fetchOverTLS(reactor, port, name, issuers, "/hello.txt", HELLO)
            self.assertIn(HELLO, received)
        await stop()
        self.assertIn(b"Server Shut Down.", watcher.output)

    async def test_hangUpReloads(self) -> None:
        """
        C{SIGHUP} reloads the file instead of stopping the server: a bad
        file is refused with 20197 while the services go on; then a service
        added to the file listens and serves a CA-issued certificate, and
        the running services still answer, a connection opened before the
        reload included.
        """
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        ports = [freeTCPPort() for _ in range(4)]
        text = CONFIGURATION.format(
            challengePort=challengePort,
            directoryURL=testCA.directoryURL,
            caFile=testCA.caFile,
            keyType="ecdsa-p256",
            ports=ports,
        )
        path = self.writeConfiguration(text)
        watcher, process, _ = self.runServer(path)
        await watcher.seen.addTimeout(30, reactor)
        issuers = await testCA.fetchIssuerPEM()
        client = await connectTLS(reactor, ports[2], "reports.example.test", issuers)
        self.addCleanup(client.transport.loseConnection)
        await client.get("/hello.txt", HELLO)

        with open(path, "w") as stream:
            stream.write(text.replace(f"port = {ports[2]}", "port = 99999"))
        process.signalProcess(signal.SIGHUP)
        await watcher.waitFor(b" 20197 ").addTimeout(30, reactor)
        self.assertIn(b"[services/reports] option 'port'", watcher.output)
        await client.get("/hello.txt", HELLO)

        with open(path, "w") as stream:
            stream.write(
                text + "\n[services/new]\ntype = https\nname = new-https\n"
                f"address = 127.0.0.1\nport = {ports[3]}\npath = public\n"
                "ssl_domains = new.example.test\n"
            )
        process.signalProcess(signal.SIGHUP)
        await watcher.waitFor(b" 20016 Service new-https ").addTimeout(30, reactor)
        self.assertIn(b" 20196 ", watcher.output)
        _, received = await fetchOverTLS(
            reactor, ports[3], "new.example.test", issuers, "/hello.txt", HELLO
        )
        self.assertIn(HELLO, received)
        await client.get("/hello.txt", HELLO)
        _, received = await fetchOverTLS(
            reactor, ports[0], "files.example.test", issuers, "/hello.txt", HELLO
        )
        self.assertIn(HELLO, received)
        # Its first listen is counted in 20209; the reload did not restart it.
        self.assertEqual(watcher.output.count(b" 20156 Service files-https "), 0)
        self.assertEqual(watcher.output.count(b" 20209 "), 1)
        self.assertNotIn(b"Traceback", watcher.output)

    async def refused(self, path: str) -> tuple[bytes, bytes]:
        """
        Run twistd on the configuration at C{path}, which must stop it at
        once with status 1 and without twistd's usage text; return its
        output.
        """
        out, err, code = await getProcessOutputAndValue(
            twistdCommand()[0],
            ["-n", "--pidfile=", "lets-encrypt", "--config", path],
            env=environment(),
            path=os.path.dirname(path),
        )
        self.assertEqual(code, 1)
        self.assertNotIn(b"Usage:", out + err)
        return out, err

    async def test_badConfiguration(self) -> None:
        """
        A bad configuration stops twistd with a non-zero status and one
        message naming the section and option, and writes nothing.
        """
        path = self.writeConfiguration(
            "[resources/le]\ntype = lets-encrypt\naddress = 127.0.0.1\n"
            "[services/files]\ntype = https\naddress = 127.0.0.1\nport = 99999\n"
            "path = public\nssl_domains = files.example.test\n"
        )
        before = sorted(os.listdir(os.path.dirname(path)))
        out, err = await self.refused(path)
        self.assertIn(b"[services/files] option 'port'", out + err)
        self.assertIn(b"99999", out + err)
        self.assertNotIn(b"Traceback", out + err)
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), before)

    async def test_unknownOptionOnly(self) -> None:
        """
        An unknown option is one line on the standard error naming the
        file, section and option, and the known option closest to it.
        """
        path = self.writeConfiguration(
            "[resources/le]\ntype = lets-encrypt\naddress = 127.0.0.1\n"
            "[services/files]\ntype = https\naddress = 127.0.0.1\n"
            "path = public\nssl_domain = files.example.test\n"
        )
        out, err = await self.refused(path)
        self.assertEqual(out, b"")
        self.assertEqual(
            err.decode(),
            f"twistd lets-encrypt: error: {path}: [services/files] option "
            "'ssl_domain': unknown option; did you mean 'ssl_domains'?\n",
        )

    async def test_oddTextOneLine(self) -> None:
        """
        Text that made a parser raise something other than C{ValueError}
        (a 400-digit C{check_interval}: C{OverflowError}; an endpoint
        ending in a lone backslash: C{RuntimeError}) is one line naming
        the section and option, not a traceback.
        """
        for section, option, text in [
            ("resources/le", "check_interval", "1" + "0" * 400),
            ("services/files", "endpoint", "tcp:\\"),
        ]:
            lines = {
                "resources/le": ["type = lets-encrypt", "address = 127.0.0.1"],
                "services/files": [
                    "type = https",
                    "path = public",
                    "ssl_domains = files.example.test",
                ],
            }
            lines[section].append(f"{option} = {text}")
            path = self.writeConfiguration(
                "".join(f"[{name}]\n" + "\n".join(body) + "\n" for name, body in lines.items())
            )
            out, err = await self.refused(path)
            self.assertEqual(out, b"")
            self.assertTrue(
                err.decode().startswith(
                    f"twistd lets-encrypt: error: {path}: [{section}] option '{option}': "
                ),
                err,
            )
            self.assertEqual(err.count(b"\n"), 1, err)

    async def test_secondServerRefused(self) -> None:
        """
        A second twistd on a state directory in use stops at once with a
        message naming the directory.
        """
        path = self.writeConfiguration(
            "[resources/le]\ntype = lets-encrypt\naddress = 127.0.0.1\n"
            f"port = {freeTCPPort()}\nacme_url = https://127.0.0.1:1/dir\n"
        )
        lock = StateLock(os.path.join(os.path.dirname(path), "lets-encrypt"))
        lock.acquire()
        self.addCleanup(lock.release)
        out, err = await self.refused(path)
        self.assertIn(b"is in use by another process (pid", out + err)
        self.assertNotIn(b"Traceback", out + err)

    async def test_readerWaitedFor(self) -> None:
        """
        A twistd that finds the state directory's lock held by a reader (a
        C{status} read without a server) waits L{READER_WAIT} seconds for
        it before it stops, with the message of a server's lock.
        """
        path = self.writeConfiguration(
            "[resources/le]\ntype = lets-encrypt\naddress = 127.0.0.1\n"
            f"port = {freeTCPPort()}\nacme_url = https://127.0.0.1:1/dir\n"
        )
        lock = StateLock(os.path.join(os.path.dirname(path), "lets-encrypt"))
        lock.acquire(reader=True)
        self.addCleanup(lock.release)
        began = time.monotonic()
        out, err = await self.refused(path)
        self.assertGreaterEqual(time.monotonic() - began, READER_WAIT)
        self.assertIn(f"is in use by another process (pid {os.getpid()})".encode(), out + err)


class BackgroundTests(TestCase):
    """
    C{twistd lets-encrypt} started in the background (without C{-n}).
    """

    async def test_lockNamesTheServer(self) -> None:
        """
        twistd takes the state directory's lock while it builds the server,
        before it forks and its first process exits: once started, the lock
        file names the server's pid (twistd's pidfile), not the exited one.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "public"))
        path = os.path.join(directory, "server.ini")
        with open(path, "w") as stream:
            stream.write(
                "[resources/le]\ntype = lets-encrypt\naddress = 127.0.0.1\n"
                f"port = {freeTCPPort()}\nacme_url = https://127.0.0.1:1/dir\n"
            )
        pidfile = os.path.join(directory, "twistd.pid")
        out, err, code = await getProcessOutputAndValue(
            twistdCommand()[0],
            [
                f"--pidfile={pidfile}",
                "--logfile=" + os.path.join(directory, "twistd.log"),
                "lets-encrypt",
                "--config",
                path,
            ],
            env=environment(),
            path=directory,
        )
        self.assertEqual(code, 0, out + err)
        with open(pidfile) as stream:
            server = int(stream.read())
        self.addCleanup(stopProcess, server)
        with open(os.path.join(directory, "lets-encrypt", "lock")) as stream:
            self.assertEqual(stream.read(), str(server))


async def stopProcess(pid: int) -> None:
    """
    Stop the process C{pid} (not a child of this one) with SIGTERM, and wait
    until it is gone.
    """
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await deferLater(reactor, 0.1, lambda: None)
    os.kill(pid, signal.SIGKILL)


class ClusterKeyTests(PostgresCase):
    """
    A node of a cluster whose key file is not the cluster's, run as users
    run it.
    """

    def keyFile(self) -> str:
        """
        A new cluster key file, readable by its owner only.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as stream:
            stream.write(os.urandom(32))
        os.chmod(path, 0o600)
        return path

    async def test_otherKeyFileExits(self) -> None:
        """
        twistd on a node whose C{cluster_key_file} is not the one the
        database was first used with ends by itself with status 1, one line
        on the standard error naming C{cluster_key_file} and the file, and
        event 20220 in its log; it stores nothing in the database.
        """
        first = SealedStorage(
            PostgresStorage(self.conninfo, reactor), Sealer.fromKeyFile(self.keyFile(), "node-1")
        )
        await first.store(KEY_CHECK, KEY_CHECK_TEXT)
        await first.close()
        rows = self.admin().execute("SELECT count(*) FROM letsencrypt_values").fetchone()
        keyFile = self.keyFile()
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "server.ini")
        with open(path, "w") as stream:
            stream.write(
                "[resources/le]\ntype = lets-encrypt\naddress = 127.0.0.1\n"
                f"port = {freeTCPPort()}\nacme_url = https://127.0.0.1:1/dir\n"
                f"cluster_database = {self.conninfo}\ncluster_key_file = {keyFile}\n"
                "node_name = node-2\n"
            )
        ran = getProcessOutputAndValue(
            twistdCommand()[0],
            ["-n", "--pidfile=", "lets-encrypt", "--config", path],
            env=environment(),
            path=folder,
        )
        out, err, code = await ran.addTimeout(60, reactor)
        self.assertEqual(code, 1)
        self.assertEqual(
            err.decode(),
            f"twistd lets-encrypt: error: {path}: [resources/le] option 'cluster_key_file': "
            f"{keyFile} is not the key file the cluster database was first used with\n",
        )
        self.assertIn(b" 20220 ", out)
        self.assertIn(b"Server Shut Down.", out)
        after = self.admin().execute("SELECT count(*) FROM letsencrypt_values").fetchone()
        self.assertEqual(after, rows)
