"""
The walk-through of C{docs/getting-started.rst} (section C{own-config}),
run as it is written there, so that the page and the product cannot drift.

The commands are read from the page's C{console} blocks and the
configuration from its C{ini} block, with only what running them beside
other tests needs changed:

  - C{letsencrypt-resource} and C{twistd} are the installed scripts beside
    the Python running the tests (C{./dev test} installs the package
    there), with this checkout on C{PYTHONPATH}; instead of activating
    C{.venv}, their folder comes first on C{PATH};
  - the test CA and the server get free ports instead of the documented
    14000, 5002 and 8443: those may be taken on the machine running the
    tests (a demo, a test CA or a server of the user's, another test run),
    so the defaults themselves are not run here; the configuration gets
    the lines the test CA printed, as the page says to paste them;
  - a long-running command started again (the test CA's restart) first
    stops the running one with C{SIGINT}, as Ctrl-C does;
  - an output line the page ends with C{...} is matched up to there;
  - everything runs in a new folder instead of the checkout.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

from docutils import nodes

from letsencrypt_resource.pebble import freeTCPPort
from tests.helpers.docpages import labelledSection, readPage
from tests.helpers.pebblecase import TestCACase
from tests.helpers.processcase import ROOT, GroupProcess

#: The commands that run until stopped, and what each prints once ready.
LONG_RUNNING = {"letsencrypt-resource testca": "to stop the test CA.", "twistd": None}
#: The options the test CA's lines set.
PASTED = re.compile(r"^(acme_url|acme_ca_file|address|port|agree_tos|state_directory) = .*$")


def walkthrough() -> tuple[list[tuple[str, list[str]]], str]:
    """
    The walk-through's commands, each with the output lines the page shows
    after it, and its configuration file.
    """
    section = labelledSection(readPage("getting-started.rst"), "own-config")
    commands: list[tuple[str, list[str]]] = []
    configuration = None
    for block in section.findall(nodes.literal_block):
        if "ini" in block["classes"]:
            configuration = block.astext() + "\n"
        if "console" not in block["classes"]:
            continue
        for line in block.astext().splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
    assert configuration is not None, "no ini block"
    return commands, configuration


#: Where the installed scripts are.
SCRIPTS = os.path.dirname(sys.executable)


def pythonCommand(command: str) -> list[str]:
    """
    The arguments, after the Python executable, that run C{command}: the
    installed script of its name.
    """
    words = shlex.split(command)
    return [os.path.join(SCRIPTS, words[0]), *words[1:]]


class WalkthroughTests(TestCACase):
    """
    The getting-started walk-through, from the test CA to the status and a
    client fetching a file over the certificate it issued.
    """

    def setUp(self) -> None:
        super().setUp()
        for script in LONG_RUNNING:
            if not os.path.exists(os.path.join(SCRIPTS, script.split()[0])):
                self.skipTest(f"{script.split()[0]} is not installed: pip install the package")
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.ports = {"14000": freeTCPPort(), "5002": freeTCPPort(), "8443": freeTCPPort()}
        self.printed: list[str] = []

    def ported(self, text: str) -> str:
        """
        C{text} with the page's ports replaced by this test's.
        """
        for documented, port in self.ports.items():
            text = re.sub(rf"\b{documented}\b", str(port), text)
        return text

    def shell(self, command: str) -> str:
        """
        Run C{command} with the shell, the installed scripts first on the
        path.

        @return: its output; it must succeed.
        """
        path = os.pathsep.join([SCRIPTS, os.environ.get("PATH", "")])
        result = subprocess.run(
            ["bash", "-c", self.ported(command)],
            cwd=self.folder,
            env={**os.environ, "PYTHONPATH": ROOT, "PATH": path},
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, f"{command}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def writeConfiguration(self, text: str) -> None:
        """
        Write C{my.ini} from the page's, with the test CA's lines pasted.
        """
        pasted = {line.split(" = ")[0]: line for line in self.printed if PASTED.match(line)}
        self.assertEqual(len(pasted), 6, self.printed)
        lines, section = [], ""
        for line in text.splitlines():
            if line.startswith("["):
                section = line
            if section.startswith("[resources/") and PASTED.match(line):
                line = pasted[line.split(" = ")[0]]
            lines.append(line)
        with open(os.path.join(self.folder, "my.ini"), "w") as stream:
            stream.write(self.ported("\n".join(lines)) + "\n")

    def test_walkthrough(self) -> None:
        """
        Every command of the walk-through succeeds and shows what the page
        says; the status shows the test CA's certificate for the names of
        the configuration, and curl fetches the file over it; after the
        test CA's restart (right after the server's connections to it),
        it prints the same lines, the running server still reaches it and
        the first forced renewal works, and curl fetches the file over the
        new certificate; Ctrl-C stops the server and the test CA, and
        nothing is left running.
        """
        commands, configuration = walkthrough()
        running: dict[str, GroupProcess] = {}
        for command, expected in commands:
            if command == ". .venv/bin/activate":
                continue
            long = [prefix for prefix in LONG_RUNNING if command.startswith(prefix)]
            if long:
                if long[0] in running:
                    self.stop(running.pop(long[0]))
                args = pythonCommand(command)
                if long[0].endswith("testca"):
                    args += ["--acme-port", str(self.ports["14000"])]
                    args += ["--challenge-port", str(self.ports["5002"])]
                else:
                    self.writeConfiguration(configuration)
                process = GroupProcess(self, args, cwd=self.folder)
                running[long[0]] = process
                marker = LONG_RUNNING[long[0]]
                if marker is not None:
                    printed = process.readUntil(marker).splitlines()
                    if self.printed:
                        self.assertEqual(
                            [x for x in printed if PASTED.match(x)],
                            [x for x in self.printed if PASTED.match(x)],
                        )
                    self.printed = printed
                continue
            output = self.untilShown(command, expected)
            for line in expected:
                self.assertIn(line.removesuffix("..."), output, command)
        for process in reversed(list(running.values())):
            self.stop(process)

    def stop(self, process: GroupProcess) -> None:
        """
        Stop C{process} as Ctrl-C does; it leaves nothing running.
        """
        # twistd ends by the signal itself, as it should (-2).
        status = process.stopWith(signal.SIGINT)
        self.assertIn(status, (0, -signal.SIGINT), process.output)
        self.assertFalse(process.groupLeftover(), process.output)

    def untilShown(self, command: str, expected: list[str]) -> str:
        """
        Run C{command}; a status is run again until it shows the test CA's
        certificates, as the page says it does a few seconds later.
        """
        deadline = time.monotonic() + 60
        while True:
            output = self.shell(command)
            if not command.endswith(" status"):
                return output
            if "Pebble Intermediate CA" in output or time.monotonic() > deadline:
                self.assertIn("files.mine.test, www.mine.test", output)
                self.assertIn("Pebble Intermediate CA", output)
                return output
            time.sleep(0.5)
