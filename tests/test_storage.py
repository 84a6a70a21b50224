"""
Tests for L{letsencrypt_resource.storage}: the contract suite against every
store, then what is particular to the state directory's, and the records.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from letsencrypt_resource.certificatefacts import CertificateFacts
from letsencrypt_resource.certificates import bundleDigest
from letsencrypt_resource.safefs import HeldFolder
from letsencrypt_resource.storage import records as records_module
from letsencrypt_resource.storage.directory import DirectoryStorage, InThisThread, tokenFile
from letsencrypt_resource.storage.interface import (
    MAX_VALUE,
    TOO_LARGE,
    LeaseLost,
    StorageError,
    ValueTooLarge,
)
from letsencrypt_resource.storage.leases import LeaseTable
from letsencrypt_resource.storage.lock import StateDirectoryLocked, StateLock
from letsencrypt_resource.storage.memory import MemoryStorage, SharedMemory
from letsencrypt_resource.storage.records import (
    AccountRecord,
    Records,
    accountKey,
    certificateKey,
    parseRecord,
    parseRenewalState,
    renewalKey,
    renewalStateJSON,
)

from .helpers import newSigner, provisionalFor, sharedKey
from .helpers.files import PermissiveUmaskMixin, modeOf, readBytes, writeBytes
from .helpers.storagecontract import StorageContractMixin

DOMAINS = ("example.com", "www.example.com")
T = TypeVar("T")


def given(value: T | None) -> T:
    """
    C{value}, which the test expects to be there.
    """
    if value is None:
        raise AssertionError("nothing where a value was expected")
    return value


class MemoryStorageContractTests(StorageContractMixin, TestCase):
    """
    L{MemoryStorage} keeps the storage contract; the nodes share one
    L{SharedMemory}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.shared = SharedMemory(self.clock)

    def makeStorage(self) -> MemoryStorage:
        return MemoryStorage(self.shared)


class DirectoryStorageContractTests(StorageContractMixin, TestCase):
    """
    L{DirectoryStorage} keeps the storage contract; the nodes are storage
    objects on one state directory, each taking its lock itself.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = os.path.join(os.path.abspath(self.mktemp()), "state")
        os.makedirs(self.path, 0o700)

    def makeStorage(self) -> DirectoryStorage:
        return DirectoryStorage(self.path, reactor, clock=self.clock)


class DirectoryStorageGivenLockContractTests(DirectoryStorageContractTests):
    """
    L{DirectoryStorage} keeps the storage contract when every node is given
    the one held lock of the state directory, as the server's parts are.
    """

    def setUp(self) -> None:
        super().setUp()
        self.lock = StateLock(self.path)
        self.lock.acquire()
        self.addCleanup(self.lock.release)

    def makeStorage(self) -> DirectoryStorage:
        return DirectoryStorage(self.path, reactor, clock=self.clock, lock=self.lock)


class QueuedWorkers:
    """
    Workers that run nothing until told to, in the calling thread.
    """

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[..., Any], Deferred[Any]]] = []

    def run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queued.append((lambda: f(*args), d))
        return d

    def runAll(self) -> None:
        """
        Run what is queued, in order.
        """
        while self.queued:
            f, d = self.queued.pop(0)
            try:
                result = f()
            except Exception:
                d.errback()
            else:
                d.callback(result)


class DirectoryStorageTests(PermissiveUmaskMixin, TestCase):
    """
    What L{DirectoryStorage} adds to the contract: the state directory's
    layout, safe files, the work off the reactor thread, the lock.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = os.path.join(self.base, "state")

    def storage(self, **kwargs: Any) -> DirectoryStorage:
        storage = DirectoryStorage(self.path, reactor, **kwargs)
        self.addCleanup(storage.close)
        return storage

    def test_offTheReactorThread(self) -> None:
        """
        Nothing touches the file system until the workers run the job: the
        reactor thread only queues it.
        """
        workers = QueuedWorkers()
        storage = DirectoryStorage(self.path, reactor, workers=workers)
        stored = storage.store("certificates/a.pem", b"value")
        self.assertFalse(os.path.exists(self.path))
        workers.runAll()
        self.successResultOf(stored)
        self.assertEqual(readBytes(os.path.join(self.path, "certificates", "a.pem")), b"value")
        loaded = storage.load("certificates/a.pem")
        self.assertNoResult(loaded)
        workers.runAll()
        self.assertEqual(self.successResultOf(loaded), b"value")
        closed = storage.close()
        workers.runAll()
        self.successResultOf(closed)

    def test_inThisThread(self) -> None:
        """
        With L{InThisThread} for its workers, every file operation is done
        in the caller's thread before the call returns: the Deferred has
        fired (the status read without a reactor, and the tests' state
        directories, read so).
        """
        threads: list[threading.Thread] = []

        def write() -> None:
            threads.append(threading.current_thread())

        storage = DirectoryStorage(self.path, Clock(), workers=InThisThread())
        self.successResultOf(storage._workers.run(write))
        self.successResultOf(storage.store("certificates/a.pem", b"value"))
        self.assertEqual(self.successResultOf(storage.load("certificates/a.pem")), b"value")
        self.successResultOf(storage.close())
        self.assertEqual(threads, [threading.current_thread()])

    async def test_ownThread(self) -> None:
        """
        By default the storage works in a thread of its own, which
        L{DirectoryStorage.close} stops.
        """
        storage = self.storage()
        threads: list[threading.Thread] = []
        storage._workers.run(lambda: threads.append(threading.current_thread()))
        await storage.store("a", b"v")
        self.assertIsNot(threads[0], threading.main_thread())
        await storage.close()
        self.assertFalse(threads[0].is_alive())

    def test_relativePathKeptAfterChdir(self) -> None:
        """
        A relative state directory names the folder it named when the
        storage was made, whatever the working folder becomes.
        """
        workers = QueuedWorkers()
        here = os.getcwd()
        self.addCleanup(os.chdir, here)
        os.chdir(self.base)
        storage = DirectoryStorage("state", reactor, workers=workers)
        stored = storage.store("certificates/a.pem", b"value")
        workers.runAll()
        self.successResultOf(stored)
        elsewhere = os.path.join(self.base, "elsewhere")
        os.mkdir(elsewhere)
        os.chdir(elsewhere)
        loaded = storage.load("certificates/a.pem")
        workers.runAll()
        self.assertEqual(self.successResultOf(loaded), b"value")
        closed = storage.close()
        workers.runAll()
        self.successResultOf(closed)

    async def test_modes(self) -> None:
        """
        Values are files 0600 in folders 0700, even under umask 0.
        """
        storage = self.storage()
        await storage.store("accounts/a.json", b"secret")
        self.assertEqual(modeOf(os.path.join(self.path, "accounts", "a.json")), 0o600)
        self.assertEqual(modeOf(os.path.join(self.path, "accounts")), 0o700)
        self.assertEqual(modeOf(self.path), 0o700)

    async def test_sameLayout(self) -> None:
        """
        The records are the files of the state directory's documented
        layout, as before the storage: what the storage writes lands there,
        and a file put there is read through it.
        """
        account = AccountRecord(sharedKey("rsa-2048"), "https://ca/acct/1", ("mailto:a@b",))
        certificate = provisionalFor(newSigner(), DOMAINS)
        records = Records(self.storage())
        await records.saveAccount("https://ca/dir", account)
        await records.saveCertificate(DOMAINS, certificate)
        await records.saveProvisionalSigner(b"signer")
        files = {
            os.path.relpath(os.path.join(folder, name), self.path)
            for folder, _, names in os.walk(self.path)
            for name in names
            if not name.startswith(".")
        }
        self.assertEqual(
            files,
            {
                accountKey("https://ca/dir"),
                "certificates/example.com_www.example.com.pem",
                "provisional-signer.pem",
            },
        )
        self.assertEqual(
            readBytes(os.path.join(self.path, "certificates", "example.com_www.example.com.pem")),
            certificate.toPEM(),
        )
        self.assertRegex(accountKey("https://ca/dir"), r"^accounts/[0-9a-f]{24}\.json$")
        os.mkdir(os.path.join(self.path, "renewal"), 0o700)
        writeBytes(
            os.path.join(self.path, "renewal", "example.com_www.example.com.json"),
            b'{"failures": 2}',
        )
        self.assertEqual(await records.loadRenewalState(DOMAINS), {"failures": 2})

    async def test_plantedFileLink(self) -> None:
        """
        A link planted at a key's file is not read through nor listed, and
        a store replaces the link, leaving its target alone.
        """
        storage = self.storage()
        await storage.store("provisional-signer.pem", b"old")
        victim = os.path.join(self.base, "victim")
        writeBytes(victim, b"precious")
        link = os.path.join(self.path, "certificates", "a.pem")
        os.mkdir(os.path.dirname(link), 0o700)
        os.symlink(victim, link)
        error = await self.assertFailure(storage.load("certificates/a.pem"), StorageError)
        self.assertIn("symbolic link", str(error))
        self.assertEqual(await storage.list(""), ["provisional-signer.pem"])
        await storage.store("certificates/a.pem", b"new")
        self.assertEqual((readBytes(victim), readBytes(link)), (b"precious", b"new"))

    async def test_plantedFolderLink(self) -> None:
        """
        A link planted as a folder of the state directory is neither
        written nor read nor listed through.
        """
        storage = self.storage()
        elsewhere = os.path.join(self.base, "elsewhere")
        os.mkdir(elsewhere, 0o755)
        writeBytes(os.path.join(elsewhere, "a.pem"), b"theirs")
        os.mkdir(self.path, 0o700)
        os.symlink(elsewhere, os.path.join(self.path, "certificates"))
        calls: list[Deferred[Any]] = [
            storage.store("certificates/b.pem", b"v"),
            storage.load("certificates/a.pem"),
            storage.delete("certificates/a.pem"),
            storage.list("certificates/"),
        ]
        for call in calls:
            error = await self.assertFailure(call, StorageError)
            self.assertIn("symbolic link", str(error))
        self.assertEqual(await storage.list(""), [])
        self.assertEqual(sorted(os.listdir(elsewhere)), ["a.pem"])

    async def test_stateDirectoryReplaced(self) -> None:
        """
        The state directory, moved away after the storage's first use and
        replaced by a link to another folder, is neither read nor written
        through the link, nor through the folder held open: the path is
        checked again, and the link refused.
        """
        storage = self.storage()
        await storage.store("certificates/a.pem", b"old")
        moved = os.path.join(self.base, "moved")
        os.rename(self.path, moved)
        elsewhere = os.path.join(self.base, "elsewhere")
        os.mkdir(elsewhere, 0o700)
        writeBytes(os.path.join(elsewhere, "b.pem"), b"theirs")
        os.symlink(elsewhere, self.path)
        calls: list[Deferred[Any]] = [
            storage.store("certificates/a.pem", b"new"),
            storage.load("b.pem"),
            storage.list(""),
        ]
        for call in calls:
            error = await self.assertFailure(call, StorageError)
            self.assertIn("symbolic link", str(error))
        self.assertEqual(readBytes(os.path.join(moved, "certificates", "a.pem")), b"old")
        self.assertEqual(os.listdir(elsewhere), ["b.pem"])
        os.unlink(self.path)
        os.mkdir(self.path, 0o700)
        self.assertIsNone(await storage.load("certificates/a.pem"))

    async def test_loadManyByFolder(self) -> None:
        """
        C{loadMany} opens each folder once for the keys in it, and a
        missing folder's keys load as C{None}.
        """
        storage = self.storage()
        keys = ["certificates/a.pem", "renewal/a.json", "certificates/b.pem", "renewal/b.json"]
        for key in keys:
            await storage.store(key, key.encode())
        opened: list[list[str]] = []
        real = HeldFolder.open

        def counting(held: HeldFolder, parts: list[str], **kwargs: Any) -> Any:
            opened.append(list(parts))
            return real(held, parts, **kwargs)

        self.patch(HeldFolder, "open", counting)
        values = await storage.loadMany([*keys, "accounts/a.json"])
        self.assertEqual(values, {**{k: k.encode() for k in keys}, "accounts/a.json": None})
        self.assertEqual(sorted(opened), [["accounts"], ["certificates"], ["renewal"]])

    async def test_loadManyNamesTheFile(self) -> None:
        """
        When one of the files C{loadMany} reads cannot be, its failure
        names that file.
        """
        storage = self.storage()
        await storage.store("renewal/a.json", b"a")
        fifo = os.path.join(self.path, "renewal", "b.json")
        os.mkfifo(fifo)
        error: Any = await self.assertFailure(
            storage.loadMany(["renewal/a.json", "renewal/b.json"]), StorageError
        )
        self.assertEqual(error.key, fifo)
        self.assertIn("not a regular file", error.message)

    async def test_notAFile(self) -> None:
        """
        A FIFO planted at a key's name is refused at once, not read from
        (which would block the thread).
        """
        storage = self.storage()
        os.mkdir(self.path, 0o700)
        os.mkdir(os.path.join(self.path, "renewal"), 0o700)
        os.mkfifo(os.path.join(self.path, "renewal", "a.json"))
        error = await self.assertFailure(storage.load("renewal/a.json"), StorageError)
        self.assertIn("not a regular file", str(error))

    def test_oneReadAFile(self) -> None:
        """
        A file read whole at the first read of C{loadMany} (a regular file
        reads short only at its end) is not read again: one read a file.
        """
        workers = QueuedWorkers()
        storage = DirectoryStorage(self.path, reactor, workers=workers)
        values = {"renewal/a.json": b"a" * 10, "certificates/a.pem": b"p" * 5000}
        for key, value in values.items():
            storage.store(key, value)
        workers.runAll()
        reads: list[int] = []
        read = os.read

        def counted(fd: int, size: int) -> bytes:
            reads.append(size)
            return read(fd, size)

        self.patch(os, "read", counted)
        loaded = storage.loadMany(list(values))
        workers.runAll()
        self.assertEqual(self.successResultOf(loaded), values)
        self.assertEqual(len(reads), 2)

    def readWith(self, values: dict[str, bytes], read: Callable[[int, int], bytes]) -> Any:
        """
        Store C{values} in a directory storage, then load them together and
        each alone with C{os.read} replaced by C{read}.

        @return: what C{loadMany} gave, or the L{StorageError} it failed
            with, and the same of each C{load}.
        """
        workers = QueuedWorkers()
        storage = DirectoryStorage(self.path, reactor, workers=workers)
        for key, value in values.items():
            storage.store(key, value)
        workers.runAll()
        self.patch(os, "read", read)
        loads = [storage.loadMany(list(values))] + [storage.load(key) for key in values]
        workers.runAll()
        results: list[Any] = []
        for loaded in loads:
            if isinstance(loaded.result, Failure):
                results.append(self.failureResultOf(loaded, StorageError).value)
            else:
                results.append(self.successResultOf(loaded))
        return results

    def test_readsAFileThatGrewWhole(self) -> None:
        """
        A file that grew after its size was taken (longer than the first
        read asks for) is read to its end.
        """
        path = os.path.join(self.path, "certificates", "a.pem")
        value = bytes(range(256)) * 20
        more = b"more" * 3000
        read = os.read
        sizes: list[int] = []

        def growing(fd: int, size: int) -> bytes:
            if not sizes:
                with open(path, "ab") as stream:
                    stream.write(more)
            sizes.append(size)
            return read(fd, size)

        loaded, alone = self.readWith({"certificates/a.pem": value}, growing)
        self.assertEqual(loaded, {"certificates/a.pem": value + more})
        self.assertEqual(alone, value + more)
        self.assertEqual(sizes[0], len(value) + 1)

    def test_shortFirstReadReadOn(self) -> None:
        """
        A first read that returns less than the size the file reported
        (Linux returns at most about 2 GiB a read; some file systems read
        short) is not taken as the end of the file: it is read on.
        """
        read = os.read
        value = bytes(range(256)) * 40

        def short(fd: int, size: int) -> bytes:
            return read(fd, min(size, 4096))

        loaded, alone = self.readWith({"certificates/a.pem": value}, short)
        self.assertEqual((loaded, alone), ({"certificates/a.pem": value}, value))

    def test_largeFileRefusedUnread(self) -> None:
        """
        A file larger than C{MAX_VALUE} bytes is refused as unusable,
        naming its path, without being read: C{load} fails, C{loadMany}
        gives that error as its value and reads the others.
        """
        values = {"renewal/a.json": b"{}", "certificates/a.pem": b"pem"}
        workers = QueuedWorkers()
        for key, value in values.items():
            DirectoryStorage(self.path, reactor, workers=workers).store(key, value)
        workers.runAll()
        path = os.path.join(self.path, "certificates", "a.pem")
        with open(path, "wb") as stream:
            stream.truncate(MAX_VALUE + 1)
        read = os.read
        sizes: list[int] = []

        def counted(fd: int, size: int) -> bytes:
            sizes.append(os.fstat(fd).st_size)
            return read(fd, size)

        workers = QueuedWorkers()
        storage = DirectoryStorage(self.path, reactor, workers=workers)
        self.patch(os, "read", counted)
        loads = [storage.loadMany(list(values)), storage.load("certificates/a.pem")]
        workers.runAll()
        many = self.successResultOf(loads[0])
        alone = self.failureResultOf(loads[1], ValueTooLarge).value
        self.assertEqual(many["renewal/a.json"], b"{}")
        for error in (many["certificates/a.pem"], alone):
            self.assertIsInstance(error, ValueTooLarge)
            self.assertEqual((error.key, error.message), (path, TOO_LARGE))
        self.assertEqual(sizes, [2])
        alone = storage.load("renewal/a.json")
        workers.runAll()
        self.assertEqual(self.successResultOf(alone), b"{}")

    def test_largeFileInTheBatch(self) -> None:
        """
        At start-up (L{Records.loadSets}), one record over C{MAX_VALUE}
        bytes is that set's damaged record: the batch is still read by one
        C{loadMany}, no record is read alone, and the other sets load.
        """
        sets = [("a.example.com",), ("b.example.com",)]
        workers = QueuedWorkers()
        storage = DirectoryStorage(self.path, reactor, workers=workers)
        storage.store(renewalKey(sets[0]), b"{}")
        storage.store(renewalKey(sets[1]), b'{"failures": 2}')
        workers.runAll()
        path = os.path.join(self.path, renewalKey(sets[0]))
        with open(path, "ab") as stream:
            stream.truncate(MAX_VALUE + 1)
        self.patch(storage, "load", lambda key: self.fail(f"{key} was loaded alone"))
        loading = Records(storage).loadSets(sets)
        workers.runAll()
        first, second = self.successResultOf(loading)
        error = self.assertRaises(StorageError, first.renewalState)
        self.assertEqual((error.key, error.message), (path, TOO_LARGE))
        self.assertEqual(first.certifiedKey(), None)
        self.assertEqual(second.renewalState(), {"failures": 2})

    def test_fileGrownPastTheBoundRefused(self) -> None:
        """
        A file that grows past C{MAX_VALUE} bytes after its size was taken
        is refused as unusable once C{MAX_VALUE} bytes and one are read, not
        read to its end.
        """
        path = os.path.join(self.path, "renewal", "a.json")
        read = os.read
        sizes: list[int] = []

        def growing(fd: int, size: int) -> bytes:
            if not sizes:
                with open(path, "ab") as stream:
                    stream.truncate(4 * MAX_VALUE)
            sizes.append(size)
            return read(fd, size)

        many, alone = self.readWith({"renewal/a.json": b"{}"}, growing)
        for error in (many["renewal/a.json"], alone):
            self.assertIsInstance(error, ValueTooLarge)
            self.assertEqual((error.key, error.message), (path, TOO_LARGE))
        self.assertLessEqual(sum(sizes), MAX_VALUE + 1)

    async def test_tokensPersisted(self) -> None:
        """
        The newest token of each lease is kept in C{.leases/<sha256 of the
        name>}, 0600, which no key reaches; a damaged one is an error, not a restart
        from 1.
        """
        storage = self.storage()
        lease = given(await storage.lease("example.com", 30))
        path = os.path.join(self.path, tokenFile("example.com"))
        self.assertEqual((readBytes(path), modeOf(path)), (str(lease.token).encode(), 0o600))
        await lease.release()
        writeBytes(path, b"garbage")
        await self.assertFailure(storage.lease("example.com", 30), StorageError)

    async def test_givenLock(self) -> None:
        """
        With the state directory's lock given, leases are given while it is
        held, and only then; closing the storage leaves the lock to its
        holder.
        """
        os.mkdir(self.path, 0o700)
        lock = StateLock(self.path)
        self.addCleanup(lock.release)
        storage = self.storage(lock=lock)
        self.assertIsNone(await storage.lease("example.com", 30))
        lock.acquire()
        self.assertIsNotNone(await storage.lease("example.com", 30))
        await storage.close()
        self.assertTrue(lock.held())

    async def test_otherProcessLocked(self) -> None:
        """
        While another holder has the state directory's lock (another
        process: the lock is per open file), no lease is given; the lost
        lock makes a held lease fail to renew.
        """
        storage = self.storage()
        lease = given(await storage.lease("example.com", 30))
        os.unlink(os.path.join(self.path, "lock"))
        other = StateLock(self.path)
        other.acquire()
        self.addCleanup(other.release)
        await self.assertFailure(lease.renew(), StorageError)
        self.assertIsNone(await storage.lease("account", 30))

    async def test_lockKeptWhileOpen(self) -> None:
        """
        Without a lock given, the storage objects on a directory share one:
        taken at the first lease, kept (another process cannot take it, even
        after the lease expired) until the last of them is closed.
        """
        clock = Clock()
        first, second = self.storage(clock=clock), self.storage(clock=clock)
        other = StateLock(self.path)
        self.addCleanup(other.release)
        await given(await first.lease("example.com", 30)).release()
        clock.advance(3600)
        self.assertRaises(StateDirectoryLocked, other.acquire)
        self.assertIsNotNone(await second.lease("example.com", 30))
        await first.close()
        self.assertRaises(StateDirectoryLocked, other.acquire)
        await second.close()
        other.acquire()

    async def test_fencedWriteNeedsLock(self) -> None:
        """
        A fenced write is refused with L{LeaseLost}, and nothing written,
        once the process no longer holds the state directory's lock:
        released, or taken by another process after the lock file was
        replaced; writes without a fence go on.
        """
        os.mkdir(self.path, 0o700)
        lock = StateLock(self.path)
        lock.acquire()
        storage = self.storage(lock=lock)
        lease = given(await storage.lease("example.com", 30))
        lock.release()
        await self.assertFailure(storage.store("a", b"v", fence=lease), LeaseLost)
        await self.assertFailure(storage.delete("a", fence=lease), LeaseLost)
        self.assertIsNone(await storage.load("a"))
        await storage.store("b", b"unfenced")
        own = self.storage()
        ownLease = given(await own.lease("account", 30))
        os.unlink(os.path.join(self.path, "lock"))
        other = StateLock(self.path)
        other.acquire()
        self.addCleanup(other.release)
        await self.assertFailure(own.store("a", b"v", fence=ownLease), LeaseLost)
        self.assertIsNone(await own.load("a"))

    async def test_closeStopsThreadOnFailure(self) -> None:
        """
        When letting go of the leases fails, L{DirectoryStorage.close}
        fails with it but still stops the storage's own thread, and lets
        the lock go.
        """
        storage = self.storage()
        threads: list[threading.Thread] = []
        storage._workers.run(lambda: threads.append(threading.current_thread()))
        given(await storage.lease("example.com", 30))

        def broken(table: LeaseTable, holder: object) -> None:
            raise RuntimeError("broken")

        self.patch(LeaseTable, "releaseAll", broken)
        await self.assertFailure(storage.close(), RuntimeError)
        self.assertFalse(threads[0].is_alive())
        other = StateLock(self.path)
        other.acquire()
        other.release()


class RecordsTests(TestCase):
    """
    Tests for L{Records} over a L{MemoryStorage}.
    """

    def setUp(self) -> None:
        self.storage = MemoryStorage(SharedMemory(Clock()))
        self.records = Records(self.storage)

    async def test_account(self) -> None:
        """
        An account is stored under its CA's key and read back; none is
        C{None}.
        """
        record = AccountRecord(sharedKey("ecdsa-p256"), "https://ca/acct/7")
        self.assertIsNone(await self.records.loadAccount("https://ca/dir"))
        await self.records.saveAccount("https://ca/dir", record)
        loaded = given(await self.records.loadAccount("https://ca/dir"))
        self.assertEqual(loaded.toJSON(), record.toJSON())
        self.assertEqual(await self.storage.list("accounts/"), [accountKey("https://ca/dir")])

    async def test_certificates(self) -> None:
        """
        Certificates are listed by name without being read, and read one
        by one.
        """
        signer = newSigner()
        sets = [("a.example.com",), ("b.example.com", "c.example.com")]
        for domains in sets:
            key = await self.records.saveCertificate(domains, provisionalFor(signer, domains))
            self.assertEqual(key, certificateKey(domains))
        self.assertEqual(
            await self.records.certificateNames(),
            ["a.example.com", "b.example.com_c.example.com"],
        )
        loaded = given(await self.records.loadCertificate(sets[1]))
        self.assertEqual(loaded.domains, sets[1])
        self.assertIsNone(await self.records.loadCertificate(("d.example.com",)))

    async def test_damaged(self) -> None:
        """
        A damaged record fails with a L{StorageError} naming its key.
        """
        await self.storage.store(certificateKey(DOMAINS), b"not a certificate")
        await self.storage.store("renewal/example.com_www.example.com.json", b"[]")
        error: Any = await self.assertFailure(self.records.loadCertificate(DOMAINS), StorageError)
        self.assertEqual(error.key, certificateKey(DOMAINS))
        await self.assertFailure(self.records.loadRenewalState(DOMAINS), StorageError)

    async def test_loadSets(self) -> None:
        """
        L{Records.loadSets} reads the records of several domain sets by one
        C{loadMany}, parsing none until asked.
        """
        signer = newSigner()
        sets = [("a.example.com",), ("b.example.com",)]
        stored = provisionalFor(signer, sets[0])
        await self.records.saveCertificate(sets[0], stored)
        await self.records.saveRenewalState(sets[1], {"failures": 2})
        await self.storage.store(renewalKey(sets[0]), b"damaged")
        other = MemoryStorage(self.storage._shared)
        asked: list[list[str]] = []

        def loadMany(keys: list[str]) -> Deferred[dict[str, bytes | None]]:
            asked.append(list(keys))
            return other.loadMany(keys)

        self.patch(self.storage, "loadMany", loadMany)
        self.patch(self.storage, "load", lambda key: self.fail(f"{key} was loaded alone"))
        first, second = await self.records.loadSets(sets)
        self.assertEqual(
            asked,
            [
                [
                    renewalKey(sets[0]),
                    certificateKey(sets[0]),
                    renewalKey(sets[1]),
                    certificateKey(sets[1]),
                ]
            ],
        )
        self.assertEqual(given(first.certifiedKey()).toPEM(), stored.toPEM())
        self.assertRaises(StorageError, first.renewalState)
        self.assertEqual((second.renewalState(), second.certifiedKey()), ({"failures": 2}, None))

    async def test_loadSetsNamesEachSetOnce(self) -> None:
        """
        L{Records.loadSets} makes each set's file name (L{domainsFileName})
        once for both its keys, which are those of L{renewalKey} and
        L{certificateKey}, a long set's hashed name among them.
        """
        sets = [("a.example.com",), ("b.example.com", "c.example.com"), ("x" * 63,) * 5]
        for domains in sets:
            await self.records.saveRenewalState(domains, {"failures": 1})
        asked: list[str] = []
        loadMany = self.storage.loadMany

        def recorded(keys: list[str]) -> Deferred[dict[str, bytes | None]]:
            asked.extend(keys)
            return loadMany(keys)

        named: list[tuple[str, ...]] = []
        fileName = records_module.domainsFileName

        def counted(domains: tuple[str, ...]) -> str:
            named.append(domains)
            return fileName(domains)

        self.patch(self.storage, "loadMany", recorded)
        self.patch(records_module, "domainsFileName", counted)
        loaded = await self.records.loadSets(sets)
        self.assertEqual(named, sets)
        self.patch(records_module, "domainsFileName", fileName)
        self.assertEqual(
            asked,
            [key for domains in sets for key in (renewalKey(domains), certificateKey(domains))],
        )
        self.assertEqual([s.renewalState() for s in loaded], [{"failures": 1}] * 3)

    def test_storedSetPlain(self) -> None:
        """
        C{StoredSet}, made for every set at start-up, is a plain class with
        slots (no C{attrs} C{__init__}, no C{__dict__}) that keeps what it
        is given and shows it in its C{repr}.
        """
        error = StorageError("renewal/x.json", "cannot be read")
        stored = records_module.StoredSet(DOMAINS, error, b"pem")
        self.assertFalse(attrs.has(records_module.StoredSet))
        self.assertFalse(hasattr(stored, "__dict__"))
        self.assertEqual(
            (stored.domains, stored.renewal, stored.certificate), (DOMAINS, error, b"pem")
        )
        self.assertEqual(repr(stored), f"StoredSet({DOMAINS!r}, {error!r}, b'pem')")
        self.assertIs(self.assertRaises(StorageError, stored.renewalState), error)

    async def test_loadSetsChecked(self) -> None:
        """
        C{StoredSet.certifiedKey} given the digest of the certificate record
        as it passed its checks leaves the key unparsed when the record
        still has that digest (a record that is no key reads all the same);
        given another digest or none, it parses the record whole, which
        refuses it.  The checked record is vouched for the set's names
        (L{CertifiedKey.vouchedNames}) only with facts that name them (a
        digest alone may have been copied from another set's state); those
        facts are kept as given.
        """
        stored = provisionalFor(newSigner(), DOMAINS)
        await self.records.saveCertificate(DOMAINS, stored)
        [records] = await self.records.loadSets([DOMAINS])
        digest = bundleDigest(stored.toPEM())
        checked = given(records.certifiedKey(digest))
        self.assertEqual(
            (checked.keyChecked, checked.toPEM(), checked.vouchedNames),
            (True, stored.toPEM(), None),
        )
        facts = CertificateFacts(digest, *stored.validity, stored.issuerText, frozenset(DOMAINS))
        named = given(records.certifiedKey(digest, facts))
        self.assertEqual((named.keyChecked, named.vouchedNames), (True, frozenset(DOMAINS)))
        # The facts given are kept as they are, their names vouched for: no
        # copy is made per set.
        self.assertIs(named.recorded, facts)
        self.assertIs(named.vouchedNames, facts.names)
        unchecked = given(records.certifiedKey())
        self.assertEqual((unchecked.keyChecked, unchecked.vouchedNames), (False, None))
        damaged = b"no key\n" + stored.fullchainPEM
        await self.storage.store(certificateKey(DOMAINS), damaged)
        [records] = await self.records.loadSets([DOMAINS])
        self.assertFalse(given(records.certifiedKey(bundleDigest(damaged))).keyMatches)
        for digest in (bundleDigest(stored.toPEM()), None):
            self.assertRaises(StorageError, records.certifiedKey, digest)

    async def test_loadSetsKeysNamedOnError(self) -> None:
        """
        C{StoredSet} makes the key of a record only to name it in the
        error of a record that does not parse: start-up parses every set's
        records.
        """
        stored = provisionalFor(newSigner(), DOMAINS)
        await self.records.saveCertificate(DOMAINS, stored)
        await self.records.saveRenewalState(DOMAINS, {"failures": 2})
        [records] = await self.records.loadSets([DOMAINS])
        made: list[tuple[str, ...]] = []

        def counted(keyOf: Callable[[tuple[str, ...]], str]) -> Callable[..., str]:
            return lambda domains: made.append(domains) or keyOf(domains)

        self.patch(records_module, "renewalKey", counted(renewalKey))
        self.patch(records_module, "certificateKey", counted(certificateKey))
        self.assertEqual(records.renewalState(), {"failures": 2})
        self.assertEqual(given(records.certifiedKey()).toPEM(), stored.toPEM())
        self.assertEqual(made, [])
        damaged = records_module.StoredSet(DOMAINS, b"damaged", b"damaged")
        renewal = self.assertRaises(StorageError, damaged.renewalState)
        certificate = self.assertRaises(StorageError, damaged.certifiedKey)
        self.assertEqual(
            (renewal.key, certificate.key, made),
            (renewalKey(DOMAINS), certificateKey(DOMAINS), [DOMAINS, DOMAINS]),
        )

    async def test_noDigestOfUnvouchedRecord(self) -> None:
        """
        A certificate record no digest vouches for (its state has none) is
        parsed in full, its digest not computed; one it vouches for is
        digested once, and a checked record that does not parse names its
        key.
        """
        stored = provisionalFor(newSigner(), DOMAINS)
        await self.records.saveCertificate(DOMAINS, stored)
        [records] = await self.records.loadSets([DOMAINS])
        digested: list[bytes] = []

        def counted(pem: bytes) -> str:
            digested.append(pem)
            return bundleDigest(pem)

        self.patch(records_module, "bundleDigest", counted)
        self.assertTrue(given(records.certifiedKey()).keyMatches)
        self.assertEqual(digested, [])
        digest = bundleDigest(stored.toPEM())
        self.assertEqual(given(records.certifiedKey(digest)).toPEM(), stored.toPEM())
        self.assertEqual(digested, [stored.toPEM()])
        damaged = stored.keyPEM + b"-----BEGIN CERTIFICATE-----\nAAAA\n"
        error = self.assertRaises(
            StorageError,
            records_module.StoredSet(DOMAINS, None, damaged).certifiedKey,
            bundleDigest(damaged),
        )
        self.assertEqual(error.key, certificateKey(DOMAINS))

    async def test_loadSetsOneByOne(self) -> None:
        """
        When the records cannot be read together, L{Records.loadSets} reads
        each alone: one that fails fails only its own set's parse.
        """
        signer = newSigner()
        sets = [("a.example.com",), ("b.example.com",)]
        stored = provisionalFor(signer, sets[1])
        await self.records.saveCertificate(sets[1], stored)
        failing = certificateKey(sets[0])
        load = self.storage.load

        def refusing(key: str) -> Deferred[bytes | None]:
            if key == failing:
                return fail(StorageError(key, "cannot be read"))
            return load(key)

        self.patch(self.storage, "load", refusing)
        first, second = await self.records.loadSets(sets)
        error = self.assertRaises(StorageError, first.certifiedKey)
        self.assertEqual((error.key, first.renewalState()), (failing, None))
        self.assertEqual(given(second.certifiedKey()).toPEM(), stored.toPEM())

    def _countLoads(self) -> list[Any]:
        """
        Count the calls of C{json.loads} for the rest of the test: the list
        of the documents it was given.
        """
        loaded: list[Any] = []
        loads = json.loads

        def counted(data: Any) -> Any:
            loaded.append(data)
            return loads(data)

        self.patch(json, "loads", counted)
        return loaded

    def test_renewalStateAsJSONReadsIt(self) -> None:
        """
        A renewal state is read as C{json.loads} reads its bytes, whatever
        their encoding (a BOM, UTF-16, text that is not UTF-8, a lone
        surrogate) or what follows the document, and refused with the very
        error it gives; what L{renewalStateJSON} writes is scanned without
        C{json.loads} (at 10,000 sets, its calls around the scan are a
        third of the time).
        """
        loads = json.loads
        loaded = self._countLoads()
        state = {"last_error": "caf\u00e9 \ud800", "failures": 2, "ari_window": [1.5, 2.5]}
        self.assertEqual(parseRenewalState(renewalStateJSON(state)), state)
        self.assertEqual(parseRenewalState(b"{}"), {})
        self.assertEqual(loaded, [])
        utf8 = b'{"last_error": "caf\xc3\xa9"}'
        documents = [
            utf8,
            b"\xef\xbb\xbf" + utf8,
            '{"a": 1}'.encode("utf-16"),
            '{"a": 1}'.encode("utf-16-le"),
            '{"a": 1}'.encode("utf-32-be"),
            b'{"a": 1}\n',
            b' {"a": 1}',
        ]
        for data in documents:
            self.assertEqual(parseRenewalState(data), loads(data), data)
        for data in (
            b"{\xff}",
            b'{"a": "\xc3"}',
            b"{",
            b"",
            b'{"a": 1} x',
            b'{"a": 1}{}',
            b"{\x00",
        ):
            expected = self.assertRaises(ValueError, loads, data)
            error = self.assertRaises(ValueError, parseRenewalState, data)
            self.assertEqual(str(error), f"is not a valid renewal state: {expected}")

    def test_renewalStateTrailingWhitespaceScannedOnce(self) -> None:
        """
        A renewal state followed by the whitespace C{json.loads} allows
        after a document (a hand-edited state ending in a newline) is
        scanned once, without C{json.loads}; other text after it (a
        vertical tab, a no-break space) is still refused with the error of
        C{json.loads}.
        """
        loads = json.loads
        loaded = self._countLoads()
        for data in (b'{"a": 1}\n', b'{"a": [1, 2]} \t\r\n\n'):
            self.assertEqual(parseRenewalState(data), loads(data), data)
        self.assertEqual(loaded, [])
        for data in (b'{"a": 1}\x0b', b'{"a": 1}\n\xc2\xa0'):
            expected = self.assertRaises(ValueError, loads, data)
            error = self.assertRaises(ValueError, parseRenewalState, data)
            self.assertEqual(str(error), f"is not a valid renewal state: {expected}")

    def test_renewalStateNestedTooDeep(self) -> None:
        """
        A renewal state nested deeper than the scanner can go (100,000
        lists) is refused as a state that does not parse, a C{ValueError}
        naming it, not a C{RecursionError}; so is its record.
        """
        depth = 100_000
        data = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
        error = self.assertRaises(ValueError, parseRenewalState, data)
        self.assertEqual(str(error), "is not a valid renewal state: nested too deep")
        refused = self.assertRaises(
            StorageError, parseRecord, "renewal/example.com.json", data, parseRenewalState
        )
        self.assertIn("renewal/example.com.json", str(refused))
        self.assertIn("nested too deep", str(refused))

    async def test_challenges(self) -> None:
        """
        A pending challenge is readable by every node until deleted; a
        token that is not an ACME token is refused before any key is made
        of it.
        """
        other = Records(MemoryStorage(self.storage._shared))
        await self.records.saveChallenge("tok_EN-1", "tok_EN-1.thumbprint")
        self.assertEqual(await other.loadChallenge("tok_EN-1"), "tok_EN-1.thumbprint")
        self.assertEqual(await other.pendingChallenges(), ["tok_EN-1"])
        await self.records.deleteChallenge("tok_EN-1")
        self.assertIsNone(await other.loadChallenge("tok_EN-1"))
        for token in ("../lock", "a/b", "", "a.b", "x" * 256):
            await self.assertFailure(self.records.saveChallenge(token, "k"), StorageError)
            await self.assertFailure(self.records.loadChallenge(token), StorageError)

    async def test_fenced(self) -> None:
        """
        Writes pass their fence to the storage: one under a lease taken
        over is refused.
        """
        old = given(await self.storage.lease("example.com", 30))
        await old.release()
        await self.storage.lease("example.com", 30)
        await self.assertFailure(
            self.records.saveRenewalState(DOMAINS, {}, fence=old), StorageError
        )
        self.assertIsNone(await self.records.loadRenewalState(DOMAINS))
