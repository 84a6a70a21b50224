"""
Where the control socket of a state directory is, and whether it can be
trusted: what the server binds and the operations command reaches, with
nothing beyond the standard library, so that the command can ask a
running server without importing the rest of the package.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

#: The control socket's name in the state directory.
SOCKET_NAME = "control.sock"
#: UNIX socket paths longer than this do not fit in a sockaddr_un.
_MAX_SOCKET_PATH = 100
#: Where, on Linux, each open descriptor of this process is a link to what
#: it opened: a folder held open is reached there by a short path.
DESCRIPTORS = "/proc/self/fd"
#: The longest answer, in bytes.
MAX_ANSWER = 64 * 1024 * 1024


@contextmanager
def openStateFolder(stateDirectory: str) -> Iterator[int]:
    """
    Open the state directory, following no link at its name.

    @return: A context manager giving the folder's descriptor, closed at
        its end.
    @raise OSError: when it cannot be opened.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    folder = os.open(stateDirectory, flags)
    try:
        yield folder
    finally:
        os.close(folder)


def socketProblem(folder: int) -> str | None:
    """
    Why the control socket of the state directory open as C{folder} cannot
    be trusted, if it cannot: the folder must be writable by its owner
    only, the user the server runs as, and the socket must belong to that
    user; an answer from any other socket could be forged.

    @raise OSError: when there is no socket.
    """
    directory = os.fstat(folder)
    socket = os.lstat(SOCKET_NAME, dir_fd=folder)
    if directory.st_mode & 0o022:
        return "others can write in that folder"
    if not stat.S_ISSOCK(socket.st_mode) or socket.st_uid != directory.st_uid:
        return "it is not a socket of that user"
    return None


def socketAddress(stateDirectory: str, folder: int) -> str:
    """
    The address at which to bind, or reach, the control socket of
    C{stateDirectory}, open as C{folder}.

    On Linux it is the socket's name in the folder's link of
    L{DESCRIPTORS}: short whatever the state directory's path, and it
    names the very folder that was opened and checked, whatever happened
    to its path since.  Elsewhere it is the socket's path, if it fits in a
    UNIX socket address.

    @raise OSError: when it is neither: the path is too long and
        L{DESCRIPTORS} is missing.
    """
    link = os.path.join(DESCRIPTORS, str(folder))
    opened = os.fstat(folder)
    try:
        linked = os.stat(link)
    except OSError:
        pass
    else:
        if (linked.st_dev, linked.st_ino) == (opened.st_dev, opened.st_ino):
            return os.path.join(link, SOCKET_NAME)
    path = os.path.join(os.path.abspath(stateDirectory), SOCKET_NAME)
    if len(path.encode("utf-8")) > _MAX_SOCKET_PATH:
        raise OSError(
            errno.ENAMETOOLONG,
            f"too long for a UNIX socket, and {DESCRIPTORS}, through which a "
            "long path is reached, is missing",
            path,
        )
    return path
