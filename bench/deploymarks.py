"""
The cost, on a cluster's PostgreSQL, of recording the deploy runs due on
the other nodes before each certificate stored (see
L{letsencrypt_resource.deployflags.markOthersDue}: one list of the node
records, one read of their C{seen} records, one write per other node):

    .venv/bin/python bench/deploymarks.py                 # 2 nodes, 200 stores, 3 rounds
    .venv/bin/python bench/deploymarks.py --nodes 5 --stores 500 --rounds 5

A real PostgreSQL (L{letsencrypt_resource.testing.postgres}, started for
the run) holds the C{seen} records of C{--nodes} nodes, all seen now.  The
first node stores C{--stores} certificates, one after the other as its
write lane does, through the same L{ClusterStorage} (sealed, cached)
that a node uses: alternately without the hook (as before) and with it,
C{--rounds} times each.  It prints, per store, the wall time and the
process's CPU time of each run, and the difference of the medians.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402,F401  (puts the checkout first on sys.path)
from twisted.internet import task  # noqa: E402

from letsencrypt_resource.deployflags import markOthersDue  # noqa: E402
from letsencrypt_resource.noderecord import seenJSON, seenKey  # noqa: E402
from letsencrypt_resource.provisional import makeSigner  # noqa: E402
from letsencrypt_resource.storage.cluster import ClusterStorage  # noqa: E402
from letsencrypt_resource.storage.directory import DirectoryStorage  # noqa: E402
from letsencrypt_resource.storage.postgres import PostgresStorage  # noqa: E402
from letsencrypt_resource.storage.records import Records  # noqa: E402
from letsencrypt_resource.storage.sealing import Sealer  # noqa: E402
from letsencrypt_resource.testing import postgres  # noqa: E402


async def timed(records: Records, stores: int, run: str, certificate: Any) -> tuple[float, float]:
    """
    Store C{stores} certificates one after the other.

    @return: The wall and CPU seconds per store.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(stores):
        await records.saveCertificate((f"{run}-{i}.example.test",), certificate)
    return (time.perf_counter() - wall) / stores, (time.process_time() - cpu) / stores


async def main(reactor: Any, options: argparse.Namespace) -> None:
    folder = tempfile.mkdtemp(prefix="deploymarks-")
    keyFile = os.path.join(folder, "cluster.key")
    with open(keyFile, "wb") as stream:
        stream.write(os.urandom(32))
    os.chmod(keyFile, 0o600)
    server = postgres.server()
    conninfo = server.conninfo(server.newSchema())
    storage = ClusterStorage(
        PostgresStorage(conninfo, reactor, node="node-1"),
        DirectoryStorage(os.path.join(folder, "state"), reactor),
        Sealer.fromKeyFile(keyFile, "node-1"),
        reactor,
        keyFile,
    )
    for n in range(1, options.nodes + 1):
        await storage.store(seenKey(f"node-{n}"), seenJSON(f"node-{n}", time.time()))
    certificate = makeSigner("bench", ["example.test"], datetime.datetime.now(datetime.UTC))
    records = Records(storage)
    # Warm the connections and the schema's caches.
    await timed(records, 20, "warm", certificate)
    results: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    hook = lambda domains: markOthersDue(storage, "node-1", time.time, domains)  # noqa: E731
    for r in range(options.rounds):
        for name in ("without", "with"):
            records.beforeCertificate = hook if name == "with" else None
            result = await timed(records, options.stores, f"{name}{r}", certificate)
            results[name].append(result)
            print(
                f"round {r} {name:7} hook: {result[0] * 1000:.2f} ms wall,"
                f" {result[1] * 1000:.2f} ms CPU per store"
            )
    medians = {k: [statistics.median(x[i] for x in v) for i in (0, 1)] for k, v in results.items()}
    print(
        f"{options.nodes} nodes, {options.stores} stores x {options.rounds} rounds:"
        f" median per store without {medians['without'][0] * 1000:.2f} ms wall"
        f" / {medians['without'][1] * 1000:.2f} ms CPU,"
        f" with {medians['with'][0] * 1000:.2f} ms wall / {medians['with'][1] * 1000:.2f} ms CPU;"
        f" extra {(medians['with'][0] - medians['without'][0]) * 1000:.2f} ms wall,"
        f" {(medians['with'][1] - medians['without'][1]) * 1000:.2f} ms CPU"
    )
    await storage.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--nodes", type=int, default=2, help="nodes in the cluster (2)")
    parser.add_argument("--stores", type=int, default=200, help="certificates per run (200)")
    parser.add_argument("--rounds", type=int, default=3, help="runs with and without (3)")
    task.react(main, [parser.parse_args()])
