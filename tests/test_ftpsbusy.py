"""
Tests for L{letsencrypt_resource.ftpsbusy}: the files uploads are
writing, and what the shells refuse while they are.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.folder import openFolder
from letsencrypt_resource.ftpsbusy import TEMPORARIES, UPLOADING, BusyFiles, FileBusy
from letsencrypt_resource.ftpsshell import ConfinedShell, removeStaleUploads
from tests.helpers.ftpscase import CONTENT, USER, makeTree, runAtOnce
from tests.helpers.transferfakes import QueuedThreads


class BusyFilesTests(SynchronousTestCase):
    """
    Tests for L{BusyFiles}.
    """

    def setUp(self) -> None:
        self.busy = BusyFiles()
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "one"))
        os.symlink("one", os.path.join(base, "same"))
        self.folders = [
            os.open(os.path.join(base, name), os.O_RDONLY | os.O_DIRECTORY)
            for name in ("one", "same", ".")
        ]
        for folder in self.folders:
            self.addCleanup(os.close, folder)

    def test_takenOnce(self) -> None:
        """
        A file is taken once, whichever descriptor of its folder names it,
        until it is released (twice is once); other names and folders stay
        free.
        """
        one, same, other = self.folders
        release = self.busy.take(one, "a.txt", ["a.txt"])
        error = self.assertRaises(FileBusy, self.busy.take, same, "a.txt", ["dir", "a.txt"])
        self.assertEqual(
            error.response(), "450 dir/a.txt: file busy, an upload of it is in progress."
        )
        self.assertRaises(FileBusy, self.busy.check, one, "a.txt", ["a.txt"])
        self.busy.check(one, "b.txt", ["b.txt"])
        self.busy.check(other, "a.txt", ["a.txt"])
        release()
        self.busy.check(same, "a.txt", ["a.txt"])
        again = self.busy.take(same, "a.txt", ["a.txt"])
        release()
        self.assertRaises(FileBusy, self.busy.check, one, "a.txt", ["a.txt"])
        again()
        self.busy.check(one, "a.txt", ["a.txt"])


class ShellBusyTests(SynchronousTestCase):
    """
    While an upload of a file runs, L{ConfinedShell} refuses other uploads,
    removals and renamings of it, for every shell of the process.
    """

    def setUp(self) -> None:
        self.served = makeTree(os.path.abspath(self.mktemp()))
        self.folder = os.path.join(self.served, USER)

    def shell(self) -> ConfinedShell:
        shell = ConfinedShell(openFolder(self.folder), True, inThread=runAtOnce)
        self.addCleanup(shell.logout)
        return shell

    def uploading(self, shell: ConfinedShell, path: list[str], start: int | None) -> Any:
        """
        An upload of C{path} after C{start} bytes, that took what it
        receives.
        """
        upload: Any = self.successResultOf(shell.openForWriting(path, start))
        self.addCleanup(upload.abort)
        self.successResultOf(upload.receive()).write(b"more")
        return upload

    def assertBusy(self, result: Deferred[Any]) -> None:
        self.failureResultOf(result, FileBusy)

    def test_refusedWhileUploading(self) -> None:
        """
        While an append to C{own.txt} runs, a second upload of it (from
        another shell, appended or not), its removal and a renaming from
        or to it are refused, and the file is untouched; other names are
        not.
        """
        first, second = self.shell(), self.shell()
        self.uploading(first, ["own.txt"], None)
        self.assertBusy(second.openForWriting(["own.txt"], None))
        self.assertBusy(second.openForWriting(["own.txt"], 0))
        self.assertBusy(second.removeFile(["own.txt"]))
        self.assertBusy(second.rename(["own.txt"], ["moved.txt"]))
        self.successResultOf(second.makeDirectory(["box"]))
        self.assertBusy(second.rename(["box"], ["own.txt"]))
        with open(os.path.join(self.folder, "own.txt"), "rb") as file:
            self.assertEqual(file.read(), CONTENT)
        other = self.uploading(second, ["other.txt"], 0)
        self.successResultOf(other.close())

    def test_freeOnceStored(self) -> None:
        """
        Once the upload was stored, the file is free again: the next
        append finds what the first appended.
        """
        shell = self.shell()
        self.successResultOf(self.uploading(shell, ["own.txt"], None).close())
        self.successResultOf(self.uploading(shell, ["own.txt"], None).close())
        with open(os.path.join(self.folder, "own.txt"), "rb") as file:
            self.assertEqual(file.read(), CONTENT + b"more" * 2)
        self.successResultOf(shell.removeFile(["own.txt"]))

    def test_freeOnceAborted(self) -> None:
        """
        Once the upload was aborted, the file is free again.
        """
        shell = self.shell()
        self.uploading(shell, ["own.txt"], 5).abort()
        self.successResultOf(shell.rename(["own.txt"], ["moved.txt"]))

    def test_freeWhenRefused(self) -> None:
        """
        An upload that could not start (an offset beyond the end, a name
        that is a folder) leaves the name free.
        """
        shell = self.shell()
        self.failureResultOf(shell.openForWriting(["own.txt"], len(CONTENT) + 1))
        self.successResultOf(shell.makeDirectory(["box"]))
        self.failureResultOf(shell.openForWriting(["box"], None))
        self.successResultOf(shell.removeFile(["own.txt"]))
        self.successResultOf(shell.removeDirectory(["box"]))

    def test_sharedByDefault(self) -> None:
        """
        Shells share the files of the process, L{UPLOADING}, unless given
        their own.
        """
        upload = self.uploading(self.shell(), ["own.txt"], None)
        folder = openFolder(self.folder)
        self.addCleanup(os.close, folder)
        self.assertRaises(FileBusy, UPLOADING.check, folder, "own.txt", ["own.txt"])
        upload.abort()
        UPLOADING.check(folder, "own.txt", ["own.txt"])

    def test_refusalCodes(self) -> None:
        """
        Where RFC 959 lists no 450 for a command, a busy name gets a
        permanent refusal: 550 for MKD and RMD, 553 for RNTO.
        """
        first, second = self.shell(), self.shell()
        self.uploading(first, ["own.txt"], None)
        for refused, code in [
            (second.makeDirectory(["own.txt"]), 550),
            (second.removeDirectory(["own.txt"]), 550),
            (second.rename(["own.txt"], ["moved.txt"]), 553),
            (second.removeFile(["own.txt"]), 450),
            (second.openForWriting(["own.txt"], 0), 450),
        ]:
            error = self.failureResultOf(refused, FileBusy).value
            self.assertEqual(
                error.response(), f"{code} own.txt: file busy, an upload of it is in progress."
            )

    def test_freeWhenAnythingFails(self) -> None:
        """
        An upload that fails to start with another error than the system's
        (a name with a NUL, which Twisted's paths never give) leaves the
        name free and its folder closed.
        """
        shell = self.shell()
        opened = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            self.failureResultOf(shell.openForWriting(["own\0.txt"], None), ValueError)
        self.assertEqual(len(os.listdir("/proc/self/fd")), opened)
        folder = openFolder(self.folder)
        self.addCleanup(os.close, folder)
        self.assertFalse(UPLOADING.holds(folder, "own\0.txt"))

    def test_busyWhileStoring(self) -> None:
        """
        An upload aborted (its session lost) while its store waits for a
        thread keeps its name busy and its folder open until the store
        ended, and is stored.
        """
        threads = QueuedThreads()
        shell = ConfinedShell(openFolder(self.folder), True, inThread=threads)
        self.addCleanup(shell.logout)
        upload: Any = self.successResultOf(shell.openForWriting(["own.txt"], 0))
        self.successResultOf(upload.receive()).write(b"new")
        closing = upload.close()
        threads.runNext()
        self.assertEqual([function.__name__ for _, function, _ in threads.waiting], ["_store"])
        upload.abort()
        self.assertBusy(shell.removeFile(["own.txt"]))
        stopped = upload.whenStopped()
        self.assertNoResult(stopped)
        threads.runNext()
        self.successResultOf(closing)
        self.successResultOf(stopped)
        with open(os.path.join(self.folder, "own.txt"), "rb") as file:
            self.assertEqual(file.read(), b"new")
        self.successResultOf(shell.removeFile(["own.txt"]))


class LiveTemporariesTests(SynchronousTestCase):
    """
    L{removeStaleUploads} leaves the temporary files of the uploads of
    this process, whichever service runs them.
    """

    def test_liveKept(self) -> None:
        """
        A sweep after an upload started (as a service starting on a folder
        another serves does) leaves its temporary file, which is stored
        afterwards; a leftover of a stopped process is removed.
        """
        served = makeTree(os.path.abspath(self.mktemp()))
        folder = os.path.join(served, USER)
        shell = ConfinedShell(openFolder(folder), True, inThread=runAtOnce)
        self.addCleanup(shell.logout)
        upload: Any = self.successResultOf(shell.openForWriting(["own.txt"], None))
        self.addCleanup(upload.abort)
        leftover = os.path.join(folder, ".upload-0123456789abcdef")
        with open(leftover, "wb"):
            pass
        self.assertEqual(removeStaleUploads(served, float("inf")), 1)
        self.assertEqual(os.listdir(folder).count(upload.temporary), 1)
        self.successResultOf(upload.receive()).write(b"more")
        self.successResultOf(upload.close())
        with open(os.path.join(folder, "own.txt"), "rb") as file:
            self.assertEqual(file.read(), CONTENT + b"more")
        self.assertEqual(TEMPORARIES._busy, set())
