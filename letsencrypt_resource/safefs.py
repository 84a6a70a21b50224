"""
Writes that follow no link and land in no folder that another user controls.

The rule is OpenSSH's C{StrictModes}: every folder from the root of the
file system down to the one written in (the links among its ancestors
resolved first) is owned by root or by this process's user, and writable by
no one else; a shared ancestor may be sticky instead, as C{/tmp} is, but the
configured folder itself never (in a sticky folder others can write in,
another user could make first a name the product needs).  The folders the
product keeps for itself (the state directory and those below it, each
exported certificate's folder) are owned by this user and made 0700; they,
and the files written in them, are reached without following any link.

Folders are walked from the root with C{dir_fd} and C{O_NOFOLLOW}, so that a
link planted after a check is never followed either.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnusablePath(OSError):
    """
    A folder the product would write in cannot be used: it is not safe to
    write through, or not writable.

    @ivar filename: The path concerned.
    @ivar strerror: Why it is not safe.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(reason)
        self.filename = path
        self.strerror = reason

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _describe(parent: int, name: str) -> str:
    """
    What the entry C{name} of the folder C{parent} is, when it cannot be
    opened as a folder.
    """
    mode = os.lstat(name, dir_fd=parent).st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link, which is never followed"
    return "is not a folder"


#: How a folder on the way to a write is checked: a shared ancestor may be
#: root's, the configured folder must be this user's, a private folder must
#: be this user's and is made 0700.
_SHARED, _OWN, _PRIVATE = "shared", "own", "private"


def _checkFolder(fd: int, path: str, kind: str, fix: bool) -> None:
    """
    Check the open folder C{fd}: owned by this user (or, when C{kind} is
    L{_SHARED}, root) and writable by no one else, unless it is a sticky
    L{_SHARED} ancestor; with C{fix}, a private folder is then made 0700.

    @raise UnusablePath: when it is not so.
    """
    status = os.fstat(fd)
    if status.st_uid != os.geteuid() and (kind != _SHARED or status.st_uid != 0):
        raise UnusablePath(path, f"is owned by another user (uid {status.st_uid})")
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o022 and (kind != _SHARED or not mode & stat.S_ISVTX):
        raise UnusablePath(path, f"is writable by group or others (mode {mode:04o})")
    if fix and kind == _PRIVATE and mode != 0o700:
        os.fchmod(fd, 0o700)


def _openChild(parent: int, name: str, path: str, create: bool) -> tuple[int, bool]:
    """
    Open the folder C{name} of C{parent}, creating it 0700 if it is missing
    and C{create}.

    @return: Its descriptor, and whether it was created.
    @raise FileNotFoundError: when it is missing and not C{create}.
    @raise UnusablePath: when it is missing and could not be created.
    @raise UnusablePath: when it is a link or not a folder.
    """
    created = False
    while True:
        try:
            try:
                return os.open(name, _FOLDER_FLAGS, dir_fd=parent), created
            except FileNotFoundError:
                if not create:
                    _checkWritable(parent, os.path.dirname(path))
                    raise
            except NotADirectoryError:
                raise UnusablePath(path, _describe(parent, name)) from None
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
                created = True
            except FileExistsError:
                continue
        except UnusablePath:
            raise
        except OSError as error:
            # With the whole path, not the name alone.
            raise OSError(error.errno, error.strerror, path) from None


@contextmanager
def openFolder(
    base: str, parts: Sequence[str] = (), *, create: bool = True, privateBase: bool = True
) -> Iterator[int]:
    """
    Open the folder C{base/parts...} for writing in it, safely.

    The ancestors of C{base}, links resolved, must be owned by root or by
    this user and writable by no one else (unless sticky).  C{base} itself
    must not be a link, and must be owned by this user and writable by no
    one else, sticky or not; with C{privateBase} it is held to the rule of
    C{parts}, which are never links, owned by this user, writable by no one
    else, and made 0700.  Missing folders are created 0700.

    @param create: When false, nothing is created or changed: a missing
        folder raises C{FileNotFoundError} after everything above it was
        checked, or L{UnusablePath} when it could not be created.

    @return: A context manager giving the folder's descriptor.
    @raise UnusablePath: when a folder on the way breaks the rule.
    @raise OSError: when a folder cannot be opened or created.
    """
    for part in parts:
        _checkName(part)
    base = os.path.abspath(base)
    ancestors = [n for n in os.path.realpath(os.path.dirname(base)).split("/") if n]
    chain = [(name, _SHARED) for name in ancestors]
    chain.append((os.path.basename(base), _PRIVATE if privateBase else _OWN))
    chain.extend((part, _PRIVATE) for part in parts)
    fd = os.open("/", _FOLDER_FLAGS)
    try:
        _checkFolder(fd, "/", _SHARED, create)
    except BaseException:
        os.close(fd)
        raise
    fd = _descend(fd, "/", chain, create)
    try:
        yield fd
    finally:
        os.close(fd)


def _descend(fd: int, path: str, chain: Sequence[tuple[str, str]], create: bool) -> int:
    """
    Open, from the open folder C{fd} (at C{path}), each folder of C{chain}
    in turn, each C{(name, kind)} checked as L{_checkFolder} does.

    @return: The last folder's descriptor; C{fd} and those on the way are
        closed, also when this raises.
    """
    try:
        for name, kind in chain:
            path = os.path.join(path, name)
            child, created = _openChild(fd, name, path, create)
            os.close(fd)
            fd = child
            _checkFolder(fd, path, _PRIVATE if created else kind, create)
    except BaseException:
        os.close(fd)
        raise
    return fd


class HeldFolder:
    """
    A private folder (the state directory) opened and checked as
    L{openFolder} does once, then held open: the folders and files below it
    are reached from that descriptor, one name at a time, following no
    link, each folder checked on the way.  Before each use, the held folder
    is checked again (this user's, writable by no one else, made 0700 by a
    use that may create) and its path must still name it: when the path
    names another folder since (moved, removed, replaced by a link or
    another folder), the held one is let go and the path opened and checked
    again from the root, ancestors included, as L{openFolder} would; a link
    there is refused.  Nothing below it is ever reached through a folder
    the path no longer names.  The ancestors are checked when it is opened,
    not at each use.

    Thread-safe: each use works on a duplicate of the held descriptor.

    @ivar path: The folder, as given.
    """

    def __init__(self, path: str):
        # Absolute, so that a later change of working folder changes nothing.
        self.path = os.path.abspath(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _current(self, create: bool) -> bool:
        """
        Whether the held folder is still at its path, checking it again.
        """
        assert self._fd is not None
        try:
            named = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(self._fd)
        if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            return False
        _checkFolder(self._fd, self.path, _PRIVATE, create)
        return True

    def _root(self, create: bool) -> int:
        """
        A duplicate of the held folder's descriptor, opened first if need
        be; the caller closes it.
        """
        with self._lock:
            if self._fd is not None and not self._current(create):
                os.close(self._fd)
                self._fd = None
            if self._fd is None:
                with openFolder(self.path, create=create) as fd:
                    self._fd = os.dup(fd)
            return os.dup(self._fd)

    @contextmanager
    def open(self, parts: Sequence[str] = (), *, create: bool = True) -> Iterator[int]:
        """
        Open the folder C{path/parts...}, as L{openFolder} does.

        @param create: As for L{openFolder}.
        @return: A context manager giving the folder's descriptor.
        """
        for part in parts:
            _checkName(part)
        with _opened(self._root(create), os.path.abspath(self.path), parts, create) as fd:
            yield fd

    def close(self) -> None:
        """
        Let the held folder go; a later use opens it again.
        """
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@contextmanager
def openBelow(root: int, path: str, parts: Sequence[str]) -> Iterator[int]:
    """
    Open the folder C{path/parts...} from the open folder C{root} (the one
    at C{path}, named in errors only), creating nothing: each of C{parts}
    is reached without following a link and checked as L{HeldFolder.open}
    checks it.  C{root} is left open.

    @return: A context manager giving the folder's descriptor.
    @raise FileNotFoundError: when a folder is missing.
    @raise UnusablePath: when a folder on the way breaks the rule, or a
        part is not a file name.
    """
    for part in parts:
        try:
            _checkName(part)
        except ValueError as error:
            raise UnusablePath(os.path.join(path, *parts), str(error)) from None
    with _opened(os.dup(root), path, parts, False) as fd:
        yield fd


@contextmanager
def _opened(root: int, path: str, parts: Sequence[str], create: bool) -> Iterator[int]:
    """
    The folder C{path/parts...}, reached from C{root} (the folder at
    C{path}, closed on the way) as L{_descend} does, closed once done.
    """
    fd = _descend(root, path, [(p, _PRIVATE) for p in parts], create)
    try:
        yield fd
    finally:
        os.close(fd)


def _checkName(name: str) -> None:
    """
    Check that C{name} names an entry of a folder, not a path.

    @raise ValueError: when it does not.
    """
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a file name")


def _checkWritable(fd: int, path: str) -> None:
    """
    Check that this process can create files in the open folder C{fd}.

    @raise UnusablePath: when it cannot.
    """
    if not os.access(".", os.W_OK | os.X_OK, dir_fd=fd, effective_ids=True):
        raise UnusablePath(path, "is not writable by this user")


def checkFolder(base: str, parts: Sequence[str] = (), *, privateBase: bool) -> None:
    """
    Check, creating nothing, that files can be written in the folder
    C{base/parts...} as L{openFolder} opens it: that it breaks no rule and
    is writable, or, when it is missing, that it can be created.

    @raise UnusablePath: when it cannot be used.
    @raise OSError: when a folder on the way cannot be opened.
    """
    path = os.path.join(base, *parts)
    try:
        with openFolder(base, parts, create=False, privateBase=privateBase) as fd:
            _checkWritable(fd, path)
    except FileNotFoundError:
        pass


def temporaryName(name: str) -> str:
    """
    The name of the temporary file a write of C{name} goes through.
    """
    return f".{name}.{os.getpid()}.tmp"


def _writeTemporary(folder: int, name: str, data: bytes, mode: int) -> str:
    """
    Write C{data} to a new temporary file for C{name} in the open folder
    C{folder}, flushed to disk.  A leftover of the same name is removed
    first; the new file is created exclusively, never through a link.

    @return: The temporary file's name.
    """
    _checkName(name)
    temporary = temporaryName(name)
    try:
        os.unlink(temporary, dir_fd=folder)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, mode, dir_fd=folder)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temporary, dir_fd=folder)
        raise
    os.close(fd)
    return temporary


def replaceInFolder(folder: int, files: Sequence[tuple[str, bytes, int]]) -> None:
    """
    Replace several files of the open folder C{folder} as one: each
    C{(name, data, mode)} is first written in full to a temporary file and
    flushed to disk, and only then are they all renamed over their names, in
    order, with no disk wait between two renames; the folder is flushed
    last.  A link at a file's name is replaced, never followed.

    A crash before the renames leaves every file as it was; only one in the
    microseconds between renames can leave some new beside some old.

    @raise OSError: when any step fails; nothing is replaced when a write
        fails.
    """
    prepared: list[tuple[str, str]] = []
    try:
        for name, data, mode in files:
            prepared.append((_writeTemporary(folder, name, data, mode), name))
    except BaseException:
        for temporary, _ in prepared:
            os.unlink(temporary, dir_fd=folder)
        raise
    for index, (temporary, name) in enumerate(prepared):
        try:
            os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            for left, _ in prepared[index:]:
                os.unlink(left, dir_fd=folder)
            raise
    os.fsync(folder)
