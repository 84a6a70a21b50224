"""
The L{IStorage} of a single node: the state directory.

A key is the path of its file under the state directory, so that the
layout of the records (L{letsencrypt_resource.storage.records}) is, with
folders 0700 and files 0600::

    accounts/<hash of the ACME URL>.json   account key and URL
    certificates/<domains joined by _>.pem key + full chain, one file
    renewal/<domains joined by _>.json     renewal state, JSON; holds the
                                           key of the order under way
    challenges/<token>                     pending HTTP-01 challenges
    provisional-signer.pem                 this installation's signer

(a long domain set's name is shortened, see L{domainsFileName
<letsencrypt_resource.storage.records.domainsFileName>}).  Every write goes
through L{letsencrypt_resource.safefs}:
written in full then renamed, never through a link nor in a folder that
another user controls, files 0600 and folders 0700; reads follow no link
either.  Every file operation runs in a worker thread, never in the
reactor's.  The state directory is opened and checked, from the root, at
the first operation, and held open (L{HeldFolder
<letsencrypt_resource.safefs.HeldFolder>}): each operation starts from it,
once it has checked that the state directory's path still names that
folder; when the path names another folder since (the state directory was
moved, replaced by a link or by another folder), it is opened and checked
again from the root, and a link there is refused.

Leases are given under the state directory's lock (L{StateLock}): across
processes, the process that holds it is the only holder of leases.  Within
the process, every L{DirectoryStorage} on the directory shares one table
of leases, timed by the clock of the first of them, so that a lease one
holds is held for all, and one that expired can be taken by any.  Without a
lock given, the storage objects on a directory share one lock, taken at the
first lease and kept until the last of them is closed.  The newest token of
each lease is kept in C{.leases/<sha256 of its name>}, so that tokens keep
increasing across restarts and any name has a file of its own.  Change
notification reaches the other L{DirectoryStorage} objects of the same
process on the same directory.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from ..safefs import HeldFolder, UnusablePath, replaceInFolder
from ..workers import BackgroundWorkers
from .fileread import Result, TooLarge, readEach, splitKey
from .interface import (
    MAX_VALUE,
    ILease,
    IStorage,
    LeaseLost,
    StorageError,
    ValueTooLarge,
    checkKey,
    checkPrefix,
    checkValue,
)
from .leases import Lease, LeaseTable, checkFence, reportStale
from .lock import StateDirectoryLocked, StateLock
from .notify import ChangeFeed
from .readahead import READ_AHEAD_FROM, READ_AHEAD_MIN, ReadAhead, available

T = TypeVar("T")

#: The folder, under the state directory, of the leases' newest tokens;
#: no key reaches it, as no key's part starts with C{.}.
LEASES = ".leases"


def tokenFile(name: str) -> str:
    """
    The path, under the state directory, of the file that keeps the newest
    token of the lease C{name}: flat, so that the names C{a} and C{a/b}
    cannot clash, and short whatever the name's length.
    """
    return f"{LEASES}/{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()}"


def reason(error: OSError) -> str:
    """
    What C{error} says, with the path when it is about a folder on the way.
    """
    return str(error) if isinstance(error, UnusablePath) else str(error.strerror)


def writeError(path: str, error: OSError) -> StorageError:
    """
    The L{StorageError} for a write of C{path} that failed with C{error}.
    """
    return StorageError(path, f"cannot be written: {reason(error)}")


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9]+\.tmp$")


def removeTemporaryFiles(path: str, only: Collection[str] | None = None) -> int:
    """
    Remove, in every folder under C{path}, the C{.<name>.<pid>.tmp} files
    that writes cut short by a crash left behind (see L{replaceInFolder});
    with C{only}, those of these names only.  Folders of other users are
    left alone: the product never writes there.  Call it only while
    holding the state directory's lock.

    @return: How many were removed.
    """
    removed = 0
    for folder, _, names in os.walk(path):
        if os.lstat(folder).st_uid != os.geteuid():
            continue
        for name in names:
            match = _TEMPORARY.match(name)
            if match and (only is None or match.group("name") in only):
                try:
                    os.unlink(os.path.join(folder, name))
                except FileNotFoundError:
                    continue
                removed += 1
    return removed


def readFiles(base: HeldFolder, keys: Collection[str]) -> dict[str, bytes | StorageError | None]:
    """
    The content of each regular file C{key} under C{base}, C{None} when it
    is missing, or a L{ValueTooLarge} when it is larger than L{MAX_VALUE}
    bytes (the others are still read), under the rules of
    L{letsencrypt_resource.storage.fileread}: no link is followed on the
    way, and each folder is opened once for the keys in it.

    @raise OSError: naming the path, when one cannot be read, or is not a
        regular file.
    """
    values: dict[str, bytes | StorageError | None] = {}
    opener = functools.partial(base.open, create=False)
    for key, value in readEach(opener, base.path, keys, MAX_VALUE):
        values[key] = storedValue(base.path, key, value)
    return values


def storedValue(base: str, key: str, value: Result) -> bytes | StorageError | None:
    """
    What a read of the file C{key} under C{base} that gave C{value} gives
    L{DirectoryStorage.loadMany}.

    @raise OSError: when C{value} is one.
    """
    if isinstance(value, TooLarge):
        return ValueTooLarge(os.path.join(base, key))
    if isinstance(value, OSError):
        raise value
    return value


def readFile(base: HeldFolder, key: str) -> bytes | None:
    """
    The content of the regular file C{key} under C{base}, or C{None} when
    it is missing (see L{readFiles}).

    @raise ValueTooLarge: when it is too large to read.
    """
    value = readFiles(base, [key])[key]
    if isinstance(value, StorageError):
        raise value
    return value


def writeFile(base: HeldFolder, key: str, data: bytes) -> None:
    """
    Replace the file C{key} under C{base} with C{data}, 0600, creating its folders
    0700 (see L{replaceInFolder}).

    @raise OSError: when it cannot be written safely.
    """
    folders, name = splitKey(key)
    with base.open(folders) as folder:
        replaceInFolder(folder, [(name, data, 0o600)])


def deleteFile(base: HeldFolder, key: str) -> None:
    """
    Remove the file C{key} under C{base} if it is there (a link there is removed,
    not followed), then the folders on its way that it left empty, so that
    a folder is there only while keys are below it.

    @raise OSError: when it cannot be removed.
    """
    folders, name = splitKey(key)
    try:
        with base.open(folders, create=False) as folder:
            os.unlink(name, dir_fd=folder)
            os.fsync(folder)
    except FileNotFoundError:
        return
    while folders:
        *folders, name = folders
        with base.open(folders, create=False) as parent:
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as error:
                if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return
                raise
            os.fsync(parent)


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


def listFiles(base: HeldFolder, prefix: str) -> list[str]:
    """
    The keys, starting with C{prefix}, of the regular files under C{base}.

    @raise OSError: when a folder on the way cannot be read safely.
    """
    folders = prefix.split("/")[:-1]
    start = "".join(f + "/" for f in folders)
    try:
        with base.open(folders, create=False) as folder:
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
    What runs the file operations: L{BackgroundWorkers}, or L{InThisThread}.
    """

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Call C{f(*args)} in a worker thread; the Deferred fires in the
        reactor thread.
        """


class InThisThread:
    """
    Workers that do each file operation at once, in the caller's thread:
    the Deferred they give has fired (a command without a reactor, and the
    tests).
    """

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Call C{f(*args)} now.
        """
        return maybeDeferred(f, *args)


def _valid(key: str) -> bool:
    """
    Whether C{key} is a key L{loadMany <DirectoryStorage.loadMany>} would
    take.
    """
    try:
        checkKey(key)
    except StorageError:
        return False
    return True


class _FileReads:
    """
    How a L{DirectoryStorage} reads its files: in its worker thread, or,
    for the keys planned (see L{DirectoryStorage.planReads}), from its
    read-ahead process.
    """

    def __init__(self, folder: HeldFolder, workers: Runner, reactor: Any, readAhead: bool):
        self._folder = folder
        self._workers = workers
        self._reactor = reactor
        self._readAhead = readAhead
        self._ahead: ReadAhead | None = None
        self._stopped = False

    def plan(self, keys: Sequence[str]) -> None:
        """
        See L{DirectoryStorage.planReads}.
        """
        if not self._readAhead or len(keys) < READ_AHEAD_MIN or not available():
            return
        if self._ahead is not None and not self._ahead.finished:
            return
        # None holds a zero byte (see ReadAhead.start).
        unique = [key for key in dict.fromkeys(keys) if _valid(key)][READ_AHEAD_FROM:]
        if not unique:
            return
        ahead = self._ahead = ReadAhead(self._reactor, self._folder.path, unique, MAX_VALUE)
        # Opened in the worker thread, after the writes queued before: the
        # process reads what they wrote.
        opened = self._workers.run(self._openRoot)
        opened.addCallbacks(
            self._start, self._notOpened, callbackArgs=(ahead,), errbackArgs=(ahead,)
        )

    def _openRoot(self) -> int:
        """
        A descriptor of the state directory, in a worker thread.
        """
        with self._folder.open((), create=False) as root:
            return os.dup(root)

    @staticmethod
    def _start(root: int, ahead: ReadAhead) -> None:
        """
        Start C{ahead} with C{root}, then close it.
        """
        try:
            ahead.start(root)
        finally:
            os.close(root)

    @staticmethod
    def _notOpened(failure: Failure, ahead: ReadAhead) -> None:
        """
        The state directory could not be opened for C{ahead}.
        """
        error = failure.value
        ahead.notStarted(reason(error) if isinstance(error, OSError) else str(error))

    def readMany(self, keys: list[str]) -> Deferred[dict[str, bytes | StorageError | None]]:
        """
        The values of C{keys}, checked, as L{DirectoryStorage.loadMany}
        gives them.
        """
        ahead = self._ahead
        if ahead is not None:
            planned = [key for key in keys if ahead.holds(key)]
            if planned:
                return ahead.take(planned).addCallback(self._readRest, keys)
        return self._workers.run(self._readAll, keys)

    def forget(self, key: str) -> None:
        """
        C{key} is being written: a value read ahead is no longer given.
        """
        if self._ahead is not None:
            self._ahead.forget(key)

    def stop(self) -> Deferred[None]:
        """
        Stop the read-ahead, if any: see L{ReadAhead.stop}.
        """
        self._stopped = True
        return succeed(None) if self._ahead is None else self._ahead.stop()

    def _readAll(self, keys: Collection[str]) -> dict[str, bytes | StorageError | None]:
        """
        L{readFiles} of C{keys}, in a worker thread.
        """
        try:
            return readFiles(self._folder, keys)
        except OSError as error:
            raise self._readError(error) from None

    def _readError(self, error: OSError) -> StorageError:
        """
        The L{StorageError} of a read that failed with C{error}.
        """
        return StorageError(error.filename or self._folder.path, reason(error))

    def _readRest(
        self, got: dict[str, Result], keys: list[str]
    ) -> Deferred[dict[str, bytes | StorageError | None]]:
        """
        The values of C{keys}: those the read-ahead C{got}, and the others
        read by the worker thread.
        """
        try:
            values = {key: storedValue(self._folder.path, key, got[key]) for key in got}
        except OSError as error:
            return fail(self._readError(error))
        rest = [key for key in keys if key not in got]
        if not rest:
            return succeed(values)
        if self._stopped:
            return fail(StorageError(rest[0], "the storage is closed"))
        return self._workers.run(self._readAll, rest).addCallback(lambda read: {**values, **read})


class _Place:
    """
    What the L{DirectoryStorage} objects of this process on one state
    directory share: their table of leases, their change feed, the lock
    that makes each change one step with its fence's check (and keeps a
    write out of a folder that a delete removes), and the state
    directory's lock of those given none.

    @ivar users: How many storage objects on it are open.
    """

    def __init__(self, path: str, real: str, clock: IReactorTime) -> None:
        self.real = real
        self.leases = LeaseTable(clock)
        self.feed = ChangeFeed()
        #: The reads of the storage objects on it that are open: each
        #: forgets what it read ahead of a key written through any.
        self.reads: set[_FileReads] = set()
        self.exclusive = threading.Lock()
        self.lock = StateLock(path)
        self.users = 0

    def forget(self, key: str) -> None:
        """
        C{key} is being written: no storage on the directory gives a value
        of it read ahead before.
        """
        for reads in self.reads:
            reads.forget(key)


_places: dict[str, _Place] = {}
_placesLock = threading.Lock()


def _join(path: str, clock: IReactorTime) -> _Place:
    """
    The place of the state directory C{path}, with one more user.
    """
    real = os.path.realpath(path)
    with _placesLock:
        place = _places.get(real)
        if place is None:
            place = _places[real] = _Place(path, real, clock)
        place.users += 1
        return place


def _leave(place: _Place) -> None:
    """
    One user less of C{place}: after the last, its lock is let go and the
    place forgotten.
    """
    with _placesLock:
        place.users -= 1
        if place.users == 0:
            place.lock.release()
            del _places[place.real]


@implementer(IStorage)
class DirectoryStorage:
    """
    An L{IStorage} in a state directory.
    """

    #: One process at a time uses a state directory (its lock).
    exclusive = True

    def __init__(
        self,
        path: str,
        reactor: Any,
        clock: IReactorTime | None = None,
        workers: Runner | None = None,
        lock: StateLock | None = None,
        readAhead: bool = False,
    ):
        """
        @param path: The state directory.
        @param reactor: Where results are delivered.
        @param clock: What times the leases; the reactor by default.  The
            storage objects on one directory share one table of leases,
            timed by the clock of the first one opened.
        @param workers: The threads that do the file operations; by
            default, one thread of the storage's own, stopped by L{close},
            so that its writes land in the order they were made.
        @param lock: The state directory's lock, held by the caller: leases
            are given, and fenced writes made, while it is held.  By
            default the storage objects on the directory that are given
            none share one lock, taken at the first lease and let go when
            the last of them is closed.  Give every storage object on a
            directory the same lock, or none.
        @param readAhead: Whether L{planReads} starts a read-ahead process;
            only with a running reactor.
        """
        self.path = path
        self._folder = HeldFolder(path)
        self._ownWorkers: BackgroundWorkers | None = None
        if workers is None:
            workers = self._ownWorkers = BackgroundWorkers(reactor, "letsencrypt-storage", 1)
        self._workers: Runner = workers
        self._place = _join(path, reactor if clock is None else clock)
        self._givenLock = lock
        self._closed = False
        self._reads = _FileReads(self._folder, workers, reactor, readAhead)
        self._place.reads.add(self._reads)

    @property
    def _lock(self) -> StateLock:
        """
        The state directory's lock the storage's leases are given under.
        """
        return self._place.lock if self._givenLock is None else self._givenLock

    def _onFile(self, key: str, f: Callable[..., T], *args: Any) -> T:
        """
        Call C{f(*args)}, an C{OSError} it raises becoming a
        L{StorageError} naming the file of C{key}, for operators.
        """
        try:
            return f(*args)
        except StorageError:
            raise
        except OSError as error:
            raise StorageError(os.path.join(self.path, key), reason(error)) from None

    def _run(self, key: str, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Call C{f(*args)} in a worker thread, as L{_onFile} does.
        """
        if self._closed:
            return fail(StorageError(key, "the storage is closed"))
        return self._workers.run(self._onFile, key, f, *args)

    def load(self, key: str) -> Deferred[bytes | None]:
        try:
            checkKey(key)
        except StorageError:
            return fail()
        return self._run(key, readFile, self._folder, key)

    def loadMany(self, keys: Collection[str]) -> Deferred[dict[str, bytes | StorageError | None]]:
        keys = list(keys)
        try:
            for key in keys:
                checkKey(key)
        except StorageError:
            return fail()
        if self._closed:
            return fail(StorageError(", ".join(keys[:1]), "the storage is closed"))
        return self._reads.readMany(keys)

    def planReads(self, keys: Sequence[str]) -> None:
        """
        Say that C{keys} will be read, in this order, by L{loadMany}: with
        read-ahead on and L{READ_AHEAD_MIN} keys or more, a process reads
        them (not the first L{READ_AHEAD_FROM}, nor invalid keys) unless
        another still runs, started from the workers' queue after the
        writes queued before (L{letsencrypt_resource.storage.readahead}).
        """
        if not self._closed:
            self._reads.plan(keys)

    def _change(
        self, key: str, fence: ILease | None, write: Callable[..., None], *args: Any
    ) -> Deferred[None]:
        try:
            checkKey(key)
        except StorageError:
            return fail()

        self._place.forget(key)

        def change() -> None:
            # One change at a time: a folder that a delete empties is
            # removed, which must not happen under a write going there.
            with self._place.exclusive:
                if fence is not None:
                    if not self._lock.held():
                        raise LeaseLost(fence.name, "the state directory's lock is lost")
                    checkFence(key, fence, self._newest(fence.name))
                write(self._folder, key, *args)

        d = self._run(key, change)
        d.addCallbacks(lambda _: self._place.feed.changed(self, key), reportStale)
        return d

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        try:
            data = checkValue(key, value)
        except StorageError:
            return fail()
        return self._change(key, fence, writeFile, data)

    def delete(self, key: str, fence: ILease | None = None) -> Deferred[None]:
        return self._change(key, fence, deleteFile)

    def list(self, prefix: str) -> Deferred[list[str]]:
        try:
            checkPrefix(prefix)
        except StorageError:
            return fail()
        return self._run(prefix, listFiles, self._folder, prefix)

    def _newest(self, name: str) -> int:
        """
        The newest token of the lease C{name}, as persisted.
        """
        data = readFile(self._folder, tokenFile(name))
        try:
            return int(data or b"0")
        except ValueError:
            raise StorageError(name, "the lease's token file is damaged") from None

    def _holdLock(self) -> bool:
        """
        Whether the state directory's lock is held, taking the one the
        place shares when the storage was given none.
        """
        if self._lock.held():
            return True
        if self._givenLock is not None:
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
                leases = self._place.leases
                token = leases.take(name, seconds, self, self._newest(name))
                if token is None:
                    return None
                lease = Lease(name, token, seconds, self._renew, self._release)
                try:
                    writeFile(self._folder, tokenFile(name), str(token).encode("ascii"))
                except BaseException:
                    leases.release(lease)
                    raise
                return lease

        return self._run(name, take)

    def _renew(self, lease: Lease) -> Deferred[None]:
        if self._closed:
            return fail(LeaseLost(lease.name, "the storage is closed"))

        def renew() -> None:
            with self._place.exclusive:
                if not (self._lock.held() and self._place.leases.renew(lease)):
                    raise LeaseLost(lease.name, "is no longer held by this storage")

        return self._run(lease.name, renew)

    def _release(self, lease: Lease) -> Deferred[None]:
        if self._closed:
            return succeed(None)

        def release() -> None:
            with self._place.exclusive:
                self._place.leases.release(lease)

        return self._run(lease.name, release)

    def watch(self, prefix: str, callback: Callable[[str], object]) -> Deferred[Callable[[], None]]:
        try:
            checkPrefix(prefix)
        except StorageError:
            return fail()
        if self._closed:
            return fail(StorageError(prefix, "the storage is closed"))
        return succeed(self._place.feed.watch(self, prefix, callback))

    def close(self) -> Deferred[None]:
        """
        Give up the leases (and the lock, when the storage is the last on
        the directory to share the one taken for them), stop the watches,
        then the storage's own threads, even when letting go failed.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        self._place.feed.forget(self)
        self._place.reads.discard(self._reads)

        def letGo() -> None:
            with self._place.exclusive:
                try:
                    self._place.leases.releaseAll(self)
                finally:
                    self._folder.close()
                    _leave(self._place)

        d = self._workers.run(letGo)
        own = self._ownWorkers
        if own is not None:
            d.addBoth(lambda result: own.stop().addCallback(lambda _: result))
        stopped = self._reads.stop()
        d.addBoth(lambda result: stopped.addCallback(lambda _: result))
        return d
