"""
Tests for L{letsencrypt_resource.ftpsaccounts} and
L{letsencrypt_resource.ftpsshell}: accounts, confinement and uploads, in
memory and on a temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import bcrypt
from twisted.cred.checkers import ANONYMOUS
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, Cooperator
from twisted.protocols.ftp import FileNotFoundError, IFTPShell, PermissionDeniedError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from letsencrypt_resource import ftpsshell
from letsencrypt_resource.folder import openFolder
from letsencrypt_resource.ftpsaccounts import (
    FolderRealm,
    HtpasswdChecker,
    UsersFileError,
    readUsers,
)
from letsencrypt_resource.ftpsfiles import PoolStopped, ServicePool
from letsencrypt_resource.ftpsshell import (
    UPLOAD_PREFIX,
    ActionRefused,
    ConfinedShell,
    removeStaleUploads,
)
from tests.helpers.ftpscase import CONTENT, USER, makeTree, runAtOnce

HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(4))


class _AtOnce:
    """
    A cooperative task that ran all its work when it was made.
    """

    def __init__(self, work: Iterator[None]):
        for _ in work:
            pass

    def whenDone(self) -> Deferred[None]:
        return succeed(None)


def _atOnce(work: Iterator[None]) -> Any:
    """
    Cooperate with no one: run C{work} at once.
    """
    return _AtOnce(work)


class UsersFileTests(SynchronousTestCase):
    """
    Tests for L{readUsers}.
    """

    def write(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as file:
            file.write(content)
        return path

    def test_read(self) -> None:
        """
        Names and bcrypt hashes are read; comments and blank lines skipped.
        """
        path = self.write(b"# accounts\n\nalice:" + HASH + b"\n  bob:" + HASH + b"  \n")
        self.assertEqual(readUsers(path), {"alice": HASH, "bob": HASH})

    def test_refused(self) -> None:
        """
        A line without a bcrypt hash (MD5, SHA, crypt or plain), without a
        name, or a name given twice is refused naming the line, never
        repeating its text.
        """
        for content in [
            b"alice:$apr1$salt$hash\n",
            b"alice:{SHA}abc=\n",
            b"alice:plaintext\n",
            b":" + HASH + b"\n",
            b"alice\n",
            b"alice:" + HASH + b"\nalice:" + HASH + b"\n",
            b"alice:" + HASH + b"\ndave:$2y$05$garbage\n",
            b"alice:" + HASH + b"\ndave:" + HASH[:-1] + b"\n",
            b"alice:" + HASH + b"\ndave:" + HASH[:4] + b"99" + HASH[6:] + b"\n",
        ]:
            error = self.assertRaises(UsersFileError, readUsers, self.write(content))
            self.assertRegex(str(error), "^line [12]")
            self.assertNotIn(HASH.decode()[:10], str(error))


class CheckerTests(SynchronousTestCase):
    """
    Tests for L{HtpasswdChecker}.
    """

    def check(self, user: str, password: str) -> Any:
        checker = HtpasswdChecker({"alice": HASH}, runAtOnce)
        return checker.requestAvatarId(UsernamePassword(user, password))

    def test_rightPassword(self) -> None:
        """
        The right password gives the account's name.
        """
        self.assertEqual(self.successResultOf(self.check("alice", "secret")), "alice")

    def test_refusals(self) -> None:
        """
        A wrong password, an unknown account (checked against a hash all
        the same) and an empty password are refused.
        """
        for user, password in [("alice", "Secret"), ("mallory", "secret"), ("alice", "")]:
            self.failureResultOf(self.check(user, password), UnauthorizedLogin)

    def test_unknownAccountCost(self) -> None:
        """
        The password given for an unknown account is checked against a
        hash of the highest cost of the accounts, so that it takes as long
        as for a known account.
        """
        checked: list[bytes] = []

        def recording(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
            checked.append(args[1])
            return runAtOnce(f, *args)

        costly = bcrypt.hashpw(b"secret", bcrypt.gensalt(7))
        checker = HtpasswdChecker({"alice": HASH, "bob": costly}, recording)
        self.failureResultOf(
            checker.requestAvatarId(UsernamePassword("mallory", "x")), UnauthorizedLogin
        )
        self.assertEqual(checked[0][:7], b"$2b$07$")

    def test_unreadableHash(self) -> None:
        """
        A hash bcrypt cannot read refuses the login, rather than failing
        with an internal error.
        """
        checker = HtpasswdChecker({"dave": b"$2y$05$garbage"}, runAtOnce)
        self.failureResultOf(
            checker.requestAvatarId(UsernamePassword("dave", "x")), UnauthorizedLogin
        )

    def test_longPassword(self) -> None:
        """
        A password over 72 bytes is checked on its first 72, as htpasswd
        hashed it, rather than raising.
        """
        long = "x" * 72
        checker = HtpasswdChecker(
            {"alice": bcrypt.hashpw(long.encode(), bcrypt.gensalt(4))}, runAtOnce
        )
        result = checker.requestAvatarId(UsernamePassword("alice", long + "tail"))
        self.assertEqual(self.successResultOf(result), "alice")

    def test_poolStopped(self) -> None:
        """
        Once the logins' threads stopped, a check fails at once with
        L{PoolStopped}: it is never handed to threads that will not run it
        (the session waited for an answer forever).
        """
        pool = ServicePool(Clock(), "test-logins", 1)
        checker = HtpasswdChecker({"alice": HASH}, pool.run)
        self.failureResultOf(
            checker.requestAvatarId(UsernamePassword("alice", "secret")), PoolStopped
        )


class ConfinementTests(SynchronousTestCase):
    """
    Tests for L{FolderRealm} and L{ConfinedShell} on the tree of
    L{makeTree}.
    """

    def setUp(self) -> None:
        self.served = makeTree(os.path.abspath(self.mktemp()))
        root = openFolder(self.served)
        self.addCleanup(os.close, root)
        self.realm = FolderRealm(
            lambda: os.dup(root),
            writable=True,
            accounts={"alice", "bob", "carol"},
            cooperate=_atOnce,
            inThread=runAtOnce,
        )

    def shell(self, avatarId: Any = USER) -> ConfinedShell:
        interface, shell, logout = self.realm.requestAvatar(avatarId, None, IFTPShell)
        self.addCleanup(logout)
        verifyObject(IFTPShell, shell)
        return shell  # type: ignore[no-any-return]

    def names(self, shell: ConfinedShell, path: list[str]) -> list[str]:
        return [name for name, _ in self.successResultOf(shell.list(path))]

    def test_ownFolder(self) -> None:
        """
        An account with a folder of its name is confined to it and lists
        its files only, no links; anonymous gets the served folder
        read-only.
        """
        self.assertEqual(self.names(self.shell(), []), ["own.txt"])
        anonymous = self.shell(ANONYMOUS)
        self.assertFalse(anonymous.writable)
        self.assertEqual(self.names(anonymous, []), ["hello.txt"])

    def test_noFolderNoLogin(self) -> None:
        """
        An account without a folder of its name, or whose name is a file or
        a link to a folder there, may not log in: it never gets the served
        folder, where the other accounts' folders are.
        """
        with open(os.path.join(self.served, "bob"), "wb"):
            pass
        os.symlink(os.path.join(self.served, USER), os.path.join(self.served, "carol"))
        for name in ["bob", "carol", "dave", ".hidden", ""]:
            self.assertRaises(UnauthorizedLogin, self.realm.requestAvatar, name, None, IFTPShell)

    def test_anonymousWithoutAccounts(self) -> None:
        """
        Anonymous neither lists nor reaches the folders named as accounts,
        even those made after it logged in.
        """
        anonymous = self.shell(ANONYMOUS)
        os.mkdir(os.path.join(self.served, "carol"))
        self.assertEqual(self.names(anonymous, []), ["hello.txt"])
        for path in (["alice"], ["alice", "own.txt"], ["carol"]):
            self.failureResultOf(anonymous.access(path), FileNotFoundError)
            self.failureResultOf(anonymous.list(path), FileNotFoundError)
        self.failureResultOf(anonymous.openForReading(["alice", "own.txt"]), FileNotFoundError)

    def test_linksNeverFollowed(self) -> None:
        """
        Links to files and folders, outside or inside, are neither opened,
        entered, listed nor written through.
        """
        shell = self.shell()
        for path in (["secret-link"], ["outside-link", "secret.txt"], ["inside-link"]):
            self.failureResultOf(shell.openForReading(path), FileNotFoundError)
        self.failureResultOf(shell.access(["outside-link"]), FileNotFoundError)
        self.failureResultOf(shell.list(["outside-link"]), FileNotFoundError)
        self.failureResultOf(shell.openForWriting(["outside-link", "x"]), FileNotFoundError)
        self.failureResultOf(shell.makeDirectory(["outside-link", "x"]), FileNotFoundError)
        self.assertEqual(
            os.listdir(os.path.join(os.path.dirname(self.served), "outside")), ["secret.txt"]
        )

    def test_hidden(self) -> None:
        """
        Hidden names are refused, for reading and writing.
        """
        shell = self.shell(ANONYMOUS)
        self.failureResultOf(shell.openForReading([".hidden"]), FileNotFoundError)
        shell = self.shell()
        self.failureResultOf(shell.openForWriting([".profile"]), PermissionDeniedError)

    def test_uploadStoredWhenClosed(self) -> None:
        """
        An upload is written to a hidden temporary name, and appears under
        its name only when closed.
        """
        shell = self.shell()
        upload: Any = self.successResultOf(shell.openForWriting(["new.txt"]))
        consumer = self.successResultOf(upload.receive())
        consumer.write(CONTENT)
        folder = os.path.join(self.served, USER)
        [temporary] = [n for n in os.listdir(folder) if n.startswith(UPLOAD_PREFIX)]
        self.assertNotIn("new.txt", os.listdir(folder))
        self.assertNotIn(temporary, self.names(shell, []))
        self.successResultOf(upload.close())
        with open(os.path.join(folder, "new.txt"), "rb") as file:
            self.assertEqual(file.read(), CONTENT)
        self.assertEqual([n for n in os.listdir(folder) if n.startswith(UPLOAD_PREFIX)], [])

    def test_temporaryNeverReachable(self) -> None:
        """
        Even when hidden names are served, the temporary name of an upload
        in progress is neither listed nor opened, renamed or removed.
        """
        root = openFolder(self.served)
        self.addCleanup(os.close, root)
        realm = FolderRealm(
            lambda: os.dup(root),
            writable=True,
            hiddenFiles=True,
            cooperate=_atOnce,
            inThread=runAtOnce,
        )
        _, shell, logout = realm.requestAvatar(USER, None, IFTPShell)
        self.addCleanup(logout)
        upload: Any = self.successResultOf(shell.openForWriting(["new.txt"]))
        self.addCleanup(upload.abort)
        temporary = upload.temporary
        self.assertEqual(self.names(shell, []), ["own.txt"])
        self.failureResultOf(shell.openForReading([temporary]), FileNotFoundError)
        self.failureResultOf(shell.rename([temporary], ["x"]), PermissionDeniedError)
        self.failureResultOf(shell.removeFile([temporary]), PermissionDeniedError)
        self.failureResultOf(shell.openForWriting([temporary]), PermissionDeniedError)

    def test_staleUploadsRemoved(self) -> None:
        """
        L{removeStaleUploads} removes the temporary files of uploads last
        written before the time given, in every folder of the tree; not a
        newer one, nor a name that only starts like one, nor a folder, nor
        anything behind a link.
        """
        outside = os.path.join(os.path.dirname(self.served), "outside")
        folder = os.path.join(self.served, USER)
        names = {
            "stale": os.path.join(folder, UPLOAD_PREFIX + "0123456789abcdef"),
            "rootStale": os.path.join(self.served, UPLOAD_PREFIX + "00000000000000ff"),
            "fresh": os.path.join(folder, UPLOAD_PREFIX + "fedcba9876543210"),
            "other": os.path.join(folder, UPLOAD_PREFIX + "notes"),
            "outside": os.path.join(outside, UPLOAD_PREFIX + "0123456789abcdef"),
        }
        for path in names.values():
            with open(path, "wb"):
                pass
        os.mkdir(os.path.join(folder, UPLOAD_PREFIX + "aaaaaaaaaaaaaaaa"))
        for name in ("stale", "rootStale", "other", "outside"):
            os.utime(names[name], (1000, 1000))
        os.utime(names["fresh"], (3000, 3000))
        self.assertEqual(removeStaleUploads(self.served, 2000), 2)
        self.assertEqual(
            sorted(name for name, path in names.items() if os.path.exists(path)),
            ["fresh", "other", "outside"],
        )
        self.assertTrue(os.path.isdir(os.path.join(folder, UPLOAD_PREFIX + "aaaaaaaaaaaaaaaa")))

    def test_listingSplit(self) -> None:
        """
        A listing reads and inspects one entry at each turn of the
        cooperator, and keeps the first C{MAX_LISTED} regular files and
        folders the system gives, in name order, with the requested
        attributes; links and hidden names are left out.
        """
        folder = os.path.join(self.served, USER)
        for name in ["d.txt", "c.txt", "b.txt", ".hidden", "z.txt"]:
            with open(os.path.join(folder, name), "wb") as file:
                file.write(b"12345")
            os.chmod(os.path.join(folder, name), 0o640)
        os.mkdir(os.path.join(folder, "a-folder"))
        clock = Clock()
        cooperator = Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda step: clock.callLater(1, step),
        )
        realm = FolderRealm(
            lambda: openFolder(self.served),
            True,
            cooperate=cooperator.cooperate,
            inThread=runAtOnce,
        )
        _, shell, logout = realm.requestAvatar(USER, None, IFTPShell)
        self.addCleanup(logout)
        listing = shell.list([], ("size", "directory", "permissions"))
        clock.pump([1] * 5)
        self.assertNoResult(listing)
        clock.pump([1] * 20)
        found = {
            name: (size, isFolder, mode.shorthand())
            for name, (size, isFolder, mode) in self.successResultOf(listing)
        }
        self.assertEqual(sorted(found), ["a-folder", "b.txt", "c.txt", "d.txt", "own.txt", "z.txt"])
        self.assertEqual(found["b.txt"], (5, False, "rw-r-----"))
        self.assertTrue(found["a-folder"][1])
        self.patch(ftpsshell, "MAX_LISTED", 4)
        listing = shell.list([])
        clock.pump([1] * 20)
        names = [name for name, _ in self.successResultOf(listing)]
        self.assertEqual(len(names), 4)
        self.assertEqual(names, sorted(names))

    def test_longName(self) -> None:
        """
        A name as long as the system allows can be uploaded: the temporary
        name does not grow with it.
        """
        shell = self.shell()
        name = "n" * 255
        upload: Any = self.successResultOf(shell.openForWriting([name]))
        self.successResultOf(upload.receive()).write(CONTENT)
        self.successResultOf(upload.close())
        self.assertIn(name, self.names(shell, []))

    def test_uploadAborted(self) -> None:
        """
        An aborted upload leaves no file, and the file it would have
        replaced is untouched.
        """
        shell = self.shell()
        upload: Any = self.successResultOf(shell.openForWriting(["own.txt"]))
        self.successResultOf(upload.receive()).write(b"partial")
        upload.abort()
        upload.abort()
        folder = os.path.join(self.served, USER)
        with open(os.path.join(folder, "own.txt"), "rb") as file:
            self.assertEqual(file.read(), CONTENT)
        self.assertEqual([n for n in os.listdir(folder) if n.startswith(UPLOAD_PREFIX)], [])

    def test_readOnly(self) -> None:
        """
        A read-only shell refuses every change.
        """
        shell = self.shell(ANONYMOUS)
        self.failureResultOf(shell.openForWriting(["x"]), PermissionDeniedError)
        self.failureResultOf(shell.makeDirectory(["x"]), PermissionDeniedError)
        self.failureResultOf(shell.removeFile(["hello.txt"]), PermissionDeniedError)
        self.failureResultOf(shell.rename(["hello.txt"], ["x"]), PermissionDeniedError)

    def test_removeOnlyFiles(self) -> None:
        """
        DELE removes regular files, not links (nor what they point to).
        """
        shell = self.shell()
        self.failureResultOf(shell.removeFile(["secret-link"]), FileNotFoundError)
        self.successResultOf(shell.removeFile(["own.txt"]))
        self.assertEqual(self.names(shell, []), [])

    def test_otherErrors(self) -> None:
        """
        An operation that fails for another reason than Twisted's known
        ones (moving a folder into itself, a name too long) is a 550 with
        the system's words, not an internal error.
        """
        shell = self.shell()
        self.successResultOf(shell.makeDirectory(["box"]))
        moved = self.failureResultOf(shell.rename(["box"], ["box", "inside"]), ActionRefused)
        self.assertEqual(
            moved.value.response(), "550 Requested action not taken: box: Invalid argument"
        )
        self.failureResultOf(shell.makeDirectory(["n" * 300]), ActionRefused)

    def test_folderGone(self) -> None:
        """
        Once the served folder is no longer served, logins are refused.
        """
        realm = FolderRealm(lambda: None, writable=False, inThread=runAtOnce)
        self.assertRaises(UnauthorizedLogin, realm.requestAvatar, USER, None, IFTPShell)
