"""
What one FTPS session may do with files: an C{IFTPShell} confined to one
folder.

Every path is opened from the folder's descriptor one name at a time
without following links (L{openBelow}): a symbolic link is neither listed
nor opened nor entered, wherever it points, so no name leads out of the
folder. Hidden (dot) names are refused as well, unless the service serves
them. Uploads go to a hidden temporary name beside their target and are
renamed to it only once complete (L{Upload}); temporary names are never
reachable, even when hidden names are served.  While an upload runs, its
name is busy (L{letsencrypt_resource.ftpsbusy}): another upload, removal
or renaming of it is refused.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import CooperativeTask, cooperate
from twisted.protocols.ftp import (
    REQ_ACTN_ABRTD_INSUFF_STORAGE,
    REQ_ACTN_NOT_TAKEN,
    FTPCmdError,
    IFTPShell,
    IReadFile,
    IsADirectoryError,
    IWriteFile,
    errnoToFailure,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from .folder import openBelow
from .ftpsbusy import TEMPORARIES, UPLOADING, BusyFiles, FileBusy
from .ftpsfiles import CHUNK_SIZE, InThread, ThreadedFileSender, ThreadedFileWriter, writeAll

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
#: The prefix of the temporary names of uploads in progress: hidden, so
#: never listed nor reachable.
UPLOAD_PREFIX = ".upload-"
#: The most entries a listing gives, the first by name; a bigger folder is
#: listed cut there.
MAX_LISTED = 10_000
#: The most bytes a resumed upload copies from the file it replaces in one
#: turn of a thread.
COPY_STEP = 4 * 1024 * 1024
#: The refusals of a busy name where RFC 959 lists no 450: MKD and RMD
#: (550), and RNTO (553; a busy source is refused at RNFR, with 450).
NOT_TAKEN = 550
NAME_NOT_ALLOWED = 553
#: A whole temporary name of an upload.
_TEMPORARY = re.compile(re.escape(UPLOAD_PREFIX) + "[0-9a-f]{16}")


class ActionRefused(FTPCmdError):
    """
    A file operation that failed for another reason than those Twisted
    names (a folder moved into itself, a name too long, a full disk): 550
    with the system's words.
    """

    errorCode = REQ_ACTN_NOT_TAKEN


class StorageFull(FTPCmdError):
    """
    A file that could not be written: the disk (or the owner's quota) is
    full.
    """

    errorCode = REQ_ACTN_ABRTD_INSUFF_STORAGE

    def response(self) -> str:
        """
        The reply: Twisted's words for it take no name.
        """
        return "452 Insufficient storage space: nothing was written."


#: The errors C{errnoToFailure} turns into FTP errors.
_KNOWN_ERRORS = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EEXIST, errno.EISDIR)


def refusal(error: OSError, segments: Sequence[str]) -> Deferred[Any]:
    """
    The FTP error for C{error}: a link met on the way (C{ELOOP}, or
    C{ENOTDIR} where a folder was expected) is a name that does not exist;
    a full disk is L{StorageFull}.
    """
    path = "/".join(segments)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return fail(StorageFull(f"{path}: {os.strerror(error.errno)}"))
    code = errno.ENOENT if error.errno in (errno.ELOOP, errno.ENOTDIR) else error.errno
    if code not in _KNOWN_ERRORS:
        return fail(ActionRefused(f"{path}: {os.strerror(code or errno.EIO)}"))
    return errnoToFailure(code, path)


class UploadCancelled(Exception):
    """
    A resumed upload was aborted while it copied the start of its file (its
    session ended).
    """


class RestartInvalid(FTPCmdError):
    """
    A restart offset (REST) beyond the end of the file.
    """

    errorCode = REQ_ACTN_NOT_TAKEN


@implementer(IReadFile)
class Download:
    """
    An open regular file, sent once, from an offset to its end.

    @ivar size: Its size when it was opened.
    """

    def __init__(self, fd: int, inThread: InThread):
        """
        @param fd: The open file, which this takes over.
        """
        self._fd = fd
        self._inThread = inThread
        self._offset = 0
        self.size = os.fstat(fd).st_size

    def restartAt(self, offset: int) -> None:
        """
        Send the file from C{offset} on.

        @raise RestartInvalid: when C{offset} lies beyond its end; the file
            is closed.
        """
        if offset > self.size:
            self.close()
            raise RestartInvalid(f"Restart offset {offset} beyond the end of the file")
        self._offset = offset

    def send(self, consumer: IConsumer) -> Deferred[Any]:
        fd, self._fd = self._fd, -1
        return ThreadedFileSender(fd, self._offset, self._inThread).beginFileTransfer(consumer)

    def close(self) -> None:
        """
        Close the file, if it was not sent.
        """
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


@implementer(IWriteFile)
class Upload:
    """
    An upload written to a hidden temporary name in its folder, after the
    first C{start} bytes of the file it replaces (a resumed upload): L{close}
    renames it to its name once all was written, L{abort} removes it.  The
    file it replaces is never written: a resumed upload that fails leaves
    it as it was.  The temporary file has the mode of the file it replaces,
    if any.
    """

    def __init__(
        self,
        folder: int,
        name: str,
        start: int | None,
        inThread: InThread,
        copyTurns: DeferredLock | None = None,
        release: Callable[[], None] = lambda: None,
        temporaries: BusyFiles = TEMPORARIES,
    ):
        """
        @param folder: A descriptor of the folder, which this takes over.
        @param start: How many bytes of the file C{name} (if any) the
            upload keeps before what it receives; C{None} for all of them
            (an append).
        @param copyTurns: Taken for each step of the copy of the kept bytes:
            an account's uploads copy one step at a time, so that its
            copies take at most one of the threads that others' transfers
            share.
        @param release: Called once the upload was stored or removed (its
            name is no longer busy).
        @param temporaries: Where its temporary file is known while it
            exists (L{removeStaleUploads} leaves it).

        @raise OSError: when the temporary file cannot be made, or the file
            C{name} cannot be read for a resumed upload.
        @raise RestartInvalid: when C{start} is beyond the end of the file
            C{name}.
        """
        self._folder = folder
        self.name = name
        self._inThread = inThread
        self._copyTurns = copyTurns or DeferredLock()
        self._release = release
        self._kept, self._keep, replaced = _openKept(folder, name, start)
        # Short and fixed: a target name as long as the system allows can
        # be uploaded.
        self.temporary = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
        self._forgetTemporary: Callable[[], None] = lambda: None
        try:
            # Known before it exists: a sweep never finds it unknown.
            self._forgetTemporary = temporaries.take(folder, self.temporary, [self.temporary])
            self._fd = _create(folder, self.temporary, replaced)
        except BaseException:
            self._forgetTemporary()
            self._closeKept()
            raise
        self._writer = ThreadedFileWriter(self._fd, inThread)
        self._copying = False
        self._storing = False
        self._cancelled = False
        self._stopped: list[Deferred[None]] = []

    @property
    def failure(self) -> Failure | None:
        """
        The first failed write of the upload, if any.
        """
        return self._writer.failure

    def receive(self, progress: Callable[[], object] = lambda: None) -> Deferred[IConsumer]:
        """
        Copy the kept bytes of the file it replaces (in a thread), then
        take what comes.

        @param progress: Called after each step of the copy: its session
            is not idle (C{IWriteFile.receive} takes no argument).
        """
        if self._kept < 0:
            return succeed(self._writer)
        copying = self._copyFrom(0, progress)
        copying.addBoth(self._copied)
        return copying.addCallback(lambda _: self._writer)

    def _copyFrom(self, start: int, progress: Callable[[], object]) -> Deferred[None]:
        """
        Copy the kept bytes from C{start} on, L{COPY_STEP} bytes in each
        turn of a thread: a big file's copy takes turns with the other
        transfers' reads and writes; it stops once the upload is aborted.
        """
        count = min(COPY_STEP, self._keep - start)
        self._copying = True
        copying: Deferred[None] = self._copyTurns.run(self._copyStep, start, count)
        copying.addBoth(self._stepped, start + count, progress)
        return copying

    def _copyStep(self, start: int, count: int) -> Deferred[None]:
        if self._cancelled:
            return fail(UploadCancelled("the upload was aborted"))
        result: Deferred[None] = self._inThread(_copyBytes, self._kept, self._fd, start, count)
        return result

    def _stepped(self, result: Any, copied: int, progress: Callable[[], object]) -> Any:
        self._copying = False
        if self._cancelled:
            self._remove()
            return fail(UploadCancelled("the upload was aborted"))
        if isinstance(result, Failure):
            return result
        progress()
        if copied < self._keep:
            return self._copyFrom(copied, progress)
        return None

    def _copied(self, result: Any) -> Any:
        self._closeKept()
        return result

    def _closeKept(self) -> None:
        kept, self._kept = self._kept, -1
        if kept >= 0:
            os.close(kept)

    def close(self) -> Deferred[None]:
        """
        Write what is left, then flush the file to disk, close it and
        rename it to its name (in a thread).
        """
        closing = self._writer.flush()
        closing.addCallback(self._storeInThread)
        closing.addCallbacks(self._stored, self._notStored)
        return closing

    def _storeInThread(self, _: None) -> Deferred[None]:
        """
        Store the upload in a thread, unless it was aborted: until the
        store ended, an abort waits (its folder and name stay its own).
        """
        if self._cancelled:
            return fail(UploadCancelled("the upload was aborted"))
        self._storing = True
        storing: Deferred[None] = self._inThread(self._store)
        return storing.addBoth(self._storeEnded)

    def _storeEnded(self, result: Any) -> Any:
        self._storing = False
        return result

    def _store(self) -> None:
        fd, self._fd = self._fd, -1
        try:
            # On disk before it takes the name: a crash after the rename
            # never leaves an empty or partial file under it.
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(self.temporary, self.name, src_dir_fd=self._folder, dst_dir_fd=self._folder)

    def _stored(self, _: None) -> None:
        self._closeFolder()

    def _notStored(self, failure: Failure) -> Deferred[None]:
        self.abort()
        if failure.check(OSError):
            return refusal(failure.value, [self.name])  # type: ignore[arg-type]
        return fail(failure)

    def abort(self) -> None:
        """
        Remove the incomplete upload, unless it was stored or removed
        already, once no write nor copy of it runs; while it is being
        stored, the store's end decides (stored, or removed if it failed).
        """
        self._cancelled = True
        if not self._copying and not self._storing:
            self._writer.stop().addCallback(lambda _: self._remove())

    def whenStopped(self) -> Deferred[None]:
        """
        A Deferred that fires once the upload was stored or removed: no
        work of it runs any more.
        """
        if self._folder < 0:
            return succeed(None)
        stopped: Deferred[None] = Deferred()
        self._stopped.append(stopped)
        return stopped

    def _remove(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
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
            self._forgetTemporary()
            self._release()
        stopped, self._stopped = self._stopped, []
        for waiting in stopped:
            waiting.callback(None)


def _create(folder: int, name: str, replaced: os.stat_result | None) -> int:
    """
    Create the temporary file C{name} of an upload in C{folder}, open for
    writing: with the mode (and, for root, the owner) of the file a resumed
    upload C{replaced}, if any, before anything is written to it.
    """
    if replaced is None:
        return os.open(name, _CREATE_FLAGS, 0o644, dir_fd=folder)
    fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=folder)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, replaced.st_uid, replaced.st_gid)
        os.fchmod(fd, stat.S_IMODE(replaced.st_mode))
    except OSError:
        os.close(fd)
        os.unlink(name, dir_fd=folder)
        raise
    return fd


def _openKept(folder: int, name: str, start: int | None) -> tuple[int, int, os.stat_result | None]:
    """
    The open file C{name} in C{folder}, how many of its bytes a resumed
    upload keeps (C{(-1, 0)} when it keeps none), and its status (C{None}
    when it is not there or not resumed).

    @raise OSError: when the file cannot be opened or is not a regular
        file (a link is not followed).
    @raise RestartInvalid: when C{start} is beyond its end.
    """
    if start == 0:
        return -1, 0, None
    try:
        fd = os.open(name, _READ_FLAGS | os.O_NOFOLLOW, dir_fd=folder)
    except FileNotFoundError:
        if start is None:
            return -1, 0, None
        raise RestartInvalid(f"Restart offset {start} beyond the end of the file") from None
    status = os.fstat(fd)
    keep = status.st_size if start is None else start
    if stat.S_ISREG(status.st_mode) and 0 < keep <= status.st_size:
        os.set_blocking(fd, True)
        return fd, keep, status
    os.close(fd)
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.EISDIR, "not a regular file")
    if keep > status.st_size:
        raise RestartInvalid(f"Restart offset {start} beyond the end of the file")
    return -1, 0, status


def _copyBytes(source: int, target: int, start: int, count: int) -> None:
    """
    Copy C{count} bytes of C{source} from C{start} on to C{target}, in the
    kernel where the file system can (C{copy_file_range}).

    @raise OSError: when fewer could be read (the file shrank).
    """
    end = start + count
    while start < end:
        try:
            done = os.copy_file_range(source, target, end - start, start)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            chunk = os.pread(source, min(end - start, CHUNK_SIZE), start)
            done = len(chunk)
            writeAll(target, chunk)
        if done == 0:
            raise OSError(errno.EIO, "the file shrank while it was copied")
        start += done


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
        cooperate: Callable[[Iterator[None]], CooperativeTask] = cooperate,
        *,
        inThread: InThread,
        copyTurns: DeferredLock | None = None,
        busy: BusyFiles = UPLOADING,
    ):
        """
        @param root: A descriptor of the folder, which this takes over;
            L{logout} closes it.
        @param copyTurns: Shared by the shells of one account: its resumed
            uploads copy one step at a time (see L{Upload}).
        @param busy: The files uploads are writing, shared by the shells
            of the process.
        @param inThread: Runs the reads and writes of transfers, and other
            long file work, in a thread (see L{letsencrypt_resource.ftpsfiles}).
        @param private: Names in the folder itself that are neither listed
            nor reachable (the accounts' folders, for anonymous).
        @param cooperate: Runs the inspection of a folder's entries a few
            at a time, between other work of the reactor.
        """
        self._root: int | None = root
        self.writable = writable
        self.hiddenFiles = hiddenFiles
        self._private = private
        self._cooperate = cooperate
        self._inThread = inThread
        self._copyTurns = copyTurns
        self._busy = busy

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
            return refusal(error, path)
        return succeed(None)

    def stat(self, path: Sequence[str], keys: Sequence[str] = ()) -> Deferred[list[Any]]:
        return self._inspect(path, lambda fd, status: _attributes(status, keys))

    def list(self, path: Sequence[str], keys: Sequence[str] = ()) -> Deferred[Any]:
        """
        The regular files and folders of the folder C{path}, with C{keys}
        (at most L{MAX_LISTED}: the first the system gives, in name order);
        or the file C{path} itself.  The folder is read and its entries
        inspected a few at a time.
        """
        try:
            fd = self._open(path, _READ_FLAGS)
            status = os.fstat(fd)
        except OSError as error:
            return refusal(error, path)
        if not stat.S_ISDIR(status.st_mode):
            os.close(fd)
            return succeed([(path[-1], _attributes(status, keys))])
        private = self._private if not path else ()
        found: list[tuple[str, list[Any]]] = []

        def visible(name: str) -> bool:
            return self._visible(name) and name not in private

        listing: Deferred[Any] = self._cooperate(
            _inspectEntries(fd, visible, keys, found)
        ).whenDone()

        def done(result: Any) -> Any:
            os.close(fd)
            if isinstance(result, Failure):
                return result
            return sorted(found, key=lambda entry: entry[0])

        return listing.addBoth(done)

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
            return refusal(error, path)
        try:
            return succeed(inspect(fd, os.fstat(fd)))
        except OSError as error:
            return refusal(error, path)
        finally:
            os.close(fd)

    def openForReading(self, path: Sequence[str]) -> Deferred[IReadFile]:
        try:
            fd = self._open(path, _READ_FLAGS)
        except OSError as error:
            return refusal(error, path)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            return fail(IsADirectoryError("/".join(path)))
        os.set_blocking(fd, True)
        return succeed(Download(fd, self._inThread))

    def openForWriting(self, path: Sequence[str], start: int | None = 0) -> Deferred[IWriteFile]:
        """
        An upload to C{path}, after the first C{start} bytes of the file
        there (all of them for C{None}: an append).
        """
        try:
            folder, name = self._parent(path)
        except OSError as error:
            return refusal(error, path)
        try:
            release = self._busy.take(folder, name, path)
        except FileBusy:
            os.close(folder)
            return fail()
        try:
            return succeed(Upload(folder, name, start, self._inThread, self._copyTurns, release))
        except BaseException as error:
            # Whatever failed, the name and the folder are not kept.
            release()
            os.close(folder)
            if isinstance(error, OSError):
                return refusal(error, path)
            if isinstance(error, Exception):
                return fail()
            raise

    def _change(self, path: Sequence[str], change: Any, busyCode: int = 450) -> Deferred[None]:
        """
        Apply C{change(name, dir_fd=folder)} to the last name of C{path},
        unless an upload is writing it (refused with C{busyCode}).
        """
        try:
            folder, name = self._parent(path)
        except OSError as error:
            return refusal(error, path)
        try:
            self._busy.check(folder, name, path, busyCode)
            change(name, dir_fd=folder)
        except FileBusy:
            return fail()
        except OSError as error:
            return refusal(error, path)
        finally:
            os.close(folder)
        return succeed(None)

    def makeDirectory(self, path: Sequence[str]) -> Deferred[None]:
        # RFC 959 lists no 450 for MKD and RMD.
        return self._change(
            path, lambda name, dir_fd: os.mkdir(name, 0o755, dir_fd=dir_fd), NOT_TAKEN
        )

    def removeDirectory(self, path: Sequence[str]) -> Deferred[None]:
        return self._change(path, os.rmdir, NOT_TAKEN)

    def removeFile(self, path: Sequence[str]) -> Deferred[None]:
        return self._change(path, _unlinkFile)

    def checkFree(self, path: Sequence[str]) -> Deferred[None]:
        """
        Fail as L{removeFile} would for a busy or unchangeable C{path}.
        """
        return self._change(path, lambda name, dir_fd: None)

    def rename(self, fromPath: Sequence[str], toPath: Sequence[str]) -> Deferred[None]:
        try:
            source, fromName = self._parent(fromPath)
        except OSError as error:
            return refusal(error, fromPath)
        try:
            target, toName = self._parent(toPath)
        except OSError as error:
            os.close(source)
            return refusal(error, toPath)
        try:
            # The RNTO's refusal: RFC 959 lists no 450 for it.
            self._busy.check(source, fromName, fromPath, NAME_NOT_ALLOWED)
            self._busy.check(target, toName, toPath, NAME_NOT_ALLOWED)
            os.rename(fromName, toName, src_dir_fd=source, dst_dir_fd=target)
        except FileBusy:
            return fail()
        except OSError as error:
            return refusal(error, fromPath)
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


def _inspectEntries(
    folder: int,
    visible: Callable[[str], bool],
    keys: Sequence[str],
    found: list[tuple[str, list[Any]]],
) -> Iterator[None]:
    """
    Add to C{found} the regular files and folders of C{folder} whose name
    is C{visible}, with C{keys}, one entry at each step, and stop at
    L{MAX_LISTED}.  Without keys, the type the folder gives is enough, with
    no system call.
    """
    with os.scandir(folder) as entries:
        for entry in entries:
            if len(found) >= MAX_LISTED:
                return
            try:
                if not visible(entry.name):
                    listed = False
                elif keys:
                    status = entry.stat(follow_symlinks=False)
                    listed = stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode)
                else:
                    listed = entry.is_file(follow_symlinks=False) or entry.is_dir(
                        follow_symlinks=False
                    )
            except OSError:
                listed = False
            if listed:
                found.append((entry.name, _attributes(status, keys) if keys else []))
            yield None


class _Mode:
    """
    The permissions of a file, as Twisted's FTP listing writes them.
    """

    def __init__(self, mode: int):
        self._mode = mode

    def shorthand(self) -> str:
        """
        The permissions as C{ls -l} writes them, without the type.
        """
        return stat.filemode(self._mode)[1:]


def _attributes(status: os.stat_result, keys: Sequence[str]) -> list[Any]:
    """
    The values of C{keys} for C{status}, as C{IFTPShell.stat} gives them;
    the owner and group are not told.
    """
    values = {
        "size": lambda: status.st_size,
        "directory": lambda: stat.S_ISDIR(status.st_mode),
        "permissions": lambda: _Mode(status.st_mode),
        "hardlinks": lambda: status.st_nlink,
        "modified": lambda: status.st_mtime,
        "owner": lambda: "ftp",
        "group": lambda: "ftp",
    }
    return [values[key]() for key in keys]


def removeStaleUploads(root: str, before: float, live: BusyFiles = TEMPORARIES) -> int:
    """
    Remove the temporary files of uploads below C{root} last written
    before C{before} (a time), left by a process that stopped during
    uploads, and give how many.  Those of the uploads of this process
    (C{live}: of any service serving the folder) are left.  Links are
    never followed.
    """
    removed = 0
    for _, _, files, folder in os.fwalk(root, follow_symlinks=False):
        for name in files:
            if not _TEMPORARY.fullmatch(name) or live.holds(folder, name):
                continue
            try:
                status = os.stat(name, dir_fd=folder, follow_symlinks=False)
                if stat.S_ISREG(status.st_mode) and status.st_mtime < before:
                    os.unlink(name, dir_fd=folder)
                    removed += 1
            except OSError:
                continue
    return removed
