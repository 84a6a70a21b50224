"""
Tests for L{letsencrypt_resource.safefs}: each tries a planted link, a
folder of another user, a folder others can write in or an existing file
where the product writes.
"""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import safefs
from letsencrypt_resource.safefs import (
    HeldFolder,
    UnusablePath,
    checkFolder,
    openFolder,
    replaceInFolder,
    temporaryName,
)
from tests.helpers.files import (
    OTHER_UID,
    PermissiveUmaskMixin,
    giveAway,
    modeOf,
    readBytes,
    runningAs,
    writeBytes,
)


def write(folder: str, files: list[tuple[str, bytes, int]]) -> None:
    """
    Replace C{files} in the existing C{folder} with L{replaceInFolder}.
    """
    with openFolder(folder, create=False, privateBase=False) as fd:
        replaceInFolder(fd, files)


class ReplaceInFolderTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Tests for L{replaceInFolder}.
    """

    NAMES = ("cert.pem", "chain.pem", "privkey.pem")

    def setUp(self) -> None:
        super().setUp()
        self.folder = self.base
        self.path = os.path.join(self.folder, "file")

    def contents(self) -> dict[str, bytes]:
        """
        What each file of the folder holds, by name.
        """
        return {
            name: readBytes(os.path.join(self.folder, name)) for name in os.listdir(self.folder)
        }

    def test_replaces(self) -> None:
        """
        The new content replaces the old, and no temporary file is left.
        """
        write(self.folder, [("file", b"old", 0o600)])
        write(self.folder, [("file", b"new content", 0o600)])
        self.assertEqual(self.contents(), {"file": b"new content"})

    def test_modes(self) -> None:
        """
        The file gets its mode whatever the umask and the mode of the file
        it replaces.
        """
        write(self.folder, [("file", b"secret", 0o600)])
        self.assertEqual(modeOf(self.path), 0o600)
        write(self.folder, [("file", b"public", 0o644)])
        self.assertEqual(modeOf(self.path), 0o644)
        os.umask(0o077)
        write(self.folder, [("file", b"public", 0o644)])
        self.assertEqual(modeOf(self.path), 0o644)

    def test_failureKeepsOld(self) -> None:
        """
        When a write fails the old file is intact and no temporary file is
        left.
        """
        write(self.folder, [("file", b"old", 0o600)])

        def fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        self.patch(os, "fsync", fsync)
        self.assertRaises(OSError, write, self.folder, [("file", b"new", 0o600)])
        self.assertEqual(self.contents(), {"file": b"old"})

    def test_allWrittenBeforeAnyRenamed(self) -> None:
        """
        When the first file is renamed into place, every new file is already
        written out in full; afterwards only the new files are there.
        """
        write(self.folder, [(name, b"old", 0o600) for name in self.NAMES])
        seen: list[dict[str, bytes]] = []
        rename = os.replace

        def replace(source: str, destination: str, **kwargs: int) -> None:
            seen.append(self.contents())
            rename(source, destination, **kwargs)

        self.patch(os, "replace", replace)
        new = {name: b"new " + name.encode() for name in self.NAMES}
        write(self.folder, [(name, data, 0o600) for name, data in new.items()])
        temporary = {temporaryName(name): data for name, data in new.items()}
        self.assertEqual(seen[0], {**dict.fromkeys(self.NAMES, b"old"), **temporary})
        self.assertEqual(self.contents(), new)

    def test_failedWriteReplacesNothing(self) -> None:
        """
        When one file cannot be written, none is replaced and no temporary
        file is left.
        """
        write(self.folder, [(name, b"old", 0o600) for name in self.NAMES])
        files = [(name, b"new", 0o600) for name in self.NAMES]
        files.insert(2, ("x" * 256, b"new", 0o600))
        self.assertRaises(OSError, write, self.folder, files)
        self.assertEqual(self.contents(), dict.fromkeys(self.NAMES, b"old"))

    def test_plantedTemporaryLink(self) -> None:
        """
        A link planted at the temporary file's name, to a file elsewhere, is
        removed, not written through: the file it points to is unchanged.
        """
        victim = os.path.join(self.base + "-victim")
        writeBytes(victim, b"precious")
        os.symlink(victim, os.path.join(self.folder, temporaryName("file")))
        write(self.folder, [("file", b"new", 0o600)])
        self.assertEqual((readBytes(victim), self.contents()), (b"precious", {"file": b"new"}))

    def test_linkPlantedAfterCleanUp(self) -> None:
        """
        A link planted at the temporary file's name just after the leftover
        was removed is not written through either: the write fails.
        """
        victim = os.path.join(self.base + "-victim")
        writeBytes(victim, b"precious")
        unlink = os.unlink

        def unlinkThenPlant(name: str, **kwargs: int) -> None:
            try:
                unlink(name, **kwargs)
            finally:
                if name == temporaryName("file"):
                    os.symlink(victim, os.path.join(self.folder, name))

        self.patch(os, "unlink", unlinkThenPlant)
        self.assertRaises(FileExistsError, write, self.folder, [("file", b"new", 0o600)])
        self.assertEqual(readBytes(victim), b"precious")

    def test_plantedLinkAtName(self) -> None:
        """
        A link at the file's own name is replaced by the file, not followed.
        """
        victim = os.path.join(self.base + "-victim")
        writeBytes(victim, b"precious")
        os.symlink(victim, self.path)
        write(self.folder, [("file", b"new", 0o600)])
        self.assertEqual(readBytes(victim), b"precious")
        self.assertFalse(os.path.islink(self.path))

    def test_namesNotPaths(self) -> None:
        """
        A name that is a path, or C{.} or C{..}, is refused.
        """
        for name in ("../escape", "a/b", ".", "..", ""):
            self.assertRaises(ValueError, write, self.folder, [(name, b"x", 0o600)])


class OpenFolderTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Tests for L{openFolder} and L{checkFolder}.
    """

    def open(self, base: str, *parts: str, privateBase: bool = True) -> None:
        """
        Open C{base/parts...} with L{openFolder}, then close it.
        """
        with openFolder(base, parts, privateBase=privateBase):
            pass

    def refused(self, path: str, *parts: str, privateBase: bool = True) -> UnusablePath:
        """
        Assert that L{openFolder} refuses C{path/parts...}.
        """
        return self.assertRaises(UnusablePath, self.open, path, *parts, privateBase=privateBase)

    def test_createsPrivate(self) -> None:
        """
        Missing folders, the base's parents included, are created 0700
        whatever the umask.
        """
        base = os.path.join(self.base, "var", "state")
        self.open(base, "certificates")
        for path in (
            os.path.join(self.base, "var"),
            base,
            os.path.join(base, "certificates"),
        ):
            self.assertEqual(modeOf(path), 0o700, path)

    def test_privateMadePrivate(self) -> None:
        """
        An existing private folder readable by others is made 0700; an
        existing base that is not private keeps its mode.
        """
        private, shared = os.path.join(self.base, "a"), os.path.join(self.base, "b")
        os.mkdir(private, 0o755)
        os.mkdir(shared, 0o755)
        self.open(private)
        self.open(shared, privateBase=False)
        self.assertEqual((modeOf(private), modeOf(shared)), (0o700, 0o755))

    def test_linkRefused(self) -> None:
        """
        A folder below the base that is a link to a folder elsewhere is
        refused, and the folder it points to is left as it was.
        """
        elsewhere = os.path.join(self.base, "elsewhere")
        os.mkdir(elsewhere, 0o755)
        state = os.path.join(self.base, "state")
        os.mkdir(state, 0o700)
        os.symlink(elsewhere, os.path.join(state, "certificates"))
        error = self.refused(state, "certificates")
        self.assertIn("symbolic link", str(error))
        self.assertEqual(modeOf(elsewhere), 0o755)

    def test_baseLinkRefused(self) -> None:
        """
        A base that is a link is refused, shared or private.
        """
        target = os.path.join(self.base, "target")
        os.mkdir(target, 0o700)
        link = os.path.join(self.base, "link")
        os.symlink(target, link)
        self.refused(link)
        self.refused(link, privateBase=False)

    def test_ancestorLinksResolved(self) -> None:
        """
        A link among the base's ancestors, to a safe folder, is followed.
        """
        target = os.path.join(self.base, "target")
        os.mkdir(target, 0o755)
        link = os.path.join(self.base, "link")
        os.symlink(target, link)
        self.open(os.path.join(link, "state"), "renewal")
        self.assertTrue(os.path.isdir(os.path.join(target, "state", "renewal")))

    def test_fileRefused(self) -> None:
        """
        A base that is an existing file is refused and left untouched.
        """
        path = os.path.join(self.base, "file")
        writeBytes(path, b"data")
        os.chmod(path, 0o644)
        error = self.refused(path)
        self.assertIn("is not a folder", str(error))
        self.assertEqual((modeOf(path), readBytes(path)), (0o644, b"data"))

    def test_writableByOthersRefused(self) -> None:
        """
        A private folder writable by group or others is refused, not made
        private: someone else may have put things in it.
        """
        for mode in (0o770, 0o707, 0o1777):
            path = os.path.join(self.base, f"state-{mode:o}")
            os.mkdir(path)
            os.chmod(path, mode)
            self.refused(path)
            self.assertEqual(modeOf(path), mode)

    def test_writableAncestorRefused(self) -> None:
        """
        A folder written in whose ancestor (or non-private base) others can
        write in is refused; an ancestor may be sticky as C{/tmp} is.
        """
        shared = os.path.join(self.base, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        self.refused(os.path.join(shared, "state"))
        self.refused(shared, "export", privateBase=False)
        os.chmod(shared, 0o1777)
        self.open(os.path.join(shared, "state"))
        self.open(os.path.join(shared, "store"), "export", privateBase=False)

    def test_stickyBaseRefused(self) -> None:
        """
        A configured folder of this user that is sticky and writable by
        others (a C{store_directory} made 1777) is refused, private or not:
        in it another user could make first the folder of a certificate.
        """
        sticky = os.path.join(self.base, "sticky")
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        error = self.refused(sticky, "export", privateBase=False)
        self.assertIn("writable by group or others (mode 1777)", str(error))
        self.refused(sticky)
        self.assertRaises(UnusablePath, checkFolder, sticky, privateBase=False)
        self.assertEqual((modeOf(sticky), os.listdir(sticky)), (0o1777, []))

    def test_foreignFolderRefused(self) -> None:
        """
        A folder of another user is refused, never adopted: it keeps its
        owner and mode.
        """
        path = os.path.join(self.base, "state")
        os.mkdir(path, 0o755)
        giveAway(path)
        error = self.refused(path)
        self.assertIn(f"owned by another user (uid {OTHER_UID})", str(error))
        self.refused(path, privateBase=False)
        self.refused(self.base, "state")
        status = os.stat(path)
        self.assertEqual((status.st_uid, stat.S_IMODE(status.st_mode)), (OTHER_UID, 0o755))

    def test_foreignAncestorRefused(self) -> None:
        """
        An ancestor of another user (who could swap what is below it) is
        refused; one of root is not.
        """
        parent = os.path.join(self.base, "parent")
        os.mkdir(parent, 0o755)
        giveAway(parent)
        self.refused(os.path.join(parent, "state"))
        os.chown(parent, 0, 0)
        self.open(os.path.join(parent, "state"))

    def test_checkChangesNothing(self) -> None:
        """
        L{checkFolder} creates and changes nothing, and accepts a missing
        folder that can be created.
        """
        existing = os.path.join(self.base, "existing")
        os.mkdir(existing, 0o755)
        checkFolder(existing, ["sub"], privateBase=True)
        checkFolder(os.path.join(self.base, "missing", "state"), privateBase=True)
        self.assertEqual(
            (sorted(os.listdir(self.base)), modeOf(existing), os.listdir(existing)),
            (["existing"], 0o755, []),
        )

    def test_checkNotWritable(self) -> None:
        """
        L{checkFolder} refuses, for a user that cannot write there, an
        existing folder, and a missing one that it could not create.
        """
        os.chmod(os.path.dirname(self.base), 0o755)
        os.chmod(self.base, 0o755)
        mine = os.path.join(self.base, "mine")
        os.mkdir(mine, 0o500)
        giveAway(mine)
        with runningAs(OTHER_UID):
            error = self.assertRaises(UnusablePath, checkFolder, mine, privateBase=False)
            self.assertIn("is not writable", str(error))
            self.assertRaises(
                UnusablePath, checkFolder, os.path.join(mine, "state"), privateBase=True
            )


class HeldFolderTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Tests for L{HeldFolder}: opened and checked from the root once, then
    each use starts from the held folder, checked again, while its path
    still names it.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = os.path.join(self.base, "state")
        self.held = HeldFolder(self.path)
        self.addCleanup(self.held.close)

    def put(self, name: str, data: bytes) -> None:
        """
        Write C{data} to C{name} in the folder C{held} opens now.
        """
        with self.held.open() as fd:
            replaceInFolder(fd, [(name, data, 0o600)])

    def test_openedOnce(self) -> None:
        """
        The folder is opened from the root at the first use only; the
        folders below it are opened, and made 0700, at each.
        """
        opened: list[str] = []
        real = safefs.openFolder

        def counting(base: str, *args: object, **kwargs: object) -> object:
            opened.append(base)
            return real(base, *args, **kwargs)  # type: ignore[arg-type]

        self.patch(safefs, "openFolder", counting)
        for _ in range(3):
            with self.held.open(["certificates"]):
                pass
        self.assertEqual(opened, [self.path])
        self.assertEqual(modeOf(os.path.join(self.path, "certificates")), 0o700)

    def test_missing(self) -> None:
        """
        Without C{create}, a missing folder raises C{FileNotFoundError};
        it is used once made.
        """
        with self.assertRaises(FileNotFoundError):
            with self.held.open(create=False):
                pass
        os.mkdir(self.path, 0o700)
        with self.held.open(create=False):
            pass

    def test_replacedByLink(self) -> None:
        """
        A held folder moved away and replaced by a link is not used: the
        link is refused, the moved folder untouched.
        """
        self.put("a", b"old")
        moved = os.path.join(self.base, "moved")
        os.rename(self.path, moved)
        elsewhere = os.path.join(self.base, "elsewhere")
        os.mkdir(elsewhere, 0o700)
        os.symlink(elsewhere, self.path)
        error = self.assertRaises(UnusablePath, self.put, "a", b"new")
        self.assertIn("symbolic link", str(error))
        self.assertEqual((readBytes(os.path.join(moved, "a")), os.listdir(elsewhere)), (b"old", []))

    def test_replacedByFolder(self) -> None:
        """
        A held folder moved away and replaced by another folder: the new
        one is opened and checked (made 0700), and written in; the moved
        one is left alone.
        """
        self.put("a", b"old")
        moved = os.path.join(self.base, "moved")
        os.rename(self.path, moved)
        os.mkdir(self.path, 0o711)
        self.put("a", b"new")
        self.assertEqual(readBytes(os.path.join(moved, "a")), b"old")
        self.assertEqual(readBytes(os.path.join(self.path, "a")), b"new")
        self.assertEqual(modeOf(self.path), 0o700)

    def test_checkedAtEachUse(self) -> None:
        """
        The held folder, made writable by others after it was opened, is
        refused at the next use, as L{openFolder} would refuse it.
        """
        self.put("a", b"old")
        os.chmod(self.path, 0o777)
        error = self.assertRaises(UnusablePath, self.put, "a", b"new")
        self.assertIn("writable by group or others", str(error))

    def test_linkBelowRefused(self) -> None:
        """
        A link planted as a folder below the held folder is not followed.
        """
        self.put("a", b"old")
        elsewhere = os.path.join(self.base, "elsewhere")
        os.mkdir(elsewhere, 0o700)
        os.symlink(elsewhere, os.path.join(self.path, "certificates"))
        with self.assertRaises(UnusablePath):
            with self.held.open(["certificates"]):
                pass

    def test_namesNotPaths(self) -> None:
        """
        A part that is not a file name is refused.
        """
        for part in ("..", "a/b", ""):
            with self.assertRaises(ValueError):
                with self.held.open([part]):
                    pass

    def test_closeLetsGo(self) -> None:
        """
        Once closed, the held folder is let go; a later use opens the path
        again.
        """
        self.put("a", b"old")
        before = len(os.listdir("/proc/self/fd"))
        self.held.close()
        self.assertEqual(len(os.listdir("/proc/self/fd")), before - 1)
        self.put("a", b"new")
        self.assertEqual(readBytes(os.path.join(self.path, "a")), b"new")
