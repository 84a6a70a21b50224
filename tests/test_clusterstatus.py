"""
The cluster view of C{status}: node records and order leases read from a
real PostgreSQL, as a node and as the operations command without a server
read them; and how it is shown to people.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.clusterview import addClusterView
from letsencrypt_resource.display import formatStatus
from letsencrypt_resource.leasing import orderLease
from letsencrypt_resource.noderecord import (
    STALE_AFTER,
    seenJSON,
    seenKey,
    servingJSON,
    servingKey,
)
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.storage.cluster import ClusterStorage
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.storage.interface import MAX_VALUE
from letsencrypt_resource.storage.memory import MemoryStorage, SharedMemory
from letsencrypt_resource.storage.pgsql import keyBytes
from letsencrypt_resource.storage.postgres import PostgresStorage
from letsencrypt_resource.storage.sealing import Sealer, deriveKey
from tests.helpers.outage import SwitchedStorage
from tests.helpers.postgres import PostgresCase
from tests.helpers.processcase import environment, operationsScript

SCRIPT = operationsScript()

NODE = """\
[resources/le]
type = lets-encrypt
address = 127.0.0.1
port = {port}
cluster_database = {database}
cluster_key_file = {keyFile}
node_name = node-3

[services/files]
type = https
name = files-https
address = 127.0.0.1
port = {servicePort}
path = /nonexistent/public
ssl_domains = a.example
"""


def seconds(iso: str) -> float:
    """
    The time C{iso} (as status shows it) in seconds since the epoch.
    """
    return datetime.datetime.fromisoformat(iso).timestamp()


class ClusterViewTests(PostgresCase):
    """
    What nodes wrote, read by another node.
    """

    def setUp(self) -> None:
        super().setUp()
        self.keyFile = os.path.abspath(self.mktemp())
        with open(self.keyFile, "wb") as stream:
            stream.write(os.urandom(32))
        os.chmod(self.keyFile, 0o600)

    def node(self, name: str) -> ClusterStorage:
        """
        The storage of the node C{name}, as a server builds it, closed at
        the end of the test.
        """
        state = os.path.abspath(self.mktemp())
        os.makedirs(state)
        storage = ClusterStorage(
            PostgresStorage(self.conninfo, reactor, node=name),
            DirectoryStorage(state, reactor),
            Sealer.fromKeyFile(self.keyFile, name),
            reactor,
            self.keyFile,
        )
        self.addCleanup(storage.close)
        return storage

    async def test_view(self) -> None:
        """
        Each set's row tells which node holds its order lease and until
        when (by the database's clock), and for each node what it serves
        for the set and when it was last seen; a node not seen for
        L{STALE_AFTER} seconds is stale.
        """
        now = reactor.seconds()
        first, second, reader = self.node("node-1"), self.node("node-2"), self.node("node-3")
        await first.store(seenKey("node-1"), seenJSON("node-1", now))
        await first.store(servingKey("node-1"), servingJSON("node-1", {"a.example": "0ABC"}))
        await second.store(seenKey("node-2"), seenJSON("node-2", now - STALE_AFTER - 1))
        await second.store(
            servingKey("node-2"),
            servingJSON("node-2", {"a.example": "0ABC", "b.example": "provisional"}),
        )
        lease = await first.lease(orderLease(("a.example",)), 300)
        assert lease is not None
        rows: list[dict[str, Any]] = [{"names": ["a.example"]}, {"names": ["b.example"]}]
        await addClusterView(rows, reader, reactor)
        a, b = (row["cluster"] for row in rows)
        self.assertEqual(a["lease"]["node"], "node-1")
        self.assertLess(abs(seconds(a["lease"]["until"]) - (now + 300)), 5)
        self.assertIsNone(b["lease"])
        self.assertEqual(
            a["nodes"]["node-1"],
            {"serving": "0ABC", "last_seen": a["nodes"]["node-1"]["last_seen"], "stale": False},
        )
        self.assertLess(abs(seconds(a["nodes"]["node-1"]["last_seen"]) - now), 1)
        self.assertEqual(
            (a["nodes"]["node-2"]["serving"], a["nodes"]["node-2"]["stale"]), ("0ABC", True)
        )
        self.assertEqual(b["nodes"]["node-1"]["serving"], None)
        self.assertEqual(b["nodes"]["node-2"]["serving"], "provisional")
        await lease.release()
        await addClusterView(rows, reader, reactor)
        self.assertIsNone(rows[0]["cluster"]["lease"])

    async def test_recordOfAnotherNodeLeftOut(self) -> None:
        """
        A record stored under one node's key that names another node is
        left out, as is one that is not a record.
        """
        node = self.node("node-1")
        now = reactor.seconds()
        await node.store(seenKey("node-2"), seenJSON("node-1", now))
        await node.store(seenKey("node-4"), b"not json")
        await node.store(seenKey("node-1"), seenJSON("node-1", now))
        rows: list[dict[str, Any]] = [{"names": ["a.example"]}]
        await addClusterView(rows, node, reactor)
        self.assertEqual(list(rows[0]["cluster"]["nodes"]), ["node-1"])

    async def test_tooLargeRecordLeftOut(self) -> None:
        """
        A node record too large to read is left out as a damaged one: the
        others are still shown.
        """
        node = self.node("node-1")
        now = reactor.seconds()
        await node.store(seenKey("node-2"), seenJSON("node-2", now))
        await node.store(seenKey("node-1"), seenJSON("node-1", now))
        self.admin().execute(
            "UPDATE letsencrypt_values SET value = %s WHERE key = %s",
            (b"x" * (MAX_VALUE + 1), keyBytes(seenKey("node-2"))),
        )
        rows: list[dict[str, Any]] = [{"names": ["a.example"]}]
        await addClusterView(rows, node, reactor)
        self.assertEqual(list(rows[0]["cluster"]["nodes"]), ["node-1"])

    async def test_forgedHolder(self) -> None:
        """
        A lease holder that names no node, as one a database writer could
        set (holders are not sealed), is shown as C{unknown}.
        """
        node = self.node("node-1")
        lease = await node.lease(orderLease(("a.example",)), 300)
        assert lease is not None
        self.admin().execute("UPDATE letsencrypt_leases SET holder = %s", ("\x1b[2Jevil:1:2",))
        rows: list[dict[str, Any]] = [{"names": ["a.example"]}]
        await addClusterView(rows, node, reactor)
        self.assertEqual(rows[0]["cluster"]["lease"]["node"], "unknown")

    async def test_commandWithoutServer(self) -> None:
        """
        The operations command, with no server running on its node, reads
        the cluster view from the database: in its JSON, and in its table.
        """
        if not os.path.exists(SCRIPT):
            self.skipTest(f"{SCRIPT} is not installed: pip install the package")
        node = self.node("node-1")
        await node.store(seenKey("node-1"), seenJSON("node-1", reactor.seconds()))
        await node.store(servingKey("node-1"), servingJSON("node-1", {"a.example": "0ABC"}))
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "server.ini")
        with open(path, "w") as stream:
            stream.write(
                NODE.format(
                    port=freeTCPPort(),
                    servicePort=freeTCPPort(),
                    database=self.conninfo,
                    keyFile=self.keyFile,
                )
            )
        out, err, code = await getProcessOutputAndValue(
            SCRIPT, ["status", "--json", "--config", path], env=environment(), path=folder
        )
        self.assertEqual(code, 0, (out + err).decode())
        [row] = json.loads(out)
        self.assertEqual(row["cluster"]["nodes"]["node-1"]["serving"], "0ABC")
        self.assertIsNone(row["cluster"]["lease"])
        out, err, code = await getProcessOutputAndValue(
            SCRIPT, ["status", "--config", path], env=environment(), path=folder
        )
        self.assertEqual(code, 0, (out + err).decode())
        self.assertIn("Cluster nodes:\n  node-1: last seen ", out.decode())
        table = out.decode().split("Cluster nodes:")[1].splitlines()
        self.assertEqual(table[3].split(), ["names", "order", "lease", "node-1"])
        self.assertEqual(table[5].split(), ["a.example", "none", "0ABC"])


class UnreachableTests(SynchronousTestCase):
    """
    The cluster view while the database cannot be reached.
    """

    def test_error(self) -> None:
        """
        Each row's cluster entry holds the error alone, and the table says
        the database cannot be read.
        """
        clock = Clock()
        storage = ClusterStorage(
            SwitchedStorage(MemoryStorage(SharedMemory(clock)), down=True),
            MemoryStorage(SharedMemory(clock)),
            Sealer(deriveKey(b"k" * 32), "node-1"),
            clock,
            "/etc/cluster.key",
        )
        rows: list[dict[str, Any]] = [{"names": ["a.example"]}]
        self.successResultOf(addClusterView(rows, storage, clock))
        self.assertEqual(list(rows[0]["cluster"]), ["error"])
        self.assertIn("cannot be reached", rows[0]["cluster"]["error"])
        storage.availability.close()


class DisplayTests(SynchronousTestCase):
    """
    The cluster view in the status table.
    """

    def test_table(self) -> None:
        """
        After the status table: each node and when it was last seen (stale
        ones marked), then each set's order lease and each node's serial.
        """
        row: dict[str, Any] = {
            "names": ["a.example"],
            "server_running": True,
            "serving": {"files": "ca"},
            "provisional": False,
            "issuer": "CN=CA",
            "not_after": "2027-01-01T00:00:00+00:00",
            "days_left": 30.0,
            "retry": False,
            "reason": "lifetime",
            "why": "",
            "next_check": "2026-12-01T00:00:00+00:00",
            "failures": 0,
            "last_error": None,
            "cluster": {
                "lease": {"node": "node-2", "until": "2026-11-29T12:05:00+00:00"},
                "nodes": {
                    "node-1": {"serving": "0ABC", "last_seen": "T1", "stale": False},
                    "node-2": {"serving": None, "last_seen": "T2", "stale": True},
                },
            },
        }
        text = formatStatus([row], True, "/state")
        cluster = text.split("\n\n", 1)[1].splitlines()
        self.assertEqual(
            cluster[:3],
            ["Cluster nodes:", "  node-1: last seen T1", "  node-2: last seen T2, STALE"],
        )
        self.assertEqual(cluster[4].split(), ["names", "order", "lease", "node-1", "node-2"])
        self.assertEqual(
            cluster[6].split(),
            ["a.example", "node-2", "until", "2026-11-29T12:05:00+00:00", "0ABC", "-"],
        )
