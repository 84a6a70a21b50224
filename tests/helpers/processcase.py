"""
Run a command of the product in a process group of its own, as a user runs
it in a terminal, and check what it leaves behind; the environment and the
twistd that run this checkout.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from twisted.trial.unittest import SynchronousTestCase

#: The repository root, where C{letsencrypt_resource} is imported from.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _interruptible() -> None:
    """
    In the child, before it runs the command: C{SIGINT} handled by default,
    as in a terminal, even when this test run was started with it ignored
    (a background job of a shell without job control: C{cmd &} in a
    script), which a child inherits and which makes Python and Twisted
    leave it ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class GroupProcess:
    """
    A child process leading a new session, so that a signal sent to it
    reaches it alone, not the processes it started (as when a service
    manager or C{kill} stops it, unlike Ctrl-C in a terminal).

    @ivar output: what it wrote to its standard output so far.
    """

    def __init__(self, case: SynchronousTestCase, args: Sequence[str], cwd: str) -> None:
        env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_interruptible,
        )
        self.output = ""
        case.addCleanup(self._killGroup)

    def _killGroup(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()

    def readUntil(self, marker: str, timeout: float = 60.0) -> str:
        """
        Read its output until C{marker} appears in it.

        @return: the output so far.
        @raise AssertionError: when it exits or the time is up first.
        """
        stream = self.process.stdout
        assert stream is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            while marker not in self.output:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise AssertionError(f"no {marker!r} within {timeout} s:\n{self.output}")
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"exited before {marker!r}:\n{self.output}")
                self.output += chunk.decode("utf-8", "replace")
        return self.output

    def stopWith(self, signalNumber: int, timeout: float = 30.0) -> int:
        """
        Send C{signalNumber} to the process alone and wait for it to end.

        @return: its exit status.
        """
        self.process.send_signal(signalNumber)
        status = self.process.wait(timeout)
        assert self.process.stdout is not None
        self.output += self.process.stdout.read().decode("utf-8", "replace")
        return status

    def groupLeftover(self) -> bool:
        """
        Whether any process it started is still alive in its group.
        """
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True


def environment() -> dict[str, str]:
    """
    The tests' environment, with this checkout first on the path so that
    twistd finds its plugin.
    """
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def twistdCommand() -> list[str]:
    """
    The twistd of the Python running the tests.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return [beside if os.path.exists(beside) else shutil.which("twistd") or "twistd"]


def operationsScript() -> str:
    """
    The operations command, C{letsencrypt-resource}, installed beside the
    Python running the tests (it may be missing: see C{pip install}).
    """
    return os.path.join(os.path.dirname(sys.executable), "letsencrypt-resource")
