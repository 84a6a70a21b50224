"""
Whether the deploy command is due to run for a domain set: a fact of each
node, since each node runs the command for the certificate it puts in
service, and a run that failed on one node says nothing of another.  It is
recorded under a key of the node's own, C{deploys/<node_name>/<set>},
which only that node writes: set when the node puts a new certificate in
service, deleted once its own run of the command worked.  Without a
cluster the node is the only one, and the record is in its state
directory.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from . import events
from .coroutines import deferred
from .managed import ManagedCertificate
from .storage.interface import IStorage, StorageError
from .storage.records import domainsFileName

#: The prefix of the records of the runs due.
DEPLOYS = "deploys/"
#: The value of a record.
DUE = b"due\n"


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

    @deferred
    async def load(self) -> None:
        """
        Read which runs the node recorded as due when it last ran.
        """
        prefix = f"{DEPLOYS}{self._node}/"
        try:
            keys = await self._storage.list(prefix)
        except StorageError as error:
            events.DEPLOY_DUE_UNSAVED.emit(self._log, key=prefix, error=str(error))
            return
        self._loaded.update(keys)

    def wasDue(self, certificate: ManagedCertificate) -> bool:
        """
        Whether the node recorded the run for C{certificate} as due when it
        last ran (read by L{load}), told once.
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
        the same record asked before (one at a time: a lock per record,
        dropped once no write waits for it).
        """
        key = deployKey(self._node, certificate.domains)
        self._unsaved.pop(key, None)
        lock = self._writing.get(key)
        if lock is None:
            lock = self._writing[key] = DeferredLock()

        def ended(result: object) -> object:
            if not lock.locked and self._writing.get(key) is lock:
                del self._writing[key]
            return result

        return lock.run(self._write, key, certificate).addBoth(ended)

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
