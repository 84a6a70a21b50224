"""
Running code as other users, for the attacker tests: a victim user that
runs the server and an attacker that shares a folder with it.

The tests run as root (as CI does) and start each process with the uid and
gid of the user it plays and no supplementary groups; plain uids need no
entry in C{/etc/passwd}.  Each scenario works in a folder of C{/tmp} made
for it, whose files belong to whichever user the scenario says.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tempfile
from functools import cache
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

#: The user the server runs as.
VICTIM = 64999
#: Another user, who can write some folder the server uses.
ATTACKER = 65534

#: Run as the uid of argv[1] (gid the same, no other group) the program
#: argv[2] with the arguments after it.
_SWITCH = (
    "import os, sys; uid = int(sys.argv[1]); os.setgroups([]); os.setgid(uid); "
    "os.setuid(uid); os.execv(sys.argv[2], sys.argv[2:])"
)


def asUser(uid: int, argv: list[str]) -> list[str]:
    """
    The command line that runs C{argv} (its first item a path) as the user
    and group C{uid}, with no supplementary groups.
    """
    return [sys.executable, "-c", _SWITCH, str(uid), *argv]


@attrs.frozen
class Interpreter:
    """
    A Python that the other users can run, with this checkout and the
    tests' packages on its path.

    @ivar executable: Its path.
    @ivar pythonPath: The C{PYTHONPATH} it needs.
    """

    executable: str
    pythonPath: str

    def command(self, uid: int, arguments: list[str]) -> list[str]:
        """
        The command line that runs this Python with C{arguments} as C{uid}.
        """
        return asUser(uid, [self.executable, *arguments])

    def environment(self, **extra: str) -> dict[str, str]:
        """
        The environment for it: the tests' own, with its C{PYTHONPATH} and
        C{extra}.
        """
        return {**os.environ, "PYTHONPATH": self.pythonPath, **extra}

    async def run(
        self, uid: int, arguments: list[str], path: str, **extra: str
    ) -> tuple[bytes, bytes, int]:
        """
        Run this Python with C{arguments} as C{uid} in the folder C{path},
        to its end.

        @return: Its standard output, its standard error and its exit status.
        """
        command = self.command(uid, arguments)
        return await getProcessOutputAndValue(
            command[0], command[1:], env=self.environment(**extra), path=path
        )


def _candidates(checkout: str) -> list[Interpreter]:
    """
    The Pythons to try: the tests' own, then the system's of the same
    version with the tests' packages (a Python built in a private home,
    as pyenv's under C{/root}, cannot be run by other users).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    packages = os.pathsep.join([checkout, *site.getsitepackages()])
    return [
        Interpreter(sys.executable, checkout),
        Interpreter(f"/usr/bin/python{version}", packages),
    ]


@cache
def _findInterpreter(checkout: str) -> Interpreter | str:
    """
    The first of L{_candidates} with which both users import this checkout's
    package and Twisted, or why none can.
    """
    problems = []
    for candidate in _candidates(checkout):
        for uid in (VICTIM, ATTACKER):
            probe = subprocess.run(
                candidate.command(uid, ["-c", "import letsencrypt_resource, twisted"]),
                cwd="/",
                env=candidate.environment(),
                capture_output=True,
                timeout=60,
            )
            if probe.returncode != 0:
                lines = probe.stderr.decode("utf-8", "replace").strip().splitlines()
                problems.append(f"{candidate.executable} as uid {uid}: {lines[-1:]}")
                break
        else:
            return candidate
    return "; ".join(problems)


def requireUsers(checkout: str) -> Interpreter:
    """
    A Python the other users can run this checkout with; the test is
    skipped unless it runs as root and there is one.
    """
    if os.geteuid() != 0:
        raise SkipTest("the attacker tests play several users: run them as root (CI does)")
    found = _findInterpreter(checkout)
    if isinstance(found, str):
        raise SkipTest(
            f"no Python that other users can run this checkout with ({found}); "
            "make the checkout and a Python readable by every user"
        )
    return found


@attrs.frozen
class Sandbox:
    """
    A folder of C{/tmp} for one scenario, readable by every user, in which
    files and folders are made for a given owner.

    @ivar root: Its path.
    """

    root: str

    def path(self, name: str) -> str:
        """
        The absolute path of C{name} in the sandbox.
        """
        return os.path.join(self.root, name)

    def folder(self, name: str, owner: int, mode: int = 0o755) -> str:
        """
        Make the folder C{name}, owned by C{owner} with C{mode}.
        """
        path = self.path(name)
        os.makedirs(path, exist_ok=True)
        os.chown(path, owner, owner)
        os.chmod(path, mode)
        return path

    def file(self, name: str, data: bytes, owner: int, mode: int = 0o644) -> str:
        """
        Write the file C{name}, owned by C{owner} with C{mode}.
        """
        path = self.path(name)
        with open(path, "wb") as stream:
            stream.write(data)
        os.chown(path, owner, owner)
        os.chmod(path, mode)
        return path

    def link(self, name: str, target: str, owner: int) -> str:
        """
        Plant at C{name} a symbolic link to C{target}, owned by C{owner}.
        """
        path = self.path(name)
        os.symlink(target, path)
        os.lchown(path, owner, owner)
        return path


def makeSandbox(testCase: TestCase) -> Sandbox:
    """
    A new L{Sandbox}, removed when C{testCase} ends.
    """
    root = tempfile.mkdtemp(prefix="attacker-", dir="/tmp")
    os.chmod(root, 0o755)
    testCase.addCleanup(shutil.rmtree, root, True)
    return Sandbox(root)


def snapshot(path: str) -> tuple[Any, ...]:
    """
    What an attack must not change at C{path}, without following a link
    there: a file's content, a folder's names, and the owner and mode.
    """
    status = os.lstat(path)
    if os.path.islink(path):
        content: Any = os.readlink(path)
    elif os.path.isdir(path):
        content = sorted(os.listdir(path))
    else:
        with open(path, "rb") as stream:
            content = stream.read()
    return content, status.st_uid, status.st_mode


class Twistd(ProcessProtocol):
    """
    A twistd process: its output, its exit status once it ended.
    """

    def __init__(self) -> None:
        self.output = b""
        self.status: int | None = None
        self.process: Any = None
        self._waiting: list[tuple[tuple[bytes, ...], Deferred[None]]] = []

    def when(self, *texts: bytes) -> Deferred[None]:
        """
        Fire once one of C{texts} is in the output or the process ended.
        """
        waiting: Deferred[None] = Deferred()
        self._waiting.append((texts, waiting))
        self._check()
        return waiting

    @property
    def pid(self) -> int:
        """
        The process's id (the switch to another user execs in place).
        """
        return self.process.pid

    async def stop(self) -> None:
        """
        Stop the server as systemd does, with SIGTERM, and wait for its
        end: it finishes its writes first.
        """
        if self.status is None:
            self.process.signalProcess("TERM")
            await self.when().addTimeout(10, reactor)

    def _check(self) -> None:
        for entry in list(self._waiting):
            texts, waiting = entry
            if self.status is not None or any(text in self.output for text in texts):
                self._waiting.remove(entry)
                waiting.callback(None)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self._check()

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.status = reason.value.exitCode
        if self.status is None:
            self.status = -1
        self._check()


def descriptorsUnder(pid: int, folder: str) -> list[str]:
    """
    The files under C{folder} that process C{pid} has open (a spooled
    request body shows as C{<folder>/#<inode> (deleted)}).
    """
    found = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            continue
        if target.startswith(folder + os.sep):
            found.append(target)
    return found
