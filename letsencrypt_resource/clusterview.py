"""
The cluster view of C{status}: for each domain set, which node holds its
order lease and until when, and, for each node, the serial it serves and
when it was last seen, as the node records (see L{noderecord}) and the
database's leases tell.  It costs three reads of the database (the list
of node records, the records, the leases), whatever the number of sets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from .domains import domainsLabel
from .leasing import ORDER_LEASES, orderLease
from .noderecord import NODES, STALE_AFTER, NodeRecord, readRecords
from .reporting import when
from .storage.cluster import ClusterStorage
from .storage.interface import StorageError


async def nodeRecords(storage: ClusterStorage) -> list[NodeRecord]:
    """
    The records of the cluster's nodes, by name (see L{readRecords}).

    @raise StorageError: when they cannot be read.
    """
    keys = await storage.list(NODES)
    found = await storage.loadMany(keys) if keys else {}
    # A record too large to read is read as none.
    return readRecords({k: v for k, v in found.items() if not isinstance(v, StorageError)})


async def addClusterView(
    rows: list[dict[str, Any]], storage: ClusterStorage, clock: IReactorTime
) -> None:
    """
    Add to each status row its C{cluster} entry: the order C{lease} (its
    C{node} and C{until} when, or C{None}) and, by node name, what that
    node serves for the set (C{serving}: a serial, C{"provisional"} or
    C{None}), when it was C{last_seen}, and whether it is C{stale} (not
    seen for L{STALE_AFTER} seconds).  When the database cannot be read,
    the entry holds the C{error} alone.
    """
    try:
        records = await nodeRecords(storage)
        leases = await storage.leaseNodes(ORDER_LEASES)
    except StorageError as error:
        for row in rows:
            row["cluster"] = {"error": error.message}
        return
    now = clock.seconds()
    for row in rows:
        domains = tuple(row["names"])
        label = domainsLabel(domains)
        lease = leases.get(orderLease(domains))
        row["cluster"] = {
            "lease": None if lease is None else {"node": lease[0], "until": when(lease[1])},
            "nodes": {
                record.node: {
                    "serving": record.serving.get(label),
                    "last_seen": when(record.seen),
                    "stale": now - record.seen > STALE_AFTER,
                }
                for record in records
            },
        }
