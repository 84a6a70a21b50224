"""
What a cluster node hears of the others: each node's C{seen} record is
rewritten every minute (see L{letsencrypt_resource.heartbeat}), and the
database tells every node of each write.  A node not heard from for
L{STALE_AFTER} seconds, by this node's own clock (so that no clock skew
between nodes counts), is reported once (event 20224), and again when it
is heard from (event 20225).  It costs no query: the writes' notices reach
every node anyway; the check runs after each heartbeat.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from . import events
from .noderecord import NODES, STALE_AFTER
from .storage.interface import IStorage, StorageError


class NodeWatch:
    """
    The time each other node was last heard from, and which are stale.
    """

    _log = Logger()

    def __init__(self, node: str, clock: IReactorTime):
        """
        @param node: This node's name.
        """
        self._node = node
        self._clock = clock
        self._heard: dict[str, float] = {}
        self._stale: set[str] = set()
        self._stop: Callable[[], None] | None = None
        self._stopped = False

    async def start(self, storage: IStorage) -> None:
        """
        Hear the node records' writes in C{storage}; when that cannot be
        set up, hear nothing (the heartbeat goes on).
        """
        try:
            self._stop = await storage.watch(NODES, self.changed)
        except StorageError:
            return
        if self._stopped:
            self.stop()

    def stop(self) -> None:
        """
        Stop hearing, now or as soon as the watch is set up.
        """
        self._stopped = True
        if self._stop is not None:
            self._stop()
            self._stop = None

    def changed(self, key: str) -> None:
        """
        The record at C{key} was written.
        """
        node, _, record = key[len(NODES) :].rpartition("/")
        if record != "seen" or node == self._node:
            return
        self._heard[node] = self._clock.seconds()
        if node in self._stale:
            self._stale.discard(node)
            events.CLUSTER_NODE_BACK.emit(self._log, node_name=self._node, other=node)

    def check(self) -> None:
        """
        Report the nodes that have just become stale.
        """
        now = self._clock.seconds()
        for node, heard in self._heard.items():
            if node not in self._stale and now - heard > STALE_AFTER:
                self._stale.add(node)
                events.CLUSTER_NODE_STALE.emit(
                    self._log,
                    node_name=self._node,
                    other=node,
                    minutes=round((now - heard) / 60),
                )
