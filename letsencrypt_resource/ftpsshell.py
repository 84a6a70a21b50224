"""
What one FTPS session may do with files: an C{IFTPShell} confined to one
folder.

Every path is opened from the folder's descriptor one name at a time
without following links (L{openBelow}): a symbolic link is neither listed
nor opened nor entered, wherever it points, so no name leads out of the
folder. Hidden (dot) names are refused as well, unless the service serves
them. Uploads go to a hidden temporary name beside their target and are
renamed to it only once complete (L{Upload}); temporary names are never
reachable, even when hidden names are served.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Container, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer
from twisted.protocols.basic import FileSender
from twisted.protocols.ftp import (
    REQ_ACTN_NOT_TAKEN,
    FileConsumer,
    FTPCmdError,
    IFTPShell,
    IReadFile,
    IsADirectoryError,
    IWriteFile,
    errnoToFailure,
)
from twisted.python.filepath import Permissions
from zope.interface import implementer

from .folder import openBelow

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
#: The prefix of the temporary names of uploads in progress: hidden, so
#: never listed nor reachable.
UPLOAD_PREFIX = ".upload-"
#: A whole temporary name of an upload.
_TEMPORARY = re.compile(re.escape(UPLOAD_PREFIX) + "[0-9a-f]{16}")


class ActionRefused(FTPCmdError):
    """
    A file operation that failed for another reason than those Twisted
    names (a folder moved into itself, a name too long, a full disk): 550
    with the system's words.
    """

    errorCode = REQ_ACTN_NOT_TAKEN


#: The errors C{errnoToFailure} turns into FTP errors.
_KNOWN_ERRORS = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EEXIST, errno.EISDIR)


def _failure(error: OSError, segments: Sequence[str]) -> Deferred[Any]:
    """
    The FTP error for C{error}: a link met on the way (C{ELOOP}, or
    C{ENOTDIR} where a folder was expected) is a name that does not exist.
    """
    path = "/".join(segments)
    code = errno.ENOENT if error.errno in (errno.ELOOP, errno.ENOTDIR) else error.errno
    if code not in _KNOWN_ERRORS:
        return fail(ActionRefused(f"{path}: {os.strerror(code or errno.EIO)}"))
    return errnoToFailure(code, path)


@implementer(IReadFile)
class _Download:
    """
    An open regular file, sent once.
    """

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "rb")

    def send(self, consumer: IConsumer) -> Deferred[Any]:
        sending = FileSender().beginFileTransfer(self._file, consumer)
        sending.addBoth(self._close)
        return sending

    def _close(self, result: Any) -> Any:
        self._file.close()
        return result


@implementer(IWriteFile)
class Upload:
    """
    An upload written to a hidden temporary name in its folder: L{close}
    renames it to its name, L{abort} removes it.
    """

    def __init__(self, folder: int, name: str):
        """
        @param folder: A descriptor of the folder, which this takes over.
        """
        self._folder = folder
        self.name = name
        # Short and fixed: a target name as long as the system allows can
        # be uploaded.
        self.temporary = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(self.temporary, _CREATE_FLAGS, 0o644, dir_fd=folder)
        self._file = os.fdopen(fd, "wb")

    def receive(self) -> Deferred[IConsumer]:
        return succeed(FileConsumer(self._file))

    def close(self) -> Deferred[None]:
        """
        Rename the complete upload to its name.
        """
        try:
            self._file.close()
            os.rename(self.temporary, self.name, src_dir_fd=self._folder, dst_dir_fd=self._folder)
        except OSError as error:
            self.abort()
            return _failure(error, [self.name])
        self._closeFolder()
        return succeed(None)

    def abort(self) -> None:
        """
        Remove the incomplete upload, unless it was stored or removed
        already.
        """
        self._file.close()
        if self._folder < 0:
            return
        try:
            os.unlink(self.temporary, dir_fd=self._folder)
        except OSError:
            pass
        self._closeFolder()

    def _closeFolder(self) -> None:
        folder, self._folder = self._folder, -1
        if folder >= 0:
            os.close(folder)


@implementer(IFTPShell)
class ConfinedShell:
    """
    The files of one session: those below one folder.

    @ivar writable: Whether uploads, folders, renames and removals are
        allowed.
    @ivar hiddenFiles: Whether hidden (dot) names are reachable.
    """

    def __init__(
        self,
        root: int,
        writable: bool,
        hiddenFiles: bool = False,
        private: Container[str] = (),
    ):
        """
        @param root: A descriptor of the folder, which this takes over;
            L{logout} closes it.
        @param private: Names in the folder itself that are neither listed
            nor reachable (the accounts' folders, for anonymous).
        """
        self._root: int | None = root
        self.writable = writable
        self.hiddenFiles = hiddenFiles
        self._private = private

    def logout(self) -> None:
        """
        Close the folder: nothing is reachable any more.
        """
        root, self._root = self._root, None
        if root is not None:
            os.close(root)

    def _visible(self, name: str) -> bool:
        if not name or name.startswith(UPLOAD_PREFIX):
            return False
        return self.hiddenFiles or not name.startswith(".")

    def _open(self, segments: Sequence[str], flags: int) -> int:
        """
        Open C{segments} below the folder.

        @raise OSError: when a name is hidden or a link, or cannot be
            opened.
        """
        if self._root is None or not all(map(self._visible, segments)):
            raise OSError(errno.ENOENT, "not found")
        if segments and segments[0] in self._private:
            raise OSError(errno.ENOENT, "not found")
        names = list(segments)
        last = names.pop() if names else None
        folder = openBelow(os.dup(self._root), names, _FOLDER_FLAGS)
        if last is None:
            return folder
        return openBelow(folder, [last], flags)

    def _parent(self, segments: Sequence[str]) -> tuple[int, str]:
        """
        The open folder that holds C{segments}, and its last name.

        @raise OSError: as L{_open}, or C{EACCES} when the shell is
            read-only or the path is the folder itself.
        """
        if not self.writable or not segments:
            raise OSError(errno.EACCES, "read-only")
        if not self._visible(segments[-1]):
            raise OSError(errno.EACCES, "hidden name")
        return self._open(segments[:-1], _FOLDER_FLAGS), segments[-1]

    def access(self, path: Sequence[str]) -> Deferred[None]:
        try:
            os.close(self._open(path, _FOLDER_FLAGS))
        except OSError as error:
            return _failure(error, path)
        return succeed(None)

    def stat(self, path: Sequence[str], keys: Sequence[str] = ()) -> Deferred[list[Any]]:
        return self._inspect(path, lambda fd, status: _attributes(status, keys))

    def list(self, path: Sequence[str], keys: Sequence[str] = ()) -> Deferred[Any]:
        def entries(fd: int, status: os.stat_result) -> list[tuple[str, list[Any]]]:
            if not stat.S_ISDIR(status.st_mode):
                return [(path[-1], _attributes(status, keys))]
            found = []
            private = self._private if not path else ()
            for name in sorted(os.listdir(fd)):
                if not self._visible(name) or name in private:
                    continue
                try:
                    entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(entry.st_mode) or stat.S_ISDIR(entry.st_mode):
                    found.append((name, _attributes(entry, keys)))
            return found

        return self._inspect(path, entries)

    def _inspect(
        self, path: Sequence[str], inspect: Callable[[int, os.stat_result], Any]
    ) -> Deferred[Any]:
        """
        Open C{path} and give what C{inspect} makes of its descriptor and
        status.
        """
        try:
            fd = self._open(path, _READ_FLAGS)
        except OSError as error:
            return _failure(error, path)
        try:
            return succeed(inspect(fd, os.fstat(fd)))
        except OSError as error:
            return _failure(error, path)
        finally:
            os.close(fd)

    def openForReading(self, path: Sequence[str]) -> Deferred[IReadFile]:
        try:
            fd = self._open(path, _READ_FLAGS)
        except OSError as error:
            return _failure(error, path)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            return fail(IsADirectoryError("/".join(path)))
        os.set_blocking(fd, True)
        return succeed(_Download(fd))

    def openForWriting(self, path: Sequence[str]) -> Deferred[IWriteFile]:
        try:
            folder, name = self._parent(path)
        except OSError as error:
            return _failure(error, path)
        try:
            return succeed(Upload(folder, name))
        except OSError as error:
            os.close(folder)
            return _failure(error, path)

    def _change(self, path: Sequence[str], change: Any) -> Deferred[None]:
        """
        Apply C{change(name, dir_fd=folder)} to the last name of C{path}.
        """
        try:
            folder, name = self._parent(path)
        except OSError as error:
            return _failure(error, path)
        try:
            change(name, dir_fd=folder)
        except OSError as error:
            return _failure(error, path)
        finally:
            os.close(folder)
        return succeed(None)

    def makeDirectory(self, path: Sequence[str]) -> Deferred[None]:
        return self._change(path, lambda name, dir_fd: os.mkdir(name, 0o755, dir_fd=dir_fd))

    def removeDirectory(self, path: Sequence[str]) -> Deferred[None]:
        return self._change(path, os.rmdir)

    def removeFile(self, path: Sequence[str]) -> Deferred[None]:
        return self._change(path, _unlinkFile)

    def rename(self, fromPath: Sequence[str], toPath: Sequence[str]) -> Deferred[None]:
        try:
            source, fromName = self._parent(fromPath)
        except OSError as error:
            return _failure(error, fromPath)
        try:
            target, toName = self._parent(toPath)
        except OSError as error:
            os.close(source)
            return _failure(error, toPath)
        try:
            os.rename(fromName, toName, src_dir_fd=source, dst_dir_fd=target)
        except OSError as error:
            return _failure(error, fromPath)
        finally:
            os.close(source)
            os.close(target)
        return succeed(None)


def _unlinkFile(name: str, dir_fd: int) -> None:
    """
    Remove the regular file C{name}; anything else is not found.
    """
    if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        raise OSError(errno.ENOENT, "not a regular file")
    os.unlink(name, dir_fd=dir_fd)


def _attributes(status: os.stat_result, keys: Sequence[str]) -> list[Any]:
    """
    The values of C{keys} for C{status}, as C{IFTPShell.stat} gives them;
    the owner and group are not told.
    """
    values = {
        "size": status.st_size,
        "directory": stat.S_ISDIR(status.st_mode),
        "permissions": Permissions(stat.S_IMODE(status.st_mode)),
        "hardlinks": status.st_nlink,
        "modified": status.st_mtime,
        "owner": "ftp",
        "group": "ftp",
    }
    return [values[key] for key in keys]


def removeStaleUploads(root: str, before: float) -> int:
    """
    Remove the temporary files of uploads below C{root} last written
    before C{before} (a time), left by a process that stopped during
    uploads, and give how many.  Links are never followed.
    """
    removed = 0
    for _, _, files, folder in os.fwalk(root, follow_symlinks=False):
        for name in files:
            if not _TEMPORARY.fullmatch(name):
                continue
            try:
                status = os.stat(name, dir_fd=folder, follow_symlinks=False)
                if stat.S_ISREG(status.st_mode) and status.st_mtime < before:
                    os.unlink(name, dir_fd=folder)
                    removed += 1
            except OSError:
                continue
    return removed
