"""
The L{IStorage} of a single node: the state directory.

A key is the path of its file under the state directory (so the layout of
L{letsencrypt_resource.store} is kept, and existing state directories load
unchanged).  Every write goes through L{letsencrypt_resource.safefs}:
written in full then renamed, never through a link nor in a folder that
another user controls, files 0600 and folders 0700; reads follow no link
either.  Every file operation runs in a worker thread, never in the
reactor's.

Leases are given under the state directory's lock (L{StateLock}): the
process that holds it is the only holder of leases, timed by the clock
within it; their newest tokens are kept in C{.leases/<name>}, so that they
keep increasing across restarts.  Change notification reaches the other
L{DirectoryStorage} objects of the same process on the same directory.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ..safefs import UnusablePath, openFolder, replaceInFolder
from ..workers import BackgroundWorkers
from .interface import ILease, IStorage, LeaseLost, StorageError, checkKey, checkPrefix
from .leases import Lease, LeaseTable, checkFence, reportStale
from .lock import StateDirectoryLocked, StateLock
from .notify import ChangeFeed

T = TypeVar("T")

#: The folder, under the state directory, of the leases' newest tokens;
#: no key reaches it, as no key's part starts with C{.}.
LEASES = ".leases"


def reason(error: OSError) -> str:
    """
    What C{error} says, with the path when it is about a folder on the way.
    """
    return str(error) if isinstance(error, UnusablePath) else str(error.strerror)


def _split(key: str) -> tuple[list[str], str]:
    *folders, name = key.split("/")
    return folders, name


def readFile(base: str, key: str) -> bytes | None:
    """
    The content of the regular file C{base/key}, or C{None} when it is
    missing; no link is followed on the way.

    @raise OSError: when it cannot be read, or is not a regular file.
    """
    folders, name = _split(key)
    try:
        with openFolder(base, folders, create=False) as folder:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(name, flags, dir_fd=folder)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    path = os.path.join(base, key)
                    raise UnusablePath(
                        path, "is a symbolic link, which is never followed"
                    ) from None
                raise
    except FileNotFoundError:
        return None
    with open(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnusablePath(os.path.join(base, key), "is not a regular file")
        return stream.read()


def writeFile(base: str, key: str, data: bytes) -> None:
    """
    Replace the file C{base/key} with C{data}, 0600, creating its folders
    0700 (see L{replaceInFolder}).

    @raise OSError: when it cannot be written safely.
    """
    folders, name = _split(key)
    with openFolder(base, folders) as folder:
        replaceInFolder(folder, [(name, data, 0o600)])


def deleteFile(base: str, key: str) -> None:
    """
    Remove the file C{base/key} if it is there (a link there is removed,
    not followed).

    @raise OSError: when it cannot be removed.
    """
    folders, name = _split(key)
    try:
        with openFolder(base, folders, create=False) as folder:
            os.unlink(name, dir_fd=folder)
            os.fsync(folder)
    except FileNotFoundError:
        pass


def _walk(folder: int, prefix: str) -> Iterator[str]:
    """
    The keys of the regular files under the open C{folder}, named from
    C{prefix}; hidden entries and links are skipped.
    """
    with os.scandir(folder) as entries:
        found = [
            (e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False))
            for e in entries
            if not e.name.startswith(".")
        ]
    for name, isFolder, isFile in found:
        if isFile:
            yield prefix + name
        elif isFolder:
            try:
                child = os.open(
                    name,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=folder,
                )
            except FileNotFoundError:
                continue
            try:
                yield from _walk(child, prefix + name + "/")
            finally:
                os.close(child)


def listFiles(base: str, prefix: str) -> list[str]:
    """
    The keys, starting with C{prefix}, of the regular files under C{base}.

    @raise OSError: when a folder on the way cannot be read safely.
    """
    folders = prefix.split("/")[:-1]
    start = "".join(f + "/" for f in folders)
    try:
        with openFolder(base, folders, create=False) as folder:
            keys = [k for k in _walk(folder, start) if k.startswith(prefix)]
    except FileNotFoundError:
        return []
    valid = []
    for key in keys:
        try:
            valid.append(checkKey(key))
        except StorageError:
            continue
    return sorted(valid)


class Runner(Protocol):
    """
    What runs the file operations: L{BackgroundWorkers}, or a test's fake.
    """

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Call C{f(*args)} in a worker thread; the Deferred fires in the
        reactor thread.
        """


class _Place:
    """
    What the L{DirectoryStorage} objects of this process on one state
    directory share: their change feed, and the lock that makes a fenced
    write one step with its check.
    """

    def __init__(self) -> None:
        self.feed = ChangeFeed()
        self.exclusive = threading.Lock()


_places: dict[str, _Place] = {}


@implementer(IStorage)
class DirectoryStorage:
    """
    An L{IStorage} in a state directory.
    """

    def __init__(
        self,
        path: str,
        reactor: Any,
        clock: IReactorTime | None = None,
        workers: Runner | None = None,
        lock: StateLock | None = None,
    ):
        """
        @param path: The state directory.
        @param reactor: Where results are delivered.
        @param clock: What times the leases; the reactor by default.
        @param workers: The threads that do the file operations; by
            default, one thread of the storage's own, stopped by L{close},
            so that its writes land in the order they were made.
        @param lock: The state directory's lock, held by the caller: leases
            are given while it is held.  By default the storage takes the
            lock for as long as it holds a lease.
        """
        self.path = path
        self._ownWorkers: BackgroundWorkers | None = None
        if workers is None:
            workers = self._ownWorkers = BackgroundWorkers(reactor, "letsencrypt-storage", 1)
        self._workers: Runner = workers
        self._ownLock = lock is None
        self._lock = StateLock(path) if lock is None else lock
        self._leases = LeaseTable(reactor if clock is None else clock)
        self._place = _places.setdefault(os.path.realpath(path), _Place())
        self._closed = False

    def _run(self, key: str, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Call C{f(*args)} in a worker thread, an C{OSError} it raises
        becoming a L{StorageError} naming the file of C{key}, for
        operators.
        """
        if self._closed:
            return fail(StorageError(key, "the storage is closed"))

        def call() -> T:
            try:
                return f(*args)
            except StorageError:
                raise
            except OSError as error:
                raise StorageError(os.path.join(self.path, key), reason(error)) from None

        return self._workers.run(call)

    def load(self, key: str) -> Deferred[bytes | None]:
        try:
            checkKey(key)
        except StorageError:
            return fail()
        return self._run(key, readFile, self.path, key)

    def _change(
        self, key: str, fence: ILease | None, write: Callable[..., None], *args: Any
    ) -> Deferred[None]:
        try:
            checkKey(key)
        except StorageError:
            return fail()

        def change() -> None:
            with self._place.exclusive:
                if fence is not None:
                    checkFence(key, fence, self._newest(fence.name))
                write(self.path, key, *args)

        d = self._run(key, change)
        d.addCallbacks(lambda _: self._place.feed.changed(self, key), reportStale)
        return d

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        return self._change(key, fence, writeFile, bytes(value))

    def delete(self, key: str, fence: ILease | None = None) -> Deferred[None]:
        return self._change(key, fence, deleteFile)

    def list(self, prefix: str) -> Deferred[list[str]]:
        try:
            checkPrefix(prefix)
        except StorageError:
            return fail()
        return self._run(prefix, listFiles, self.path, prefix)

    def _newest(self, name: str) -> int:
        """
        The newest token of the lease C{name}, as persisted.
        """
        data = readFile(self.path, f"{LEASES}/{name}")
        try:
            return int(data or b"0")
        except ValueError:
            raise StorageError(name, "the lease's token file is damaged") from None

    def _holdLock(self) -> bool:
        """
        Whether the state directory's lock is held, taking it when the
        storage owns it.
        """
        if self._lock.held():
            return True
        if not self._ownLock:
            return False
        try:
            self._lock.acquire()
        except StateDirectoryLocked:
            return False
        return True

    def lease(self, name: str, seconds: float) -> Deferred[ILease | None]:
        try:
            checkKey(name)
        except StorageError:
            return fail()

        def take() -> ILease | None:
            with self._place.exclusive:
                if not self._holdLock():
                    return None
                token = self._leases.take(name, seconds, self, self._newest(name))
                if token is None:
                    return None
                lease = Lease(name, token, seconds, self._renew, self._release)
                try:
                    writeFile(self.path, f"{LEASES}/{name}", str(token).encode("ascii"))
                except BaseException:
                    self._leases.release(lease)
                    raise
                return lease

        return self._run(name, take)

    def _renew(self, lease: Lease) -> Deferred[None]:
        def renew() -> None:
            with self._place.exclusive:
                if not (self._lock.held() and self._leases.renew(lease)):
                    raise LeaseLost(lease.name, "is no longer held by this storage")

        return self._run(lease.name, renew)

    def _release(self, lease: Lease) -> Deferred[None]:
        if self._closed:
            return succeed(None)

        def release() -> None:
            with self._place.exclusive:
                self._leases.release(lease)
                if self._ownLock and not self._leases.holds(self):
                    self._lock.release()

        return self._run(lease.name, release)

    def watch(self, prefix: str, callback: Callable[[str], object]) -> Deferred[Callable[[], None]]:
        try:
            checkPrefix(prefix)
        except StorageError:
            return fail()
        return succeed(self._place.feed.watch(self, prefix, callback))

    def close(self) -> Deferred[None]:
        """
        Give up the leases (and the lock, when the storage took it), stop
        the watches, then the storage's own threads.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        self._place.feed.forget(self)

        def letGo() -> None:
            with self._place.exclusive:
                self._leases.releaseAll(self)
                if self._ownLock:
                    self._lock.release()

        d = self._workers.run(letGo)
        own = self._ownWorkers
        if own is not None:
            d.addCallback(lambda _: own.stop())
        return d
