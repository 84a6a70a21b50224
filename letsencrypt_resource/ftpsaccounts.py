"""
Who may log in to an FTPS service: accounts from an Apache htpasswd file
with bcrypt hashes (C{htpasswd -B}), checked through C{twisted.cred}, and
the folder each account is confined to.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

import bcrypt
from twisted.cred.checkers import ANONYMOUS, ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.protocols.ftp import IFTPShell
from zope.interface import implementer

from .folder import openBelow
from .ftpsshell import ConfinedShell
from .reactors import Reactor

#: The prefixes of the bcrypt hashes accepted.
BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
#: The most password bytes bcrypt reads; longer passwords are cut there, as
#: C{htpasswd} and OpenBSD's bcrypt do.
BCRYPT_PASSWORD_BYTES = 72
#: Checked against a password for an unknown account, so that the answer
#: takes as long as for a known one.
_UNKNOWN = bcrypt.hashpw(b"unknown account", bcrypt.gensalt(10))


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
            if not colon or not name or not hashed.startswith(BCRYPT_PREFIXES):
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


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """
    Checks user names and passwords against bcrypt hashes, in the reactor's
    thread pool: a bcrypt check takes tens of milliseconds.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict[str, bytes], reactor: Reactor):
        self._users = users
        self._reactor = reactor

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        name = credentials.username
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        hashed = self._users.get(name)
        password = _passwordBytes(credentials.password)
        checking = deferToThreadPool(
            self._reactor,
            self._reactor.getThreadPool(),
            bcrypt.checkpw,
            password,
            hashed if hashed is not None else _UNKNOWN,
        )

        def checked(matches: bool) -> str:
            if not matches or hashed is None:
                raise UnauthorizedLogin("wrong user name or password")
            return str(name)

        return checking.addCallback(checked)


@implementer(IRealm)
class FolderRealm:
    """
    Gives each session an L{ConfinedShell}: an account's own folder below
    the served folder, named as the account, when there is one, else the
    served folder itself; the anonymous user gets the served folder,
    read-only.
    """

    def __init__(
        self, openRoot: Callable[[], int | None], writable: bool, hiddenFiles: bool = False
    ):
        """
        @param openRoot: Gives a new descriptor of the served folder, or
            C{None} when it is no longer served (see
            L{letsencrypt_resource.folder.ServedFolder.openRoot}).
        """
        self._openRoot = openRoot
        self._writable = writable
        self._hiddenFiles = hiddenFiles

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if IFTPShell not in interfaces:
            raise NotImplementedError("only IFTPShell avatars")
        root = self._openRoot()
        if root is None:
            raise UnauthorizedLogin("the served folder is gone")
        if avatarId == ANONYMOUS:
            shell = ConfinedShell(root, False, self._hiddenFiles)
        else:
            shell = ConfinedShell(
                _accountFolder(root, str(avatarId)), self._writable, self._hiddenFiles
            )
        return IFTPShell, shell, shell.logout


def _accountFolder(root: int, name: str) -> int:
    """
    A descriptor of the account's own folder below C{root}, or C{root}
    itself when it has none (a link of its name does not count).  C{root}
    is taken over.
    """
    if name and not name.startswith(".") and "/" not in name and "\0" not in name:
        try:
            folder = openBelow(os.dup(root), [name], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                os.close(root)
                raise
        else:
            os.close(root)
            return folder
    return root
