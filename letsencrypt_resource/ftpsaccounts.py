"""
Who may log in to an FTPS service: accounts from an Apache htpasswd file
with bcrypt hashes (C{htpasswd -B}), checked through C{twisted.cred}, and
the folder each account is confined to.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Callable, Container, Iterator
from typing import Any
from weakref import WeakValueDictionary

import bcrypt
from twisted.cred.checkers import ANONYMOUS, ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import CooperativeTask, cooperate
from twisted.protocols.ftp import IFTPShell
from twisted.python.failure import Failure
from zope.interface import implementer

from .folder import openBelow
from .ftpsfiles import InThread
from .ftpsshell import ConfinedShell

#: A whole bcrypt hash as C{htpasswd -B} writes it: version, cost, then
#: salt and hash in bcrypt's base 64.
BCRYPT_HASH = re.compile(rb"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
#: The most password bytes bcrypt reads; longer passwords are cut there, as
#: C{htpasswd} and OpenBSD's bcrypt do.
BCRYPT_PASSWORD_BYTES = 72


class UsersFileError(ValueError):
    """
    An accounts file that cannot be used.  The message names the line, never
    its text, which holds a hash.
    """


def readUsers(path: str) -> dict[str, bytes]:
    """
    The accounts of the htpasswd file at C{path}: name to bcrypt hash.
    Empty lines and lines starting with C{#} are skipped.

    @raise UsersFileError: for a line that is not C{name:hash} with a bcrypt
        hash, or a name given twice.
    @raise OSError: when the file cannot be read.
    """
    users: dict[str, bytes] = {}
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            line = raw.strip()
            if not line or line.startswith(b"#"):
                continue
            name, colon, hashed = line.partition(b":")
            if not colon or not name or not BCRYPT_HASH.fullmatch(hashed):
                raise UsersFileError(
                    f"line {number} is not 'name:hash' with a bcrypt hash (htpasswd -B)"
                )
            try:
                text = name.decode("utf-8")
            except UnicodeDecodeError:
                raise UsersFileError(f"line {number}: the name is not UTF-8") from None
            if text in users:
                raise UsersFileError(f"line {number}: the account {text!r} appears twice")
            users[text] = hashed
    return users


def loadAccounts(usersFile: str, served: str) -> dict[str, bytes]:
    """
    The accounts of C{usersFile}, for a service serving C{served}.

    @raise UsersFileError: when the file is not valid, cannot be read, or
        lies, once links are followed, inside the served folder.
    """
    real, root = os.path.realpath(usersFile), os.path.realpath(served)
    if os.path.commonpath([real, root]) == root:
        raise UsersFileError(f"it lies in the served folder {root}: it would be published")
    try:
        return readUsers(usersFile)
    except OSError as error:
        raise UsersFileError(error.strerror or str(error)) from None


def _passwordBytes(password: str | bytes) -> bytes:
    """
    The bytes of C{password} as the client sent them (the FTP server decodes
    command lines as Latin-1), cut to what bcrypt reads.
    """
    if isinstance(password, str):
        password = password.encode("latin-1", "replace")
    return password[:BCRYPT_PASSWORD_BYTES]


@functools.lru_cache(maxsize=32)
def _unknownAccountHash(cost: int) -> bytes:
    """
    A hash of cost C{cost}, checked against the password given for an
    unknown account, so that the answer takes as long as for a known one.
    """
    return bcrypt.hashpw(b"unknown account", bcrypt.gensalt(cost))


def _highestCost(users: dict[str, bytes]) -> int:
    """
    The highest bcrypt cost of the hashes of C{users} (those of
    L{BCRYPT_HASH}), or htpasswd's default of 5 when there are none.
    """
    return max((int(hashed[4:6]) for hashed in users.values()), default=5)


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """
    Checks user names and passwords against bcrypt hashes, in a thread
    pool of their own: a bcrypt check takes milliseconds to seconds, and
    must not delay the reactor's pool (name resolution of the ACME client).
    An unknown account is checked against a hash of the file's highest
    cost.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict[str, bytes], inThread: InThread):
        """
        @param users: The accounts; changes to it apply to the next checks.
        @param inThread: Runs a check in a thread of the logins' pool
            (L{letsencrypt_resource.ftpsfiles.ServicePool.run}): once that
            pool stopped, a check fails at once with
            L{letsencrypt_resource.ftpsfiles.PoolStopped} instead of
            waiting for threads that will never run it.
        """
        self._users = users
        self._inThread = inThread

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        name = credentials.username
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        hashed = self._users.get(name)
        password = _passwordBytes(credentials.password)
        checking = self._inThread(
            bcrypt.checkpw,
            password,
            hashed if hashed is not None else _unknownAccountHash(_highestCost(self._users)),
        )

        def checked(matches: bool) -> str:
            if not matches or hashed is None:
                raise UnauthorizedLogin("wrong user name or password")
            return str(name)

        def invalid(failure: Failure) -> None:
            # A hash bcrypt cannot read (changed since it was loaded).
            failure.trap(ValueError)
            raise UnauthorizedLogin("the account's hash is not valid")

        return checking.addCallbacks(checked, invalid)


@implementer(IRealm)
class FolderRealm:
    """
    Gives each session an L{ConfinedShell}: an account's own folder below
    the served folder, named as the account; an account without one (or
    whose name is a file or a link there) may not log in.  The anonymous
    user gets the served folder, read-only, without the folders named as
    accounts.
    """

    def __init__(
        self,
        openRoot: Callable[[], int | None],
        writable: bool,
        hiddenFiles: bool = False,
        accounts: Container[str] = (),
        cooperate: Callable[[Iterator[None]], CooperativeTask] = cooperate,
        *,
        inThread: InThread,
    ):
        """
        @param openRoot: Gives a new descriptor of the served folder, or
            C{None} when it is no longer served (see
            L{letsencrypt_resource.folder.ServedFolder.openRoot}).
        @param accounts: The account names, hidden from anonymous.
        @param cooperate: Runs the listings of the shells a few entries at
            a time (see L{ConfinedShell}).
        @param inThread: Runs the file work of the shells' transfers in a
            thread (see L{ConfinedShell}).
        """
        self._openRoot = openRoot
        self._writable = writable
        self._hiddenFiles = hiddenFiles
        self._accounts = accounts
        self._cooperate = cooperate
        self._inThread = inThread
        # Each account's resumed uploads copy one step at a time, whatever
        # its sessions: one account cannot take every file thread.
        self._copyTurns: WeakValueDictionary[str, DeferredLock] = WeakValueDictionary()

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if IFTPShell not in interfaces:
            raise NotImplementedError("only IFTPShell avatars")
        root = self._openRoot()
        if root is None:
            raise UnauthorizedLogin("the served folder is gone")
        if avatarId == ANONYMOUS:
            shell = ConfinedShell(
                root,
                False,
                self._hiddenFiles,
                self._accounts,
                cooperate=self._cooperate,
                inThread=self._inThread,
            )
        else:
            folder = _accountFolder(root, str(avatarId))
            if folder is None:
                raise UnauthorizedLogin("the account has no folder")
            turns = self._copyTurns.get(str(avatarId))
            if turns is None:
                turns = self._copyTurns[str(avatarId)] = DeferredLock()
            shell = ConfinedShell(
                folder,
                self._writable,
                self._hiddenFiles,
                cooperate=self._cooperate,
                inThread=self._inThread,
                copyTurns=turns,
            )
        return IFTPShell, shell, shell.logout


def _accountFolder(root: int, name: str) -> int | None:
    """
    A descriptor of the account's own folder below C{root}, or C{None} when
    it has none (a link or a file of its name does not count): never
    C{root} itself.  C{root} is closed.
    """
    try:
        if not name or name.startswith(".") or "/" in name or "\0" in name:
            return None
        return openBelow(os.dup(root), [name], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise
        return None
    finally:
        os.close(root)
