"""
The storage of a node, as its resource options ask: the state directory
alone, or, with C{cluster_database}, the cluster's database sealed with the
key of C{cluster_key_file}, the state directory as its cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import ResourceOptions
from .storage.cluster import ClusterStorage
from .storage.directory import DirectoryStorage
from .storage.interface import IStorage
from .storage.lock import StateLock
from .storage.sealing import Sealer


def makeStorage(
    options: ResourceOptions,
    reactor: Any,
    lock: StateLock | None,
    onRefused: Callable[[], object],
) -> IStorage:
    """
    The storage for C{options}.

    @param lock: The state directory's lock, under which its storage gives
        leases (see L{DirectoryStorage}).
    @param onRefused: Called when the cluster's database was first used
        with another key file (event 20220).
    @raise KeyFileError: when C{cluster_key_file} cannot be used.
    @raise StorageError: when C{cluster_database} is not a connection
        string.
    """
    if options.clusterDatabase is None or options.clusterKeyFile is None:
        # Alone, the sets' records are read ahead at start-up (a cluster's
        # storage reads them from its database).
        return DirectoryStorage(options.stateDirectory, reactor, lock=lock, readAhead=True)
    directory = DirectoryStorage(options.stateDirectory, reactor, lock=lock)
    # psycopg is the cluster extra's: imported only for a cluster.
    from .storage.postgres import PostgresStorage

    sealer = Sealer.fromKeyFile(options.clusterKeyFile, options.nodeName)
    return ClusterStorage(
        PostgresStorage(options.clusterDatabase, reactor, node=options.nodeName),
        directory,
        sealer,
        reactor,
        options.clusterKeyFile,
        onRefused,
    )


def stopReactor(reactor: Any) -> Callable[[], object]:
    """
    What a server does when its node is refused by the cluster: stop.
    """

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    return stop
