"""
A slow disk for the FTPS transfer tests: a stand-in for the C{os} module
of L{letsencrypt_resource.ftpsfiles} whose reads wait until the test lets
them go.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import ftpsfiles

#: How long, in seconds, a read waits for the test at the most.
WAIT = 30


class SlowDisk:
    """
    Everything of C{os}, but C{pread}: each read sets C{reading}, then
    waits for C{release} (at most L{WAIT} seconds) before it reads.

    @ivar reading: Set once a read started.
    @ivar release: Lets the reads go.
    """

    def __init__(self, failUnreleased: bool) -> None:
        """
        @param failUnreleased: Whether a read that was not let go in time
            fails (C{EIO}, a disk too slow) rather than reading all the
            same.
        """
        self.reading = threading.Event()
        self.release = threading.Event()
        self._failUnreleased = failUnreleased

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        self.reading.set()
        if not self.release.wait(WAIT) and self._failUnreleased:
            raise OSError(errno.EIO, "the disk is too slow")
        return os.pread(fd, count, offset)


def useSlowDisk(case: SynchronousTestCase, failUnreleased: bool) -> SlowDisk:
    """
    Give the transfers of the test C{case} a L{SlowDisk}, whose reads are
    let go at the end of the test at the latest.
    """
    disk = SlowDisk(failUnreleased)
    case.addCleanup(disk.release.set)
    case.patch(ftpsfiles, "os", disk)
    return disk
