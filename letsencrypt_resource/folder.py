"""
A folder served read-only over HTTP, confined to itself.

A request reaches only regular files and folders whose real path is
inside the real path of the served folder: names that resolve elsewhere
(through a symbolic link or otherwise), that cannot be spelled in UTF-8,
that hold a NUL or a slash, C{.} and C{..}, and hidden (dot) names unless
allowed, all answer 404, as do files the server cannot open. Folder
listings show exactly the entries a request could fetch.

The served folder itself is resolved and opened once, when the service
starts listening, and every request is opened one component at a time
from that descriptor without following links: a link swapped in between
the check and the open is refused rather than followed, and a served
folder moved away and replaced by a link (to the state directory, say)
never leads a request anywhere else.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from html import escape
from typing import IO, Any
from urllib.parse import quote

import attrs
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.static import File, formatFileSize

from .httplimits import ALLOWED_METHODS, notFound, refuseMethod

#: The files a folder request answers with, in this order, instead of a
#: listing.
INDEX_NAMES = ("index", "index.html", "index.htm")

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@attrs.frozen
class _Found:
    """
    An open regular file or folder inside the served folder.

    @ivar path: Its real path.
    @ivar fd: Its file descriptor, closed when the lookup ends.
    @ivar status: Its C{fstat}.
    """

    path: str
    fd: int
    status: os.stat_result

    @property
    def isFolder(self) -> bool:
        """
        Whether it is a folder rather than a regular file.
        """
        return stat.S_ISDIR(self.status.st_mode)


class _OpenedFile(File):
    """
    A C{File} already open: its size, date and content come from the open
    file, never from its path again.
    """

    def __init__(self, path: str, stream: IO[bytes]):
        super().__init__(path)
        self._stream = stream

    def restat(self, reraise: bool = True) -> None:
        """
        Fill C{FilePath}'s stat cache, which C{exists}, C{isdir},
        C{getsize} and C{getModificationTime} read, from the open file.
        """
        self._statinfo = os.fstat(self._stream.fileno())

    def openForReading(self) -> IO[bytes]:
        return self._stream


def _sameFile(first: os.stat_result, second: os.stat_result) -> bool:
    """
    Whether two C{stat} results describe the same file.
    """
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


class ServedFolder(Resource):
    """
    The root of a read-only file tree: GET and HEAD of its files and
    folders, 405 for every other method.

    It holds the folder open from L{open} to L{close}, and each request
    starts from that descriptor. While C{path} no longer names the folder
    opened (it was moved, removed, or replaced by a link or another
    folder), every request answers 404 until the service is started again
    or a reload, once its checks passed, opens what C{path} names then.
    Answering 404 is safer than serving the old folder on: that folder may
    have been moved away precisely to take it off the web, or into a place
    where private files are then put; a 404 shows the change at once,
    where stale content would hide it. Nothing is served after L{close},
    not even from a descriptor number the process has reused since.

    @ivar path: The folder served, as configured.
    @ivar hiddenFiles: Whether dot files and folders are served and listed.
    """

    isLeaf = True

    def __init__(self, path: str, root: int, hiddenFiles: bool = False):
        """
        @param root: An open descriptor of the folder C{path} resolves to,
            which the new instance owns.
        """
        super().__init__()
        self.path = path
        self.hiddenFiles = hiddenFiles
        self._root: int | None = root

    @classmethod
    def open(cls, path: str, hiddenFiles: bool = False) -> ServedFolder:
        """
        Resolve C{path}, links included, and open the folder it names.

        @raise OSError: when it cannot be opened as a folder.
        """
        return cls(path, openFolder(path), hiddenFiles)

    def reopen(self) -> None:
        """
        Serve the folder C{path} names now, when it can be opened (after
        the configuration's checks passed again); else keep the one open.
        A closed folder stays closed.
        """
        if self._root is None:
            return
        try:
            root = openFolder(self.path)
        except OSError:
            return
        old, self._root = self._root, root
        os.close(old)

    def close(self) -> None:
        """
        Close the folder: from now on, every request answers 404.
        """
        root, self._root = self._root, None
        if root is not None:
            os.close(root)

    def render(self, request: Request) -> Any:
        """
        Answer a file, a folder's redirect, index or listing, 404 or 405.
        """
        if request.method not in ALLOWED_METHODS:
            return refuseMethod(request)
        names = self._requestNames(request)
        if names is None:
            return notFound(request)
        *folders, last = names
        with self._lookup(names) as found:
            if found is None or (last == "" and not found.isFolder):
                return notFound(request)
            if not found.isFolder:
                return self._file(found).render(request)
            if last != "":
                request.setResponseCode(301)
                request.setHeader(b"location", quote(last, safe="").encode("ascii") + b"/")
                return b""
        for index in INDEX_NAMES:
            with self._lookup(folders + [index]) as found:
                if found is not None and not found.isFolder:
                    return self._file(found).render(request)
        return self._listing(request, folders)

    def _requestNames(self, request: Request) -> list[str] | None:
        """
        The decoded path segments of C{request}, the last one empty for a
        folder, or C{None} when one cannot name a visible entry.
        """
        if not request.path.startswith(b"/") or request.postpath is None:
            return None
        try:
            names = [segment.decode("utf-8") for segment in request.postpath]
        except UnicodeDecodeError:
            return None
        *folders, last = names
        if not all(map(self._visible, folders)) or (last and not self._visible(last)):
            return None
        return names

    def _visible(self, name: str) -> bool:
        """
        Whether C{name} may name an entry: a single, non-empty component,
        spelled in UTF-8, not hidden unless allowed.
        """
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            return False
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return self.hiddenFiles or not name.startswith(".")

    @contextmanager
    def _lookup(self, names: list[str]) -> Iterator[_Found | None]:
        """
        Open the regular file or folder at C{names} below the served
        folder (an empty last name stands for the folder itself).

        The names are resolved as paths to find where they lead, but are
        opened from the folder held open, never from a path: whatever
        happens to the paths between the two, only entries of that folder
        can be reached.

        @return: A context manager for the L{_Found} entry, or C{None} when
            it resolves outside the served folder or to a hidden name, is
            neither a regular file nor a folder, or cannot be opened; and
            for every name once the folder is closed or C{path} names
            another file than the folder held open.
        """
        root = os.path.realpath(self.path)
        real = os.path.realpath(os.path.join(root, *names))
        relative = os.path.relpath(real, root)
        parts = [] if relative == os.curdir else relative.split(os.sep)
        if parts and (parts[0] == os.pardir or not all(map(self._visible, parts))):
            yield None
            return
        fd = self.openRoot()
        if fd is None:
            yield None
            return
        start, fd = fd, -1
        try:
            fd = openBelow(start, parts)
            status = os.fstat(fd)
        except OSError:
            found = None
        else:
            kind = stat.S_IFMT(status.st_mode)
            found = _Found(real, fd, status) if kind in (stat.S_IFREG, stat.S_IFDIR) else None
        try:
            yield found
        finally:
            if fd >= 0:
                os.close(fd)

    def openRoot(self) -> int | None:
        """
        A new descriptor of the folder held open, or C{None} when it is
        closed or C{path} no longer names it.
        """
        if self._root is None:
            return None
        try:
            if not _sameFile(os.stat(self.path), os.fstat(self._root)):
                return None
            return os.dup(self._root)
        except OSError:
            return None

    @staticmethod
    def _file(found: _Found) -> File:
        """
        A resource that sends the open file C{found}.
        """
        return _OpenedFile(found.path, os.fdopen(os.dup(found.fd), "rb"))

    def _listing(self, request: Request, folders: list[str]) -> bytes:
        """
        An HTML list of the entries of the folder at C{folders} that a
        request could fetch, folders first.
        """
        with self._lookup(folders + [""]) as found:
            try:
                names = os.listdir(found.fd) if found is not None else []
            except OSError:
                names = []
        rows: list[tuple[bool, str, str]] = []
        for name in names:
            if not self._visible(name):
                continue
            with self._lookup(folders + [name]) as entry:
                if entry is None:
                    continue
                size = "" if entry.isFolder else formatFileSize(entry.status.st_size)
                rows.append((not entry.isFolder, name, size))
        rows.sort()
        title = escape("/" + "".join(folder + "/" for folder in folders))
        lines = [
            "<!DOCTYPE html>",
            f'<html><head><meta charset="utf-8"><title>Index of {title}</title></head>',
            f"<body><h1>Index of {title}</h1><table>",
        ]
        for isFile, name, size in rows:
            suffix = "" if isFile else "/"
            lines.append(
                f'<tr><td><a href="{quote(name, safe="")}{suffix}">'
                f"{escape(name)}{suffix}</a></td><td>{size}</td></tr>"
            )
        lines.append("</table></body></html>")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return "\n".join(lines).encode("utf-8") + b"\n"


def openBelow(fd: int, parts: list[str], flags: int = _OPEN_FLAGS) -> int:
    """
    Open C{parts} below the folder C{fd} one name at a time, following no
    link on the way: a name that is a symbolic link fails with C{ELOOP}.

    @param fd: A descriptor of the folder to start from, which this takes
        over: it is closed, on failure as on success.
    @param flags: The flags each name is opened with; C{O_NOFOLLOW} is
        always added.
    @return: A new descriptor of what C{parts} name (C{fd} itself for no
        parts), which the caller closes.
    @raise OSError: when a name cannot be opened.
    """
    for part in parts:
        parent, fd = fd, -1
        try:
            fd = os.open(part, flags | os.O_NOFOLLOW, dir_fd=parent)
        finally:
            os.close(parent)
    return fd


def openFolder(path: str) -> int:
    """
    Open the folder C{path} resolves to, links included.
    """
    return os.open(os.path.realpath(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
