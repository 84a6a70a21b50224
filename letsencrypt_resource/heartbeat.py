"""
A cluster node's heartbeat: its records (see L{noderecord}) rewritten in
the cluster's storage when what it serves changes and every
L{BEAT_INTERVAL} seconds otherwise, so that C{status}, run on any node,
tells which node serves which certificate and which nodes were not seen
lately.

Each heartbeat writes the C{seen} record, and the C{serving} record when
what the node serves differs from what it last wrote: one or two writes,
whatever the number of domain sets.  Changes that come together (a start,
a renewal received by every set at once) are written together,
L{CHANGE_DELAY} seconds after the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .certificates import InvalidCertificate
from .managed import ManagedCertificate
from .noderecord import (
    BEAT_INTERVAL,
    PROVISIONAL,
    STALE_AFTER,
    seenJSON,
    seenKey,
    serialHex,
    servingJSON,
    servingKey,
)
from .nodewatch import NodeWatch
from .reporting import unexpected
from .resource import LetsEncryptResource
from .storage.interface import IStorage, StorageError

#: Seconds from a change of what the node serves to its heartbeat.
CHANGE_DELAY = 1.0


def served(certificates: Iterable[ManagedCertificate]) -> dict[str, str]:
    """
    What a node serves for C{certificates}, as its record says it (see
    C{NodeRecord.serving}); a set with no certificate yet is left out, and
    so is one whose stored certificate, read unparsed, cannot be read at
    its first use (it serves none: see
    L{letsencrypt_resource.certificates.RecordedCertificate}).
    """
    serving = {}
    for certificate in certificates:
        current = certificate.current
        if current is None:
            continue
        if current.provisional:
            serving[certificate.label] = PROVISIONAL
            continue
        try:
            serving[certificate.label] = serialHex(current.certificate.serial_number)
        except InvalidCertificate:
            continue
    return serving


class NodeHeartbeat(Service):
    """
    Writes the node's record, one write at a time.
    """

    _log = Logger()

    def __init__(
        self,
        storage: IStorage,
        node: str,
        certificates: Callable[[], Iterable[ManagedCertificate]],
        clock: IReactorTime,
        watch: NodeWatch | None = None,
    ):
        """
        @param storage: The cluster's storage.
        @param node: The node's name.
        @param certificates: Gives the domain sets the node serves.
        @param watch: Hears the other nodes while the heartbeat runs, and
            checks after each beat which became stale.
        """
        self._storage = storage
        self._node = node
        self._certificates = certificates
        self._clock = clock
        self._next: IDelayedCall | None = None
        self._writing: Deferred[None] | None = None
        self._again = False
        self._failing = False
        self._serving: dict[str, str] | None = None
        self._watch = watch

    def startService(self) -> None:
        super().startService()
        if self._watch is not None:
            hearing = Deferred.fromCoroutine(self._watch.start(self._storage))
            hearing.addErrback(lambda failure: unexpected(self._log, failure))
        self._beatIn(0)

    def changed(self) -> None:
        """
        What the node serves changed: write the record soon.
        """
        if self.running:
            self._beatIn(CHANGE_DELAY)

    def _beatIn(self, seconds: float) -> None:
        """
        Make the next heartbeat come within C{seconds}.
        """
        if self._writing is not None:
            self._again = True
            return
        due = self._clock.seconds() + seconds
        if self._next is not None:
            if self._next.getTime() <= due:
                return
            self._next.cancel()
        self._next = self._clock.callLater(seconds, self._beat)

    def _beat(self) -> None:
        self._next = None
        self._writing = Deferred.fromCoroutine(self._write())
        self._writing.addBoth(self._written)

    async def _write(self) -> None:
        serving = served(self._certificates())
        try:
            if serving != self._serving:
                await self._storage.store(servingKey(self._node), servingJSON(self._node, serving))
                self._serving = serving
            seen = seenJSON(self._node, self._clock.seconds())
            await self._storage.store(seenKey(self._node), seen)
        except StorageError as error:
            if not self._failing:
                self._failing = True
                events.CLUSTER_HEARTBEAT_FAILED.emit(
                    self._log,
                    node_name=self._node,
                    details=error.message,
                    stale_minutes=round(STALE_AFTER / 60),
                )
            return
        if self._failing:
            self._failing = False
            events.CLUSTER_HEARTBEAT_BACK.emit(self._log, node_name=self._node)

    def _written(self, result: object) -> None:
        self._writing = None
        if isinstance(result, Failure):
            unexpected(self._log, result)
        if self._watch is not None:
            self._watch.check()
        again, self._again = self._again, False
        if self.running:
            self._beatIn(CHANGE_DELAY if again else BEAT_INTERVAL)

    def stopService(self) -> Deferred[None]:
        """
        Stop beating, once the write under way, if any, has ended.
        """
        super().stopService()
        if self._watch is not None:
            self._watch.stop()
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if self._writing is None:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._writing.addBoth(lambda _: waiting.callback(None))
        return waiting


def heartbeatOf(resource: LetsEncryptResource, clock: IReactorTime) -> NodeHeartbeat:
    """
    The heartbeat of the cluster node that runs C{resource}, told of each
    certificate it puts in service, hearing the other nodes' heartbeats.
    """
    node = resource.options.nodeName
    heartbeat = NodeHeartbeat(
        resource.storage,
        node,
        lambda: resource.managed.values(),
        clock,
        NodeWatch(node, clock),
    )
    resource.deliveryListeners.append(heartbeat.changed)
    return heartbeat
