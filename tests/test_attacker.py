"""
The attacker part of the suite: the real server (twistd), run as an
unprivileged user, against another local user who can write some folder it
uses, and against anyone who can reach its listeners.

Each attack asserts outcomes only: secrets never disclosed, files
unchanged, refusals with a non-zero exit status, no 5xx answer and no
traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread

from letsencrypt_resource.keys import generateKey, keyToPEM
from letsencrypt_resource.pebble import freeTCPPort
from tests.helpers import parseResponse
from tests.helpers.pebblecase import TestCACase
from tests.helpers.rawclient import PROMPT, connect, exchange, fetch, readAll, sendFlood, statusOf
from tests.helpers.unprivileged import (
    ATTACKER,
    VICTIM,
    Interpreter,
    Twistd,
    descriptorsUnder,
    makeSandbox,
    requireUsers,
    snapshot,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HELLO = b"Hello from the served folder.\n"
SECRET = b"the victim's secret, never served\n"

#: An ACME directory nobody answers: the services run on provisional
#: certificates, which is all most attacks need.
UNREACHABLE_CA = "https://127.0.0.1:1/directory"

RESOURCE = """\
[resources/le]
type = lets-encrypt
address = 127.0.0.1
port = {port}
acme_url = {acmeURL}
"""

SERVICE = """\
[services/files]
type = https
address = 127.0.0.1
port = {port}
ssl_domains = files.example.test
"""

#: twistd, as its script runs it.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


class AttackerCase(TestCACase):
    """
    A victim's home folder in a sandbox of C{/tmp}: C{server.ini}, the
    default state directory beside it, a served folder C{public} whose
    content an attacker writes, and a private temporary folder.
    """

    timeout = 120

    def setUp(self) -> None:
        # Pebble is needed only by the tests that issue, which ask for it.
        self.python: Interpreter = requireUsers(ROOT)
        self.sandbox = makeSandbox(self)
        self.home = self.sandbox.folder("home", VICTIM)
        self.public = self.sandbox.folder("home/public", ATTACKER)
        self.sandbox.file("home/public/hello.txt", HELLO, ATTACKER)
        self.temporary = self.sandbox.folder("home/tmp", VICTIM, 0o700)
        self.state = self.sandbox.path("home/lets-encrypt")
        self.challengePort = freeTCPPort()
        self.httpsPort = freeTCPPort()

    def configure(
        self, resource: str = "", service: str = "path = public\n", acmeURL: str = UNREACHABLE_CA
    ) -> str:
        """
        Write the victim's C{server.ini}: the resource section with
        C{resource} added, one C{https} service with C{service} added.
        """
        text = (
            RESOURCE.format(port=self.challengePort, acmeURL=acmeURL)
            + resource
            + "\n"
            + SERVICE.format(port=self.httpsPort)
            + service
        )
        return self.sandbox.file("home/server.ini", text.encode("utf-8"), VICTIM)

    def spawn(self, configuration: str, uid: int = VICTIM) -> Twistd:
        """
        Start twistd on C{configuration} as C{uid}; it is stopped when the
        test ends.
        """
        twistd = Twistd()
        command = self.python.command(
            uid, ["-c", TWISTD, "-n", "--pidfile=", "lets-encrypt", "--config", configuration]
        )
        process = reactor.spawnProcess(
            twistd,
            command[0],
            command,
            env=self.python.environment(TMPDIR=self.temporary),
            path=self.home,
        )
        twistd.process = process
        self.addCleanup(twistd.stop)
        return twistd

    async def started(self, configuration: str, *texts: bytes) -> Twistd:
        """
        Start twistd and wait until one of C{texts} (by default 20209: the
        services listen) is logged.
        """
        twistd = self.spawn(configuration)
        await twistd.when(*(texts or (b" 20209 ",))).addTimeout(15, reactor)
        if twistd.status is not None:
            self.fail(f"twistd ended early:\n{twistd.output.decode('utf-8', 'replace')}")
        return twistd

    async def refused(self, configuration: str, uid: int = VICTIM) -> bytes:
        """
        Run twistd on C{configuration}, which must end it at start with a
        non-zero status and no traceback; return its output.
        """
        twistd = self.spawn(configuration, uid)
        await self.settle(twistd)
        self.assertRefused(twistd)
        return twistd.output

    @staticmethod
    async def settle(twistd: Twistd, *texts: bytes) -> None:
        """
        Wait, for 10 seconds at most, until C{twistd} ends or logs one of
        C{texts}.
        """
        try:
            await twistd.when(*texts).addTimeout(10, reactor)
        except Exception:
            pass

    def assertRefused(self, twistd: Twistd) -> None:
        """
        C{twistd} ended with a non-zero status and no traceback.
        """
        if twistd.status is None:
            self.fail(
                "twistd did not refuse to start:\n" + twistd.output.decode("utf-8", "replace")
            )
        self.assertNotEqual(twistd.status, 0, twistd.output)
        self.assertNotIn(b"Traceback", twistd.output)

    def assertUnchanged(self, before: dict[str, Any]) -> None:
        """
        Every path of C{before} is as its L{snapshot} there says.
        """
        changed = [path for path, seen in before.items() if snapshot(path) != seen]
        self.assertEqual(changed, [])

    def assertNames(self, output: bytes, *options: str) -> None:
        """
        C{output}, once the sandbox's paths are taken out, names each of
        C{options}.
        """
        text = output.replace(self.sandbox.root.encode("utf-8"), b"<sandbox>")
        for option in options:
            self.assertIn(option.encode("ascii"), text, output)


class ServedFolderTests(AttackerCase):
    """
    A content writer plants, in the served folder, links to every secret of
    the server's user and hidden files, and everyone sends crafted paths to
    every listener: no secret comes out, no answer is a 5xx.
    """

    #: Paths that must answer 404 (or 400) on the file service.
    TARGETS = [
        b"/state/provisional-signer.pem",
        b"/state/",
        b"/state/accounts/",
        b"/signer.pem",
        b"/account.pem",
        b"/secret.txt",
        b"/shadow",
        b"/config.ini",
        b"/outside/",
        b"/.hidden",
        b"/.git/config",
        b"/../server.ini",
        b"/%2e%2e/server.ini",
        b"/%2E%2E/lets-encrypt/provisional-signer.pem",
        b"/..%2fserver.ini",
        b"/%2e%2e%2fserver.ini",
        b"/..%5cserver.ini",
        b"/hello.txt/..%2f..%2fserver.ini",
        b"/state%2fprovisional-signer.pem",
        b"/hello.txt%00",
        b"/index.txt%00",
        b"/%00",
        b"/%00/../server.ini",
        b"//etc/passwd",
    ]

    def setUp(self) -> None:
        super().setUp()
        self.accountKey = keyToPEM(generateKey("ecdsa-p256"))
        self.sandbox.file("home/account.pem", self.accountKey, VICTIM, 0o600)
        self.sandbox.file("home/secret.txt", SECRET, VICTIM, 0o600)
        self.sandbox.folder("home/documents", VICTIM, 0o700)
        self.sandbox.file("home/documents/notes.txt", SECRET, VICTIM, 0o600)
        plants = {
            "state": "../lets-encrypt",
            "signer.pem": os.path.join(self.state, "provisional-signer.pem"),
            "account.pem": self.sandbox.path("home/account.pem"),
            "secret.txt": "../secret.txt",
            "shadow": "/etc/shadow",
            "config.ini": "../server.ini",
            "outside": self.sandbox.path("home/documents"),
        }
        for name, target in plants.items():
            self.sandbox.link(f"home/public/{name}", target, ATTACKER)
        self.sandbox.file("home/public/.hidden", SECRET, ATTACKER)
        self.sandbox.folder("home/public/.git", ATTACKER)
        self.sandbox.file("home/public/.git/config", SECRET, ATTACKER)

    def secrets(self) -> list[bytes]:
        """
        Bytes that no answer may hold: key material, the victim's secret
        and the configuration.
        """
        return [b"PRIVATE KEY", SECRET.strip(), b"acme_url", b"root:", b"notes.txt"]

    def problems(self, target: bytes, answer: bytes) -> list[str]:
        """
        What is wrong with C{answer} to C{target}: anything but a 404 or
        400, and any secret it gives away.
        """
        found = []
        code = statusOf(answer)
        if code not in (400, 404):
            found.append(f"{target!r} answered {code}")
        found.extend(
            f"{target!r} gave away {secret!r}" for secret in self.secrets() if secret in answer
        )
        return found

    async def test_fileService(self) -> None:
        """
        Through the file service, links out of the served folder, hidden
        files, dot-dot and encoded separators, and NUL all answer 404 or
        400 without a secret's bytes; the folder listing names no hidden
        file; the server logs no traceback.
        """
        twistd = await self.started(
            self.configure(resource=f"account_key = {self.sandbox.path('home/account.pem')}\n")
        )
        hello = await deferToThread(fetch, self.httpsPort, b"/hello.txt")
        self.assertEqual(statusOf(hello), 200)
        self.assertIn(HELLO, hello)
        listing = await deferToThread(fetch, self.httpsPort, b"/")
        self.assertLess(statusOf(listing), 500)
        problems = [
            f"the listing names {hidden!r}" for hidden in (b".hidden", b".git") if hidden in listing
        ]
        for target in self.TARGETS:
            answer = await deferToThread(fetch, self.httpsPort, target)
            problems.extend(self.problems(target, answer))
        self.assertFalse(problems, "\n".join(problems))
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_methods(self) -> None:
        """
        Every method but GET and HEAD, on a file and on a folder, of both
        listeners, answers 405 with C{Allow}.
        """
        twistd = await self.started(self.configure())
        problems = []
        for port, tls in ((self.httpsPort, True), (self.challengePort, False)):
            for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"PROPFIND"):
                for target in (b"/hello.txt", b"/"):
                    request = b"%s %s HTTP/1.1\r\nHost: files.example.test\r\n" % (
                        method,
                        target,
                    )
                    answer = parseResponse(
                        await deferToThread(exchange, port, tls, request + b"Content-Length: 0\r\n")
                    )
                    if answer.code != 405 or b"allow" not in answer.headers:
                        problems.append(
                            f"{method.decode()} {target.decode()} on port {port}: {answer.code}"
                        )
        self.assertFalse(problems, "\n".join(problems))
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_challengeSite(self) -> None:
        """
        The challenge site answers the same paths, bare or under the
        challenge prefix, with 404 or 400 and no secret.
        """
        twistd = await self.started(self.configure())
        problems = []
        for target in self.TARGETS:
            for prefix in (b"", b"/.well-known/acme-challenge"):
                answer = await deferToThread(fetch, self.challengePort, prefix + target, False)
                problems.extend(self.problems(prefix + target, answer))
        self.assertFalse(problems, "\n".join(problems))
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_controlSocket(self) -> None:
        """
        Another user cannot connect to the control socket, so cannot run
        any operation.
        """
        await self.started(self.configure())
        probe = (
            "import socket, sys; s = socket.socket(socket.AF_UNIX); "
            "s.connect(sys.argv[1]); "
            's.sendall(b\'{"name": "account-show", "arguments": {}}\\n\'); '
            "print(s.recv(65536))"
        )
        out, err, status = await self.python.run(
            ATTACKER,
            ["-c", probe, os.path.join(self.state, "control.sock")],
            self.sandbox.root,
        )
        self.assertNotEqual(status, 0)
        self.assertNotIn(b"result", out)


class ServedFolderConfigurationTests(AttackerCase):
    """
    A served C{path} that holds the state directory, the store directory or
    the configuration file is refused at load, naming both options, before
    anything is written.
    """

    async def test_pathHoldsStateDirectory(self) -> None:
        """
        C{path} the folder of the configuration file, where the default
        state directory sits: refused, naming C{path} and
        C{state_directory}; no state directory is made.
        """
        output = await self.refused(self.configure(service=f"path = {self.home}\n"))
        self.assertNames(output, "path", "state_directory")
        self.assertFalse(os.path.lexists(self.state))

    async def test_pathIsStateDirectory(self) -> None:
        """
        C{path} the state directory itself: refused, naming both.
        """
        self.sandbox.folder("home/lets-encrypt", VICTIM, 0o700)
        output = await self.refused(self.configure(service=f"path = {self.state}\n"))
        self.assertNames(output, "path", "state_directory")

    async def test_pathLinksToStateDirectory(self) -> None:
        """
        C{path} a link to a folder that holds the state directory: refused,
        naming both.
        """
        self.sandbox.link("www", self.home, VICTIM)
        output = await self.refused(self.configure(service=f"path = {self.sandbox.path('www')}\n"))
        self.assertNames(output, "path", "state_directory")

    async def test_pathHoldsStoreDirectory(self) -> None:
        """
        A C{store_directory} inside the served folder: refused, naming
        C{path} and C{store_directory}.
        """
        output = await self.refused(
            self.configure(resource=f"store_directory = {self.public}/certificates\n")
        )
        self.assertNames(output, "path", "store_directory")

    async def test_pathHoldsConfiguration(self) -> None:
        """
        The configuration file in the served folder, the state directory
        elsewhere: refused, naming C{path}.
        """
        self.sandbox.folder("state", VICTIM, 0o700)
        output = await self.refused(
            self.configure(
                resource=f"state_directory = {self.sandbox.path('state')}\n",
                service=f"path = {self.home}\n",
            )
        )
        self.assertNames(output, "path")


class PlantedLinkTests(AttackerCase):
    """
    A user who can write a folder the server writes in plants links there,
    to files and folders of the server's user, at every name the server
    writes: the server refuses to work there, naming the option, and every
    target is left as it was.
    """

    #: The files the server writes in its state directory.
    FILES = ("lock", "provisional-signer.pem", "control.sock")
    #: The folders it makes there.
    FOLDERS = ("accounts", "certificates", "renewal")

    def plant(
        self, folder: str, owner: int, files: tuple[str, ...], folders: tuple[str, ...]
    ) -> dict[str, Any]:
        """
        Plant, as the attacker, in the sandbox's C{folder}, a link at each
        of C{files} to a private file of C{owner}, and at each of
        C{folders} to a folder of C{owner}.

        @return: The L{snapshot} of every target.
        """
        targets = []
        for name in files + folders:
            target = f"home/target-of-{os.path.basename(folder)}-{name}"
            if name in files:
                targets.append(self.sandbox.file(target, SECRET, owner, 0o600))
            else:
                targets.append(self.sandbox.folder(target, owner, 0o755))
            self.sandbox.link(f"{folder}/{name}", targets[-1], ATTACKER)
        return {target: snapshot(target) for target in targets}

    def plantTemporary(
        self, folder: str, owner: int, twistd: Twistd, names: tuple[str, ...]
    ) -> dict[str, Any]:
        """
        Plant, once the server's pid is known, a link at the temporary
        file name (C{.<name>.<pid>.tmp}) of each of C{names}.
        """
        temporaries = tuple(f".{name}.{twistd.pid}.tmp" for name in names)
        return self.plant(folder, owner, temporaries, ())

    async def stateDirectoryPlanted(self, folder: str, uid: int) -> None:
        """
        Run the server as C{uid} on the state directory C{folder} (in the
        sandbox), planted with links at every name it writes: refused,
        naming C{state_directory}; every target unchanged.
        """
        before = self.plant(folder, uid, self.FILES, self.FOLDERS)
        twistd = self.spawn(
            self.configure(resource=f"state_directory = {self.sandbox.path(folder)}\n"),
            uid,
        )
        before.update(self.plantTemporary(folder, uid, twistd, ("provisional-signer.pem",)))
        await self.settle(twistd)
        self.assertUnchanged(before)
        self.assertRefused(twistd)
        self.assertNames(twistd.output, "state_directory")

    async def test_stateDirectoryWritableByOthers(self) -> None:
        """
        The server's own state directory, left writable by others: refused,
        nothing written through the links planted there.
        """
        self.sandbox.folder("home/lets-encrypt", VICTIM, 0o777)
        await self.stateDirectoryPlanted("home/lets-encrypt", VICTIM)

    async def test_stateDirectoryWritableByOthersAsRoot(self) -> None:
        """
        The same for a server run as root, whose writes through a link
        could clobber any file of the system.
        """
        self.sandbox.folder("home/lets-encrypt", 0, 0o777)
        await self.stateDirectoryPlanted("home/lets-encrypt", 0)

    async def test_stateDirectoryOwnedByAttacker(self) -> None:
        """
        A state directory in a shared folder (sticky and writable by all, as
        C{/tmp}) that the attacker made first: refused, nothing written
        through its links.
        """
        self.sandbox.folder("shared", 0, 0o1777)
        self.sandbox.folder("shared/state", ATTACKER, 0o777)
        await self.stateDirectoryPlanted("shared/state", VICTIM)

    async def test_subfoldersOwnedByAttacker(self) -> None:
        """
        A private state directory whose C{accounts} and C{renewal} folders
        belong to the attacker (left by an earlier owner, or restored from
        a backup), with links at the renewal state's name and temporary
        name: nothing new appears in the attacker's folders, nothing is
        written through the links, and no traceback.
        """
        self.sandbox.folder("home/lets-encrypt", VICTIM, 0o700)
        folders = [
            self.sandbox.folder(f"home/lets-encrypt/{name}", ATTACKER, 0o777)
            for name in ("accounts", "renewal")
        ]
        renewal = "home/lets-encrypt/renewal"
        state = ("files.example.test.json",)
        before = self.plant(renewal, VICTIM, state, ())
        twistd = self.spawn(self.configure())
        before.update(self.plantTemporary(renewal, VICTIM, twistd, state))
        planted = {folder: set(os.listdir(folder)) for folder in folders}
        await self.settle(twistd, b" 20160 ")
        await twistd.stop()
        self.assertUnchanged(before)
        for folder, names in planted.items():
            self.assertEqual(set(os.listdir(folder)) - names, set(), folder)
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_stateDirectoryLink(self) -> None:
        """
        The attacker's link, in a shared folder, at the state directory's
        path, to a folder of the server's user: refused, naming
        C{state_directory}; the folder keeps its mode and content.
        """
        self.sandbox.folder("shared", 0, 0o1777)
        documents = self.sandbox.folder("home/documents", VICTIM, 0o755)
        self.sandbox.file("home/documents/notes.txt", SECRET, VICTIM, 0o644)
        self.sandbox.link("shared/state", documents, ATTACKER)
        before = {documents: snapshot(documents)}
        twistd = self.spawn(
            self.configure(resource=f"state_directory = {self.sandbox.path('shared/state')}\n")
        )
        await self.settle(twistd)
        self.assertUnchanged(before)
        self.assertRefused(twistd)
        self.assertNames(twistd.output, "state_directory")

    async def test_storeDirectory(self) -> None:
        """
        A store directory shared with other users (writable by them), where
        the attacker planted a link at the certificate's export folder to a
        folder of the server's user: after a real issuance, nothing is
        written through it, and the output names C{store_directory}.
        """
        self._require(modern=False)
        testCA = await self.startTestCA(self.challengePort)
        with open(testCA.caFile, "rb") as stream:
            caFile = self.sandbox.file("home/ca.pem", stream.read(), VICTIM)
        self.sandbox.folder("home/exported", VICTIM, 0o777)
        before = self.plant("home/exported", VICTIM, (), ("files.example.test",))
        twistd = self.spawn(
            self.configure(
                resource=(
                    f"store_directory = {self.sandbox.path('home/exported')}\n"
                    f"acme_ca_file = {caFile}\nagree_tos = yes\n"
                ),
                acmeURL=testCA.directoryURL,
            )
        )
        await self.settle(twistd, b" 20015 ", b" 20009 ")
        await twistd.stop()
        self.assertUnchanged(before)
        self.assertNotIn(b"Traceback", twistd.output)
        self.assertNames(twistd.output, "store_directory")


class ForgedServer(Protocol):
    """
    An attacker's control socket: keeps what it is sent and answers every
    request with a forged status.
    """

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        answer = {"result": [{"names": [FORGED]}], "error": None}
        self.transport.write(json.dumps(answer).encode("ascii") + b"\n")


#: The name only an attacker's answer holds.
FORGED = "forged.attacker.test"


class LongStatePathTests(AttackerCase):
    """
    With a state directory whose path is too long for a UNIX socket, the
    control socket stays in the state directory (reached through
    C{/proc/self/fd}): the folder of the shared temporary folder that an
    earlier version fell back to, made first by another user, changes
    nothing, and the operations command talks to the real server.
    """

    def setUp(self) -> None:
        super().setUp()
        self.state = self.sandbox.path("home/" + "s" * 100)
        # The folder, and the socket in it, that the fallback of earlier
        # versions used, which another user could make first.
        self.squatted = f"/tmp/letsencrypt-resource-{VICTIM}"
        path = os.path.join(self.state, "control.sock").encode("utf-8")
        self.forgedSocket = os.path.join(
            self.squatted, hashlib.sha256(path).hexdigest()[:24] + ".sock"
        )
        self.addCleanup(self.removeSquatted)
        self.removeSquatted()

    def removeSquatted(self) -> None:
        """
        Remove the squatted folder, or the link there.
        """
        if os.path.islink(self.squatted):
            os.unlink(self.squatted)
        else:
            shutil.rmtree(self.squatted, ignore_errors=True)

    def squatFolder(self) -> Any:
        """
        Make the folder as the attacker, writable by all, with a socket at
        the old fallback's name that answers forged statuses.

        @return: The forged server's factory; its C{received} lists what
            it was sent.
        """
        os.mkdir(self.squatted)
        os.chown(self.squatted, ATTACKER, ATTACKER)
        os.chmod(self.squatted, 0o777)
        factory = Factory.forProtocol(ForgedServer)
        factory.received = []
        port = reactor.listenUNIX(self.forgedSocket, factory, mode=0o777)
        self.addCleanup(port.stopListening)
        os.chown(self.forgedSocket, ATTACKER, ATTACKER)
        return factory

    async def serve(self) -> tuple[Twistd, str]:
        """
        Start the victim's server on the long state directory.

        @return: It and its configuration file.
        """
        configuration = self.configure(resource=f"state_directory = {self.state}\n")
        return await self.started(configuration), configuration

    async def assertServes(self, twistd: Twistd, configuration: str) -> None:
        """
        Assert that the server runs with its control socket, that the
        operations command, run by the victim, gets the real status from
        it, and that a reload (C{SIGHUP}) is applied, with no traceback.
        """
        out, err, status = await self.python.run(
            VICTIM,
            ["-m", "letsencrypt_resource", "--config", configuration, "status", "--json"],
            self.home,
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)[0]["names"], ["files.example.test"])
        self.assertNotIn(FORGED.encode("ascii"), out + err)
        self.assertTrue(os.path.exists(os.path.join(self.state, "control.sock")))
        twistd.process.signalProcess("HUP")
        await twistd.when(b" 20196 ", b" 20197 ").addTimeout(15, reactor)
        self.assertIn(b" 20196 ", twistd.output)
        self.assertNotIn(b" 20175 ", twistd.output)
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_squattedFolder(self) -> None:
        """
        The attacker made the folder first and answers forged statuses on
        a socket at the old fallback's name: the server starts with its
        socket, the operations command gets the real status, a reload is
        applied, and the folder is left as it was, its socket never sent
        a request.
        """
        factory = self.squatFolder()
        before = {self.squatted: snapshot(self.squatted)}
        await self.assertServes(*await self.serve())
        self.assertUnchanged(before)
        self.assertEqual(factory.received, [])

    async def test_squattedWhileRunning(self) -> None:
        """
        The attacker makes the folder while the server runs (after the
        temporary folder was cleaned): the operations command and reloads
        go on working.
        """
        twistd, configuration = await self.serve()
        self.removeSquatted()
        factory = self.squatFolder()
        await self.assertServes(twistd, configuration)
        self.assertEqual(factory.received, [])

    async def test_folderLink(self) -> None:
        """
        The attacker's link at the folder's name, to a folder of the
        server's user: the server runs with its socket, and leaves that
        folder as it was.
        """
        documents = self.sandbox.folder("home/documents", VICTIM, 0o755)
        os.symlink(documents, self.squatted)
        os.lchown(self.squatted, ATTACKER, ATTACKER)
        before = {documents: snapshot(documents)}
        await self.assertServes(*await self.serve())
        self.assertUnchanged(before)


#: The most a body flood sends; a listener that read it all did not refuse
#: it.
BODY_FLOOD = 32 * 1024 * 1024
#: The most a line flood sends to the control socket, whose requests are a
#: few hundred bytes.
LINE_FLOOD = 16 * 1024 * 1024

#: How each flood announces its body, and the piece it repeats.
BODIES = {
    "announced": (b"Content-Length: 10000000000\r\n", b"x" * 65536),
    "chunked": (b"Transfer-Encoding: chunked\r\n", b"10000\r\n" + b"x" * 65536 + b"\r\n"),
}

#: Header floods, as extra header lines.
HEADERS = {
    "a 20 KB header": b"X-Flood: " + b"a" * 20000 + b"\r\n",
    "1000 headers": b"".join(b"X-Flood-%d: a\r\n" % n for n in range(1000)),
}


class FloodTests(AttackerCase):
    """
    Request bodies and headers without end, sent by anyone to every
    listener: refused promptly (a 4xx, or a close), never read to the end
    nor spooled to disk, never a 5xx; an endless line on the control socket
    is refused and the server goes on.
    """

    async def bodyFloods(self, twistd: Twistd, port: int, tls: bool, target: bytes) -> list[str]:
        """
        Send GET and POST requests for C{target} with an endless body, announced
        and chunked.

        @return: What went wrong.
        """
        problems = []
        for method in (b"GET", b"POST"):
            for kind, (header, chunk) in BODIES.items():
                label = f"{method.decode()}, body {kind}"
                head = b"%s %s HTTP/1.1\r\nHost: files.example.test\r\n%s\r\n" % (
                    method,
                    target,
                    header,
                )
                connection = await deferToThread(connect, port, tls)
                try:
                    sent = await deferToThread(sendFlood, connection, head, chunk, BODY_FLOOD)
                    spooled = descriptorsUnder(twistd.pid, self.temporary)
                    try:
                        answer: bytes | None = await deferToThread(readAll, connection)
                    except TimeoutError:
                        answer = None
                finally:
                    connection.close()
                if sent >= BODY_FLOOD:
                    problems.append(f"{label}: all {BODY_FLOOD} bytes were read")
                if spooled:
                    problems.append(f"{label}: spooled to {spooled}")
                if answer is None:
                    problems.append(f"{label}: neither answered and closed within {PROMPT} s")
                elif answer and not 400 <= statusOf(answer) < 500:
                    problems.append(f"{label}: answered {statusOf(answer)}")
        return problems

    async def headerFloods(self, port: int, tls: bool) -> list[str]:
        """
        Send each of L{HEADERS}, and an over-long request line.

        @return: What went wrong.
        """
        requests = [(label, b"/", headers) for label, headers in HEADERS.items()]
        requests.append(("a 20 KB request line", b"/" + b"a" * 20000, b""))
        problems = []
        for label, target, headers in requests:
            started = time.monotonic()
            try:
                answer = await deferToThread(fetch, port, target, tls, headers)
            except TimeoutError:
                problems.append(f"{label}: no answer within {PROMPT} s")
                continue
            # Closing at once may reset the connection before the client
            # reads the 400: the answer is then lost, which is no fault.
            if answer and statusOf(answer) not in (400, 414, 431):
                problems.append(f"{label}: answered {statusOf(answer)}")
            if time.monotonic() - started > PROMPT:
                problems.append(f"{label}: answered after {PROMPT} s")
        return problems

    async def test_fileServiceBodies(self) -> None:
        """
        The file service refuses endless bodies, on files and folders.
        """
        twistd = await self.started(self.configure())
        problems = await self.bodyFloods(twistd, self.httpsPort, True, b"/hello.txt")
        problems += await self.bodyFloods(twistd, self.httpsPort, True, b"/")
        self.assertFalse(problems, "\n".join(problems))
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_challengeSiteBodies(self) -> None:
        """
        The challenge site refuses endless bodies.
        """
        twistd = await self.started(self.configure())
        problems = await self.bodyFloods(
            twistd, self.challengePort, False, b"/.well-known/acme-challenge/token"
        )
        self.assertFalse(problems, "\n".join(problems))
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_headers(self) -> None:
        """
        Both listeners answer over-long headers, too many headers and an
        over-long request line at once, with 400, 414 or 431 (or a close).
        """
        twistd = await self.started(self.configure())
        problems = [f"file service, {p}" for p in await self.headerFloods(self.httpsPort, True)]
        problems += [
            f"challenge site, {p}" for p in await self.headerFloods(self.challengePort, False)
        ]
        self.assertFalse(problems, "\n".join(problems))
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_controlSocketLine(self) -> None:
        """
        The control socket refuses an endless line long before
        L{LINE_FLOOD} bytes, and answers the next request.
        """
        twistd = await self.started(self.configure())
        path = os.path.join(self.state, "control.sock")

        def flood() -> int:
            with socket.socket(socket.AF_UNIX) as connection:
                connection.settimeout(PROMPT)
                connection.connect(path)
                return sendFlood(connection, b"", b"x" * 65536, LINE_FLOOD)

        def status() -> Any:
            with socket.socket(socket.AF_UNIX) as connection:
                connection.settimeout(PROMPT)
                connection.connect(path)
                connection.sendall(b'{"name": "status", "arguments": {}}\n')
                return json.loads(connection.makefile("rb").readline())

        self.assertLess(await deferToThread(flood), LINE_FLOOD)
        answer = await deferToThread(status)
        self.assertIsNone(answer["error"])
        self.assertEqual(answer["result"][0]["names"], ["files.example.test"])
        self.assertNotIn(b"Traceback", twistd.output)
