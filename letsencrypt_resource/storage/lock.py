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
import time
from collections.abc import Callable
from contextlib import suppress

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


#: Seconds that taking the lock waits while a reader holds it (see
#: L{StateLock.acquire}): a C{status} read without a server takes about
#: 3 s at 10,000 sets.
READER_WAIT = 5.0
#: Seconds between two tries meanwhile.
_TRY_AGAIN = 0.05
#: What follows the holder's pid in the lock file when it is a reader.
_READER = "reader"
#: Bytes of the lock file that L{_holder} reads.
_HOLDER_TEXT = 64


def _holder(fd: int) -> tuple[str, bool]:
    """
    The pid that the lock file C{fd} records, and whether it is a
    reader's; C{"unknown"} when no pid can be read there: its holder is
    writing it (the text is emptied when a holder lets go).
    """
    try:
        words = os.pread(fd, _HOLDER_TEXT, 0).decode("ascii", "replace").split()
    except OSError:
        words = []
    if not words or not words[0].isdigit():
        return "unknown", False
    return words[0], words[1:] == [_READER]


def _record(fd: int, reader: bool) -> None:
    """
    Make the lock file C{fd} name this process as its holder, a reader's
    or not.  The new text is padded with spaces to the old one's length
    before the rest is cut (as far as L{_holder} reads), so a reader in
    between, which splits on whitespace, finds the new holder, never a mix
    of both texts.
    """
    holder = f"{os.getpid()} {_READER}" if reader else str(os.getpid())
    encoded = holder.encode("ascii")
    os.pwrite(fd, encoded.ljust(min(os.fstat(fd).st_size, _HOLDER_TEXT)), 0)
    os.ftruncate(fd, len(encoded))


class StateLock:
    """
    The exclusive lock on a state directory.  The lock file records the
    holder's pid, followed by C{reader} for a short-lived reader.
    """

    def __init__(
        self,
        directory: str,
        sleep: Callable[[float], object] = time.sleep,
        now: Callable[[], float] = time.monotonic,
    ):
        """
        @param sleep: Waits, before the reactor runs, while a reader holds
            the lock.
        @param now: Tells the time of that wait.
        """
        self.directory = directory
        self.path = os.path.join(directory, "lock")
        self._fd: int | None = None
        self._reader = False
        self._sleep = sleep
        self._now = now

    def acquire(self, reader: bool = False, wait: float = READER_WAIT) -> None:
        """
        Take the lock, or fail; when it was held already, the new lock
        file replaces the old one.

        Another process holding it fails at once, but for a reader (or a
        holder whose pid cannot be read yet): this lock's first taking
        waits, blocking, up to C{wait} seconds for it to let go (a server
        that starts while a C{status} reads); taking it again after the
        lock file was replaced does not wait.

        @param reader: Whether this process holds it only to read for a
            short while, recorded so that others wait for it.
        @param wait: Seconds to wait at most, blocking; 0 where blocking is
            not wanted (a caller that tries again on its reactor's clock).
        @raise StateDirectoryLocked: when another process holds it.
        @raise UnusablePath: when the lock file, or a folder on the way, is
            not safe to write (see L{letsencrypt_resource.safefs}).
        """
        fd = self._open()
        deadline = self._now() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid, reading = _holder(fd)
                waiting = reading or pid == "unknown"
                if not (waiting and self._fd is None and self._now() < deadline):
                    os.close(fd)
                    raise StateDirectoryLocked(self.directory, f"pid {pid}") from None
            self._sleep(_TRY_AGAIN)
        try:
            _record(fd, reader)
        except BaseException:
            os.close(fd)
            raise
        self._close()
        self._fd = fd
        self._reader = reader

    def recordHolder(self) -> None:
        """
        Write this process's pid into the lock file, if it holds the lock: a
        process that took it, then forked and exited (C{twistd} without
        C{-n} takes it while building the server, before it daemonizes),
        left its own pid there, and a second server would be refused
        naming a process that is gone.  The new text replaces the old
        without emptying the file first, so nobody finds it empty.
        """
        if self._fd is not None:
            with suppress(OSError):  # Holding matters more than the text.
                _record(self._fd, self._reader)

    def _open(self) -> int:
        """
        Open the lock file, creating it and the state directory if needed,
        following no link, and make it owner-only (an existing one may be
        0644, copied or restored: any local user could open it, and
        C{flock} on that read-only descriptor would block every start).

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
        if stat.S_IMODE(status.st_mode) != 0o600:
            try:
                os.fchmod(fd, 0o600)
            except BaseException:
                os.close(fd)
                raise
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
        Let the lock go, emptying the lock file first: a process that
        looks at it while the next holder takes it finds no pid (it waits)
        rather than this one's.
        """
        if self._fd is not None:
            with suppress(OSError):  # Letting go matters more than the text.
                os.ftruncate(self._fd, 0)
            self._close()

    def _close(self) -> None:
        """
        Let the lock go as it is.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
