"""
Files and their owners and modes, for the tests of the file system
helpers and the stores.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.trial.unittest import SkipTest

#: A user that owns nothing of the tests': C{nobody}.
OTHER_UID = 65534


def modeOf(path: str) -> int:
    """
    The permission bits of C{path}, not following a link.
    """
    return stat.S_IMODE(os.lstat(path).st_mode)


def readBytes(path: str) -> bytes:
    """
    The content of the file at C{path}.
    """
    with open(path, "rb") as stream:
        return stream.read()


def writeBytes(path: str, data: bytes) -> None:
    """
    Make the file C{path} hold C{data}.
    """
    with open(path, "wb") as stream:
        stream.write(data)


def requireRoot() -> None:
    """
    Skip the test unless it runs as root, which alone can give a file to
    another user.
    """
    if os.geteuid() != 0:
        raise SkipTest("giving a file to another user needs root")


def giveAway(path: str) -> None:
    """
    Make C{path} belong to L{OTHER_UID}, as if another user had made it.
    """
    requireRoot()
    os.chown(path, OTHER_UID, OTHER_UID, follow_symlinks=False)


@contextmanager
def runningAs(uid: int) -> Iterator[None]:
    """
    Run the block with C{uid} as the effective user (root only).
    """
    requireRoot()
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


class PermissiveUmaskMixin:
    """
    Run each test under umask 0, so that modes come from the code alone.

    @ivar base: An absolute path to a new folder, safe to write in, made
        before the umask changes (so that its parents are not writable by
        others).
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.mkdir(self.base)
        self.addCleanup(os.umask, os.umask(0))  # type: ignore[attr-defined]
