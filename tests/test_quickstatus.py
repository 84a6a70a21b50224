"""
Tests for L{letsencrypt_resource.quickstatus}: C{status} answered by the
running server without loading the configuration or the package.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from letsencrypt_resource.cli import run
from letsencrypt_resource.config import RESOURCE_OPTIONS, ConfigurationError, loadConfiguration
from letsencrypt_resource.controlsocket import SOCKET_NAME, socketAddress
from letsencrypt_resource.display import formatStatus
from letsencrypt_resource.quickstatus import (
    _resourceSections,
    askStatus,
    quickStatus,
    readLine,
    receiving,
    stateDirectoryOf,
    statusArguments,
)
from letsencrypt_resource.resourcesection import RESOURCE_OPTION_NAMES
from letsencrypt_resource.safefs import openFolder
from tests.helpers.processcase import ROOT
from tests.helpers.unprivileged import ATTACKER

ROW = {
    "names": ["files.example.test"],
    "services": ["services/files"],
    "issuer": "CN=Test CA",
    "ca": "https://ca.example.test/directory",
    "not_after": "2027-02-27T13:38:16+00:00",
    "days_left": 90.0,
    "provisional": False,
    "server_running": True,
    "serving": {"services/files": "ca"},
    "failures": 0,
    "last_error": None,
    "retry": False,
    "reason": "lifetime",
    "next_check": "2027-01-28T13:18:16+00:00",
    "why": "most of its lifetime has passed",
}

SERVICE = """
[services/files]
type = https
address = 127.0.0.1
port = 8443
path = {public}
ssl_domains = files.example.test
"""


class FakeServer:
    """
    A control socket in a state directory, answering one request with
    C{answer} in a thread, as the server's does.
    """

    def __init__(self, state: str, answer: bytes):
        self.requests: list[bytes] = []
        self._listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with openFolder(state, create=False) as folder:
            # Bound through the folder: its path is too long for a socket.
            self._listening.bind(socketAddress(state, folder))
        self._listening.listen(1)
        self._answer = answer
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._listening.accept()
        except OSError:
            # Closed before anyone asked.
            return
        with connection:
            received = b""
            while b"\n" not in received:
                received += connection.recv(4096)
            self.requests.append(received)
            connection.sendall(self._answer)

    def close(self) -> None:
        self._listening.close()
        self._thread.join(5)


def serveOnce(case: SynchronousTestCase, state: str, line: bytes) -> FakeServer:
    """
    A L{FakeServer} on C{state} in place of any socket there, answering
    C{line}, closed when C{case} ends.
    """
    try:
        os.unlink(os.path.join(state, SOCKET_NAME))
    except FileNotFoundError:
        pass
    server = FakeServer(state, line)
    case.addCleanup(server.close)
    return server


class StatusArgumentsTests(SynchronousTestCase):
    """
    L{statusArguments} takes the plain forms of C{status} only.
    """

    def test_plainForms(self) -> None:
        """
        C{--config FILE}, C{-c FILE} or C{--config=FILE}, before or after
        C{status}, with C{--json} after it.
        """
        self.assertEqual(statusArguments(["status", "--config", "a.ini"]), ("a.ini", False))
        self.assertEqual(
            statusArguments(["--config", "a.ini", "status", "--json"]), ("a.ini", True)
        )
        self.assertEqual(statusArguments(["status", "-c", "a.ini", "--json"]), ("a.ini", True))
        self.assertEqual(statusArguments(["status", "--json", "--config=a.ini"]), ("a.ini", True))

    def test_othersLeftToTheFullCommand(self) -> None:
        """
        Anything else is for the full parser: other commands, options it
        does not know, C{--json} before C{status}, a missing file name.
        """
        for argv in [
            ["renew", "--config", "a.ini"],
            ["status"],
            ["status", "--config"],
            ["status", "--config", "--json"],
            ["--json", "status", "--config", "a.ini"],
            ["status", "--help", "--config", "a.ini"],
            ["status", "status", "--config", "a.ini"],
            ["--version"],
        ]:
            self.assertIsNone(statusArguments(argv), argv)


class StateDirectoryTests(SynchronousTestCase):
    """
    L{stateDirectoryOf} reads the state directory as the configuration
    does, from the resource sections alone.
    """

    def write(self, text: str) -> str:
        """
        Write C{text} with a service as a configuration file; return its
        path.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "public"))
        path = os.path.join(directory, "server.ini")
        with open(path, "w") as stream:
            stream.write(text + SERVICE.format(public=os.path.join(directory, "public")))
        return path

    def test_asTheConfigurationReadsIt(self) -> None:
        """
        The default folder beside the file, a relative path, an absolute
        one, C{~}: each as L{loadConfiguration} reads it; a disabled
        resource section is passed over.
        """
        for setting in ["", "state_directory = state\n", "state_directory = /srv/le\n"]:
            path = self.write(
                "[resources/off]\ntype = lets-encrypt\nenabled = no\nstate_directory = /off\n\n"
                f"[resources/le]\ntype = lets-encrypt\naddress = 127.0.0.1\nport = 8080\n{setting}"
            )
            expected = loadConfiguration(path).resource
            assert expected is not None
            self.assertEqual(stateDirectoryOf(path), expected.stateDirectory)
        path = self.write("[resources/le]\ntype = lets-encrypt\nstate_directory = ~/le\n")
        self.assertEqual(stateDirectoryOf(path), os.path.expanduser("~/le"))

    def test_unclearLeftToTheFullCommand(self) -> None:
        """
        Two enabled resources, a section of another type, an unknown
        C{enabled}, a file that is no INI or cannot be read: L{None}, and
        the full command says what is wrong.
        """
        resource = "[resources/{name}]\ntype = {kind}\nenabled = {enabled}\n"
        for text in [
            resource.format(name="a", kind="lets-encrypt", enabled="yes")
            + resource.format(name="b", kind="lets-encrypt", enabled="yes"),
            resource.format(name="a", kind="other", enabled="yes"),
            resource.format(name="a", kind="lets-encrypt", enabled="maybe"),
            "[resources/a]\ntype = lets-encrypt\nthis is not INI\n",
            "[server]\nname = no resource\n",
        ]:
            self.assertIsNone(stateDirectoryOf(self.write(text)), text)
        self.assertIsNone(stateDirectoryOf(os.path.abspath(self.mktemp())))

    def test_refusedResourceSectionLeftToTheFullCommand(self) -> None:
        """
        Resource sections the configuration refuses give L{None} too: the
        section twice (the copy disabled), an option twice, an unknown
        option, a line starting with C{[} that is no header, an indented
        resource header.
        """
        resource = "[resources/le]\ntype = lets-encrypt\nstate_directory = /srv/a\n"
        for text in [
            resource + "\n[resources/le]\ntype = lets-encrypt\nenabled = no\n",
            resource + "state_directory = /srv/b\n",
            resource + "stat_directory = /srv/b\n",
            resource + "[x = 1\n",
            "[services/x]\n  [resources/b]\ntype = lets-encrypt\n\n" + resource,
        ]:
            path = self.write(text)
            self.assertIsNone(stateDirectoryOf(path), text)
            self.assertRaises(ConfigurationError, loadConfiguration, path)

    def test_sectionsAsHeadersRead(self) -> None:
        """
        L{_resourceSections} gives each resource section from its header to
        the next line that starts with C{[}, its indented lines with it
        (an indented resource header too), and L{None} for a line that
        starts with C{[} and is no header (C{[}, C{[]}, C{[x}), or an
        indented resource header outside a resource section; a header with
        more after its C{]}, or a C{]} only, is one.
        """
        resource = "[resources/a]\ntype = lets-encrypt\n"
        for text, expected in [
            ("", ""),
            (resource, resource),
            ("[x]\ny = 1\n" + resource + "[z]\n", resource),
            (
                resource + "  [resources/b]\n\n[x] y\n" + resource,
                resource + "  [resources/b]\n\n" + resource,
            ),
            ("[resources/a] ] \n[]]\n", "[resources/a] ] \n"),
            ("[x] [resources/y]\n", ""),
            ("x = [resources/y]\n", ""),
            ("[x]\n  [not a header\n", ""),
            (resource + "[\n", None),
            (resource + "[]\n", None),
            ("[x\n" + resource, None),
            ("[x]\n\t[resources/b]\n" + resource, None),
            ("\x0c[resources/b]\n" + resource, None),
        ]:
            self.assertEqual(_resourceSections(text), expected, text)

    def test_sectionsFoundWithoutStepPerSection(self) -> None:
        """
        L{_resourceSections} takes no step of its own (a call) per section
        of another kind: a server's 10,000 services cost it a few searches
        of the text.
        """
        services = "".join(f"[services/s{n}]\ntype = https\nport = {n}\n" for n in range(1000))
        text = services + "[resources/le]\ntype = lets-encrypt\n" + services
        calls = []
        sys.setprofile(lambda frame, event, argument: calls.append(event))
        try:
            sections = _resourceSections(text)
        finally:
            sys.setprofile(None)
        self.assertEqual(sections, "[resources/le]\ntype = lets-encrypt\n")
        self.assertLess(len(calls), 50)

    def test_optionNamesAsTheConfiguration(self) -> None:
        """
        The resource section's options known to the quick path are those
        of the configuration (the defaults and the type it uses are the
        configuration's own, which imports them).
        """
        self.assertEqual(RESOURCE_OPTION_NAMES, {option.name for option in RESOURCE_OPTIONS})

    def test_regularFilesOnly(self) -> None:
        """
        A configuration that can be read once only (a pipe, as
        C{/dev/stdin} or a process substitution give) is not read: the
        full command reads it whole.
        """
        text = "[resources/le]\ntype = lets-encrypt\nstate_directory = /srv/le\n"
        self.assertEqual(stateDirectoryOf(self.write(text)), "/srv/le")
        reading, writing = os.pipe()
        self.addCleanup(os.close, reading)
        os.write(writing, text.encode())
        os.close(writing)
        self.assertIsNone(stateDirectoryOf(f"/proc/self/fd/{reading}"))
        self.assertEqual(os.read(reading, 1000), text.encode())


class AskStatusTests(SynchronousTestCase):
    """
    L{askStatus} and L{quickStatus} ask the server's control socket.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        self.state = os.path.join(self.directory, "state")
        os.makedirs(self.state, 0o700)
        self.path = os.path.join(self.directory, "server.ini")
        with open(self.path, "w") as stream:
            stream.write(f"[resources/le]\ntype = lets-encrypt\nstate_directory = {self.state}\n")

    def serve(self, answer: object) -> FakeServer:
        """
        Answer the next request on the state directory's socket with
        C{answer}.
        """
        return self.serveLine(json.dumps(answer).encode() + b"\n")

    def serveLine(self, line: bytes) -> FakeServer:
        """
        Answer the next request on the state directory's socket with
        C{line}, in place of any socket there.
        """
        return serveOnce(self, self.state, line)

    def test_brokenAnswers(self) -> None:
        """
        An answer nested deeper than the JSON parser goes, rows that are
        not objects, rows without the fields of a status row, an object
        that is no answer: nothing printed, no exception, and the full
        command runs (which fails cleanly, see L{FullCommandTests}).
        """
        out = io.StringIO()
        self.serveLine(b"[" * 100000 + b"\n")
        self.assertFalse(quickStatus(["status", "--json", "-c", self.path], out))
        self.serve({"result": [{"names": ["files.example.test"]}], "error": None})
        self.assertFalse(quickStatus(["status", "-c", self.path], out))
        self.serve({"result": [1, 2], "error": None})
        self.assertFalse(quickStatus(["status", "--json", "-c", self.path], out))
        self.serve({"result": {"not": "rows"}, "error": None})
        self.assertFalse(quickStatus(["status", "--json", "-c", self.path], out))
        self.serve({"rows": [ROW]})
        self.assertFalse(quickStatus(["status", "--json", "-c", self.path], out))
        self.assertEqual(out.getvalue(), "")

    def test_json(self) -> None:
        """
        With C{--json}, the server's rows are printed as compact JSON, and
        the server was asked for C{status}.
        """
        server = self.serve({"result": [ROW], "error": None})
        out = io.StringIO()
        self.assertTrue(quickStatus(["status", "--json", "--config", self.path], out))
        self.assertEqual(json.loads(out.getvalue()), [ROW])
        self.assertEqual(out.getvalue().count("\n"), 1)
        self.assertEqual(json.loads(server.requests[0]), {"name": "status", "arguments": {}})

    def test_jsonAsTheServerWroteIt(self) -> None:
        """
        With C{--json}, the rows' text is printed as the server's answer
        holds it, not encoded again: the same text as C{json.dumps} of the
        rows for a server that writes its answer with it (all do); an
        answer of another form is read and printed with C{json.dumps}.
        """
        compact = json.dumps([ROW], separators=(",", ":"))
        self.serveLine(b'{"result": ' + compact.encode() + b', "error": null}\n')
        out = io.StringIO()
        self.assertTrue(quickStatus(["status", "--json", "-c", self.path], out))
        self.assertEqual(out.getvalue(), compact + "\n")
        self.serveLine(json.dumps({"error": None, "result": [ROW]}).encode() + b"\n")
        out = io.StringIO()
        self.assertTrue(quickStatus(["status", "--json", "-c", self.path], out))
        self.assertEqual(out.getvalue(), json.dumps([ROW]) + "\n")

    def test_jsonTextCheckedBeforePrinted(self) -> None:
        """
        With C{--json}, the server's text is printed as it is only when it
        is printable ASCII and is, on its own, the rows checked: rows with
        other characters (a C1 control, a bidi override, DEL, an encoded
        lone surrogate) are printed escaped, as C{json.dumps} writes them;
        an answer with more members, or two results, prints the rows
        checked, as valid JSON; no exception either way.
        """
        cases = [
            (b'[{"a": "\xc2\x9b2J"}]', [{"a": "\x9b2J"}]),
            (b'[{"a": "\xe2\x80\xae"}]', [{"a": "\u202e"}]),
            (b'[{"a": "\x7f"}]', [{"a": "\x7f"}]),
            (b'[{"a": "\xed\xa0\x80"}]', [{"a": "\ud800"}]),
            (b'[], "x": "\xc2\x9b31m"', []),
            (b'[{"a": 1}], "result": []', []),
            (b'[{"a": 1}]\t', [{"a": 1}]),
            (b'\r[{"a": 1}]', [{"a": 1}]),
        ]
        for text, rows in cases:
            self.serveLine(b'{"result": ' + text + b', "error": null}\n')
            out = io.StringIO()
            self.assertTrue(quickStatus(["status", "--json", "-c", self.path], out))
            self.assertEqual(out.getvalue(), json.dumps(rows) + "\n")

    def test_table(self) -> None:
        """
        Without C{--json}, the rows are printed as the table of
        L{formatStatus}, for a running server.
        """
        self.serve({"result": [ROW], "error": None})
        out = io.StringIO()
        self.assertTrue(quickStatus(["status", "-c", self.path], out))
        self.assertEqual(out.getvalue(), formatStatus([ROW], True, self.state) + "\n")

    def test_noAnswer(self) -> None:
        """
        No socket, an error, a cut answer or an untrusted socket: nothing
        printed, and the full command runs (which reports it).
        """
        out = io.StringIO()
        self.assertFalse(quickStatus(["status", "-c", self.path], out))
        self.serve({"result": None, "error": "broken"})
        self.assertIsNone(askStatus(self.state))
        os.unlink(os.path.join(self.state, SOCKET_NAME))
        cut = FakeServer(self.state, b'{"result": [')
        self.addCleanup(cut.close)
        self.assertIsNone(askStatus(self.state))
        os.unlink(os.path.join(self.state, SOCKET_NAME))
        self.serve({"result": [ROW], "error": None})
        os.chmod(self.state, 0o777)
        self.assertIsNone(askStatus(self.state))
        self.assertEqual(out.getvalue(), "")

    def test_squattedStateDirectory(self) -> None:
        """
        A state directory another user made (owned by that user, with a
        socket of theirs that answers), or one below a folder others can
        write in: the full command refuses such a state directory, so the
        quick path asks nothing there, and the full command says why.
        """
        self.serve({"result": [dict(ROW, issuer="CN=Forged")], "error": None})
        os.chmod(self.directory, 0o777)
        out = io.StringIO()
        self.assertFalse(quickStatus(["status", "--json", "-c", self.path], out))
        os.chmod(self.directory, 0o755)
        if os.geteuid() != 0:
            raise SkipTest("another user's state directory: run as root (CI does)")
        for path in (self.state, os.path.join(self.state, SOCKET_NAME)):
            os.chown(path, ATTACKER, ATTACKER)
        os.chmod(self.state, 0o755)
        self.assertFalse(quickStatus(["status", "--json", "-c", self.path], out))
        self.assertEqual(out.getvalue(), "")

    def test_importsLittle(self) -> None:
        """
        The operations command's module imports neither Twisted nor
        cryptography nor the configuration, nor the command line parser: a
        status the server answers pays for none of them.
        """
        code = (
            "import sys, letsencrypt_resource.cli; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'cryptography', 'acme', 'attrs', 'zope', 'argparse') "
            "or m == 'letsencrypt_resource.config'))"
        )
        output = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(output.split(), [])


class Piece(bytes):
    """
    A part of an answer that counts the searches in it.
    """

    searches: list[int] = []

    def __contains__(self, item: object) -> bool:
        self.searches.append(len(self))
        return super().__contains__(item)  # type: ignore[operator]


class ReadLineTests(SynchronousTestCase):
    """
    L{readLine} reads the answer's line.
    """

    def test_eachPartSearchedOnce(self) -> None:
        """
        A line received in many parts is read whole, each part searched
        for the line's end once: a 64 MB answer in parts of 64 KB made a
        search of all received at each part, 32 GB in all.
        """
        parts = [Piece(b"x" * 10) for _ in range(100)] + [Piece(b"end\nnext")]
        Piece.searches = []
        self.assertEqual(readLine(lambda size: parts.pop(0)), b"x" * 1000 + b"end")
        self.assertEqual(Piece.searches, [10] * 100 + [8])

    def test_cut(self) -> None:
        """
        A connection that ends before the line does gives C{None}.
        """
        parts = [b"partial", b""]
        self.assertIsNone(readLine(lambda size: parts.pop(0)))

    def test_limitExact(self) -> None:
        """
        A line of C{limit} bytes is read; one byte more is refused, and no
        more than one byte beyond the limit is ever asked for, however the
        answer is cut.
        """
        for data, expected in [
            (b"x" * 10 + b"\nrest", b"x" * 10),
            (b"x" * 11 + b"\n", None),
            (b"x" * 100, None),
        ]:
            for part in (1, 3, 100):
                receive = CutStream(data, part)
                self.assertEqual(readLine(receive, limit=10), expected, (data, part))
                self.assertLessEqual(max(receive.reach), 11)


class CutStream:
    """
    An answer given in parts of at most C{part} bytes, as a C{recv} gives
    it, which records how far into it each call could read.
    """

    def __init__(self, data: bytes, part: int):
        self._stream = io.BytesIO(data)
        self._part = part
        self.reach: list[int] = []

    def __call__(self, size: int) -> bytes:
        self.reach.append(self._stream.tell() + size)
        return self._stream.read(min(size, self._part))


class SlowConnection:
    """
    A connection that gives one byte per call, each C{delay} seconds
    later on C{clock}, and records the timeouts set on it.
    """

    def __init__(self, clock: list[float], delay: float):
        self.clock = clock
        self.delay = delay
        self.timeouts: list[float] = []

    def settimeout(self, timeout: float) -> None:
        self.timeouts.append(timeout)

    def recv(self, size: int) -> bytes:
        self.clock[0] += self.delay
        return b"x"


class ReceivingTests(SynchronousTestCase):
    """
    L{receiving} puts one deadline on the whole answer.
    """

    def test_oneDeadline(self) -> None:
        """
        A server that sends a byte every 59 s, each within the time left,
        is given up on once the whole answer's time has passed; each wait
        is the time left.
        """
        now = [1000.0]
        connection = SlowConnection(now, 59.0)
        receive = receiving(connection, 60.0, lambda: now[0])  # type: ignore[arg-type]
        self.assertEqual(receive(10), b"x")
        self.assertEqual(receive(10), b"x")
        self.assertRaises(TimeoutError, receive, 10)
        self.assertEqual(connection.timeouts, [60.0, 1.0])
        receive = receiving(connection, 60.0, lambda: now[0])  # type: ignore[arg-type]
        self.assertRaises(TimeoutError, readLine, receive)


class FullCommandTests(TestCase):
    """
    The full command (L{run}), asking the same server through the
    reactor's client: its JSON is one line, and an answer of another
    shape fails cleanly.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        self.state = os.path.join(self.directory, "state")
        os.makedirs(self.state, 0o700)
        self.path = os.path.join(self.directory, "server.ini")
        public = os.path.join(self.directory, "public")
        os.makedirs(public)
        with open(self.path, "w") as stream:
            stream.write(
                "[resources/le]\ntype = lets-encrypt\naddress = 127.0.0.1\nport = 8080\n"
                f"state_directory = {self.state}\n" + SERVICE.format(public=public)
            )

    async def command(self, answer: bytes, *argv: str) -> tuple[int, str, str]:
        """
        Run the full command with C{argv} on the configuration, while a
        server answers C{answer} (a line).

        @return: Its exit status, its output and its errors.
        """
        serveOnce(self, self.state, answer)
        out, err = io.StringIO(), io.StringIO()
        status = await run(reactor, [*argv, "--config", self.path], out, err)
        return status, out.getvalue(), err.getvalue()

    async def test_jsonOnOneLine(self) -> None:
        """
        C{status --json}, C{renew --json}, C{revoke} and C{account} print
        their result as JSON on one line.
        """
        rows = [ROW, dict(ROW, names=["b.example.test"])]
        answer = json.dumps({"result": rows, "error": None}).encode() + b"\n"
        for argv in [("status", "--json"), ("renew", "--json"), ("account", "show")]:
            status, out, err = await self.command(answer, *argv)
            self.assertEqual((status, json.loads(out), out.count("\n")), (0, rows, 1), err)
        revoked = {"revoked": "0a1b", "names": ["files.example.test"]}
        answer = json.dumps({"result": revoked, "error": None}).encode() + b"\n"
        status, out, err = await self.command(answer, "revoke", "files.example.test")
        self.assertEqual((status, json.loads(out), out.count("\n")), (0, revoked, 1), err)

    async def test_brokenAnswerFailsCleanly(self) -> None:
        """
        An answer nested deeper than the JSON parser goes, or rows the
        table cannot show: an error, status 1, no traceback.
        """
        status, out, err = await self.command(b"[" * 100000 + b"\n", "status", "--json")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, "error: the server's answer is not JSON\n")
        broken = {"result": [{"names": ["files.example.test"]}], "error": None}
        for argv in [("status",), ("renew",)]:
            status, out, err = await self.command(json.dumps(broken).encode() + b"\n", *argv)
            self.assertEqual((status, out), (1, ""))
            self.assertIn("error: the server's answer cannot be shown: KeyError", err)
