"""
Whether the deploy command is due to run for a domain set: a fact of each
node, since each node runs the command for the certificate it puts in
service, and a run that failed on one node says nothing of another.  It is
recorded under a key of the node's own, C{deploys/<node_name>/<set>}:
set when the node puts a new certificate in service, deleted once its own
run of the command worked.  Without a cluster the node is the only one,
and the record is in its state directory.

In a cluster, a node that stores a new certificate first sets the record
of every other node seen lately (by its C{seen} record, within
L{MARK_WITHIN}: see L{letsencrypt_resource.noderecord}; see
L{markOthersDue}), and deletes that of a node gone longer, so that a node
that was down, or still loading, when it was stored runs its command for
it at its start: every node that reads the new certificate also reads
that record, listed with the others after the sets are loaded (one list,
whatever the number of sets).  A node that was running puts it in service
as it hears of it, and its own run clears the same record: it runs once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, FirstError, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .clusteroptions import parseNodeName
from .coroutines import deferred
from .managed import ManagedCertificate
from .noderecord import NODES, STALE_AFTER, readRecords, seenKey
from .reporting import unexpected
from .storage.interface import IStorage, StorageError
from .storage.records import domainsFileName

_T = TypeVar("_T")

#: The prefix of the records of the runs due.
DEPLOYS = "deploys/"
#: The value of a record.
DUE = b"due\n"
#: Seconds since its last heartbeat within which a node is taken for down
#: a while (a restart, an upgrade, maintenance: its run is recorded as due)
#: rather than gone for good (a container made again under a new name):
#: a week, that is 3,360 times L{STALE_AFTER}.
MARK_WITHIN = 3360 * STALE_AFTER
#: Seconds after L{MARK_WITHIN} during which the record of a gone node is
#: still deleted when a certificate of its set is stored: longer than a
#: certificate lives (at most 100 days), so every set it had a record of
#: was stored again meanwhile, and no record of it is left; after that
#: the node costs no write.
FORGET_WITHIN = MARK_WITHIN + 100 * 86400.0


def deployKey(node: str, domains: tuple[str, ...]) -> str:
    """
    The key of the record that the run for C{domains} is due on the node
    named C{node}.
    """
    return f"{DEPLOYS}{node}/{domainsFileName(domains)}"


#: The node label of the records of a server without a cluster: the host
#: name, C{node_name}'s default, changes when a container is made again or
#: a host renamed, and its due runs would be forgotten.
SINGLE_NODE = "single"


def recordsNode(nodeName: str, shared: bool) -> str:
    """
    The node label under which a server records its due runs: its
    C{node_name} on a storage other nodes share (each node its own),
    L{SINGLE_NODE} on a storage of its own.
    """
    return nodeName if shared else SINGLE_NODE


def otherNodes(keys: Iterable[str], node: str) -> list[str]:
    """
    The nodes other than C{node} that C{keys}, the node records' keys,
    know: those with a C{seen} record, under a name a node may have.
    """
    others = []
    for key in keys:
        name = key[len(NODES) :].rpartition("/")[0]
        if key != seenKey(name) or name == node:
            continue
        try:
            others.append(parseNodeName(name))
        except ValueError:
            continue
    return sorted(others)


@deferred
async def markOthersDue(
    storage: IStorage, node: str, now: Callable[[], float], domains: tuple[str, ...]
) -> None:
    """
    Record the run for C{domains} as due on every node of the cluster but
    C{node}, which is about to store a new certificate for them, that was
    seen within L{MARK_WITHIN} seconds of C{now()}; delete the record of
    each node gone longer (up to L{FORGET_WITHIN}: older ones were
    deleted then).  One list of the node records, one read of their
    C{seen} records, then one write for each of those nodes.

    @raise StorageError: when that cannot be done; the certificate is not
        stored then, and the write is tried again (see
        L{letsencrypt_resource.writequeue}).
    """
    others = otherNodes(await storage.list(NODES), node)
    if not others:
        return
    found = await storage.loadMany([seenKey(other) for other in others])
    # A record too large to read is read as none: a node not known.
    seen = readRecords({k: v for k, v in found.items() if isinstance(v, bytes)})
    at = now()
    writes = []
    for record in seen:
        key = deployKey(record.node, domains)
        if at - record.seen <= MARK_WITHIN:
            writes.append(storage.store(key, DUE))
        elif at - record.seen <= FORGET_WITHIN:
            writes.append(storage.delete(key))
    try:
        await gatherResults(writes, consumeErrors=True)
    except FirstError as error:
        error.subFailure.raiseException()


class DeployFlags:
    """
    The records of the runs due on one node: written one at a time for
    each set, in the order asked, so that a run cleared just after it was
    set stays cleared; a write that failed is written again at the next
    L{retry}.
    """

    def __init__(self, storage: IStorage, node: str, log: Logger):
        self._storage = storage
        self._node = node
        self._log = log
        self._loaded: set[str] = set()
        self._writing: dict[str, DeferredLock] = {}
        self._unsaved: dict[str, ManagedCertificate] = {}
        # The records this node wrote while L{load} lists them, if it does.
        self._written: set[str] | None = None

    @deferred
    async def load(self) -> None:
        """
        Read which runs are recorded as due on this node: those it left
        when it last ran, and those other nodes recorded for it as they
        stored new certificates.  A record this node writes meanwhile (its
        run for a certificate it put in service) is its own to clear: it
        is not due again.
        """
        prefix = f"{DEPLOYS}{self._node}/"
        # A write under way when the list starts may not be in it yet.
        written = set(self._writing)
        self._written = written
        try:
            keys = await self._storage.list(prefix)
        except StorageError as error:
            events.DEPLOY_DUE_UNSAVED.emit(self._log, key=prefix, error=str(error))
            return
        finally:
            self._written = None
        self._loaded.update(set(keys) - written)

    def dropLeft(self) -> None:
        """
        Delete the records read by L{load} that no L{wasDue} asked for: of
        sets this node does not manage (dropped from its configuration, or
        only other nodes'), so that they do not pile up.  One at a time, so
        that thousands of them leave the storage's other connections to
        the first check; one that cannot be is event 20229, and it and
        those after it are read again at the next start.
        """
        left, self._loaded = self._loaded, set()
        if left:
            self._dropAll(sorted(left)).addErrback(self._unexpected)

    @deferred
    async def _dropAll(self, keys: list[str]) -> None:
        for key in keys:
            if not await self._locked(key, self._delete, key):
                return

    def _unexpected(self, failure: Failure) -> None:
        unexpected(self._log, failure)

    @deferred
    async def _delete(self, key: str) -> bool:
        """
        Delete the record at C{key}; a failure is event 20229.

        @return: Whether it was deleted.
        """
        try:
            await self._storage.delete(key)
        except StorageError as error:
            events.DEPLOY_DUE_UNSAVED.emit(self._log, key=key, error=str(error))
            return False
        return True

    @property
    def waiting(self) -> bool:
        """
        Whether some run read by L{load} was not asked for yet (see
        L{wasDue}).
        """
        return bool(self._loaded)

    def wasDue(self, certificate: ManagedCertificate) -> bool:
        """
        Whether the run for C{certificate} was recorded as due on this
        node, by itself when it last ran or by another node since (read by
        L{load}), told once.
        """
        key = deployKey(self._node, certificate.domains)
        if key not in self._loaded:
            return False
        self._loaded.discard(key)
        return True

    def save(self, certificate: ManagedCertificate) -> Deferred[None]:
        """
        Record whether the run for C{certificate} is due on this node, as
        its C{deployPending} says when the write comes, after the writes of
        the same record asked before.
        """
        key = deployKey(self._node, certificate.domains)
        self._unsaved.pop(key, None)
        self._loaded.discard(key)
        if self._written is not None:
            self._written.add(key)
        return self._locked(key, self._write, key, certificate)

    def _locked(self, key: str, write: Callable[..., Deferred[_T]], *args: object) -> Deferred[_T]:
        """
        Call C{write} with C{args} after the writes of the record C{key}
        asked before (one at a time: a lock per record, dropped once no
        write waits for it).
        """
        lock = self._writing.get(key)
        if lock is None:
            lock = self._writing[key] = DeferredLock()

        def ended(result: object) -> object:
            if not lock.locked and self._writing.get(key) is lock:
                del self._writing[key]
            return result

        return lock.run(write, *args).addBoth(ended)

    @deferred
    async def _write(self, key: str, certificate: ManagedCertificate) -> None:
        """
        Write the record at C{key} as C{certificate} now says; a failure
        is event 20229, and the write is tried again at L{retry}.
        """
        due = certificate.deployPending
        try:
            if due:
                await self._storage.store(key, DUE)
            else:
                await self._storage.delete(key)
        except StorageError as error:
            events.DEPLOY_DUE_UNSAVED.emit(self._log, key=key, error=str(error))
            self._unsaved[key] = certificate

    def retry(self) -> None:
        """
        Write again the records whose last write failed.
        """
        for certificate in list(self._unsaved.values()):
            self.save(certificate)


class DueAtStart(Service):
    """
    Reads the runs due on this node once the domain sets loaded at start
    are in service, not before: a certificate another node stored while
    they were read has its record written before it, so it is read then.
    """

    def __init__(
        self, loaded: Callable[[], Deferred[None]], read: Callable[[], object], log: Logger
    ):
        """
        @param loaded: Returns a Deferred that fires once the sets are loaded.
        @param read: Reads the runs due, and asks for them (see
            L{letsencrypt_resource.deploy.DeployHooks.readRecorded}).
        @param log: Where a bug goes.
        """
        self._loaded = loaded
        self._read = read
        self._log = log
        self._waiting: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        waiting = self._waiting = self._loaded()
        waiting.addCallback(lambda _: self._read() if self.running else None)
        waiting.addErrback(lambda failure: unexpected(self._log, failure))

    def stopService(self) -> None:
        super().stopService()
        if self._waiting is not None:
            self._waiting.cancel()
            self._waiting = None
