"""
One process at a time on a state directory: an exclusive lock on
C{<state>/lock}, held while the process runs.  It is the single-node lease
under which L{letsencrypt_resource.storage.directory.DirectoryStorage}
gives its own leases.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from ..safefs import UnusablePath, openFolder


class StateDirectoryLocked(Exception):
    """
    Another process holds the state directory.
    """

    def __init__(self, directory: str, holder: str):
        super().__init__(directory, holder)
        self.directory = directory
        self.holder = holder

    def __str__(self) -> str:
        return (
            f"the state directory {self.directory} is in use by another process "
            f"({self.holder}); run one server per state directory"
        )


class StateLock:
    """
    The exclusive lock on a state directory.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, "lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """
        Take the lock, or fail at once; when it was held already, the new
        lock file replaces the old one.

        @raise StateDirectoryLocked: when another process holds it.
        @raise UnusablePath: when the lock file, or a folder on the way, is
            not safe to write (see L{letsencrypt_resource.safefs}).
        """
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateDirectoryLocked(self.directory, f"pid {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self.release()
        self._fd = fd

    def _open(self) -> int:
        """
        Open the lock file, creating it and the state directory if needed,
        following no link.

        @raise UnusablePath: when it is not a regular file of this user.
        """
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with openFolder(self.directory) as folder:
            try:
                fd = os.open("lock", flags, 0o600, dir_fd=folder)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise UnusablePath(self.path, "is a symbolic link") from None
                raise
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_uid != os.geteuid():
            os.close(fd)
            raise UnusablePath(self.path, "is not a regular file owned by this user")
        return fd

    def held(self) -> bool:
        """
        Whether the lock file at the lock's path is still the one locked: it
        is not if the file, or the whole state directory, was removed or
        replaced since.
        """
        if self._fd is None:
            return False
        try:
            current = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        locked = os.fstat(self._fd)
        return (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino)

    def release(self) -> None:
        """
        Let the lock go.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
