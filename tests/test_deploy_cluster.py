"""
The deploy command in a cluster, on a real PostgreSQL: two nodes in one
process, each with its own state directory and a real command, share one
database and a fake CA; one orders, both run their command, and a failure
on one node is that node's alone; a node down while the other renews runs
its command once at its next start.
"""

from __future__ import annotations

import os
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from zope.interface.registry import Components

from letsencrypt_resource import deploy
from letsencrypt_resource.deployflags import DEPLOYS, deployKey
from letsencrypt_resource.heartbeat import heartbeatOf
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.noderecord import seenKey
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.cluster import ClusterStorage
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.storage.postgres import PostgresStorage
from letsencrypt_resource.storage.records import Records
from letsencrypt_resource.storage.sealing import Sealer
from letsencrypt_resource.testing import FakeACMEServer, RecordingConsumer
from tests.helpers.postgres import PostgresCase
from tests.helpers.resourcecase import REPORTS, resourceOptions

#: A deploy command: reads the code its node's file holds, appends its
#: node's name to the record of runs, then exits with that code (read
#: first: a test that changes the code once it sees a run does not change
#: that run's).
SCRIPT = """\
#!/bin/sh
code="$(cat "$3")"
echo "$1" >> "$2"
exit "$code"
"""


class HeldValidations:
    """
    The fake ACME server's clock, holding the validations it schedules
    until released.
    """

    def __init__(self, clock: Any):
        self._clock = clock
        self._released: Deferred[None] = Deferred()

    def seconds(self) -> float:
        return float(self._clock.seconds())

    def callLater(self, delay: float, f: Any, *args: Any) -> None:
        self._released.addCallback(lambda _: self._clock.callLater(delay, f, *args))

    def release(self) -> None:
        """
        Schedule the validations held, and any later one at once.
        """
        self._released.callback(None)


class ClusterDeployTests(PostgresCase):
    """
    Two nodes, one set, a command that fails on one node only.
    """

    def setUp(self) -> None:
        super().setUp()
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.keyFile = os.path.join(self.folder, "cluster.key")
        with open(self.keyFile, "wb") as stream:
            stream.write(os.urandom(32))
        os.chmod(self.keyFile, 0o600)
        self.script = os.path.join(self.folder, "deploy")
        with open(self.script, "w") as stream:
            stream.write(SCRIPT)
        os.chmod(self.script, 0o755)
        self.runs = os.path.join(self.folder, "runs")
        self.server = FakeACMEServer(reactor)
        self.resources: list[LetsEncryptResource] = []
        self.beats: dict[str, Any] = {}
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        # Seconds, not minutes, before a failed run may run again.
        self.patch(deploy, "RETRY_BASE", 0.2)

    def setExit(self, node: str, code: int) -> None:
        """
        Make the command exit with C{code} on C{node}.
        """
        with open(os.path.join(self.folder, f"{node}.exit"), "w") as stream:
            stream.write(f"{code}\n")

    def failures(self) -> list[dict[str, Any]]:
        """
        The failed runs (event 20247).
        """
        return [e for e in self.events if e.get("event_id") == 20247]

    def successes(self) -> list[dict[str, Any]]:
        """
        The runs that worked (event 20246).
        """
        return [e for e in self.events if e.get("event_id") == 20246]

    def ran(self) -> list[str]:
        """
        The nodes the command ran on, in order.
        """
        if not os.path.exists(self.runs):
            return []
        with open(self.runs) as stream:
            return stream.read().split()

    def startNode(
        self, node: str, heartbeat: bool = False, command: bool = True
    ) -> LetsEncryptResource:
        """
        Start the resource of C{node} on the cluster's database, with its
        own state directory and no store directory, and its heartbeat if
        asked (which makes it known to the other nodes), and the deploy
        command unless told not to; stopped at the end of the test.
        """
        state = os.path.join(self.folder, node)
        os.makedirs(state, exist_ok=True)
        storage = ClusterStorage(
            PostgresStorage(self.conninfo, reactor, node=node),
            DirectoryStorage(state, reactor),
            Sealer.fromKeyFile(self.keyFile, node),
            reactor,
            self.keyFile,
        )
        registry = Components()
        consumer = RecordingConsumer("reports-https", REPORTS)
        registry.registerUtility(consumer, ICertificateConsumer, name="reports")
        resource = LetsEncryptResource(
            resourceOptions(
                nodeName=node,
                port=freeTCPPort(),
                stateDirectory=state,
                deployCommand=(
                    self.script,
                    node,
                    self.runs,
                    os.path.join(self.folder, f"{node}.exit"),
                )
                if command
                else None,
                deployTimeout=10.0,
            ),
            registry,
            storage,
            reactor,
            RequestTraversalAgent(self.server),
            closeStorage=True,
        )
        self.resources[:] = [r for r in self.resources if r.options.nodeName != node]
        self.resources.append(resource)
        resource.startService()
        self.addCleanup(lambda: resource.stopService() if resource.running else None)
        if heartbeat:
            beating = heartbeatOf(resource, reactor)
            beating.startService()
            self.beats[node] = beating
            self.addCleanup(lambda: beating.stopService() if beating.running else None)
        return resource

    async def stopNode(self, resource: LetsEncryptResource) -> None:
        """
        Stop C{resource}, and its heartbeat first if it has one.
        """
        beating = self.beats.pop(resource.options.nodeName, None)
        if beating is not None:
            await beating.stopService()
        await resource.stopService()

    def lookup(self, token: str) -> Any:
        """
        The key authorization for C{token}, as whichever node knows it.
        """
        for resource in self.resources:
            answer = resource.responder.lookup(token)
            if answer is not None:
                return answer
        return None

    async def pendingKeys(self, prefix: str = DEPLOYS) -> list[str]:
        """
        The records of runs due (or others, under C{prefix}), as the
        database holds them.
        """
        storage = PostgresStorage(self.conninfo, reactor, node="reader")
        try:
            return await storage.list(prefix)
        finally:
            await storage.close()

    async def pendingBecome(self, keys: list[str]) -> None:
        """
        Wait until the records of runs due are C{keys}: a node writes its
        record before its run and clears it after, each write on its way
        while the run is seen.
        """
        for _ in range(40):
            if await self.pendingKeys() == keys:
                return
            await deferLater(reactor, 0.25, lambda: None)
        self.assertEqual(await self.pendingKeys(), keys)

    async def checkUntil(self, resource: LetsEncryptResource, runs: int) -> None:
        """
        Let C{resource} check, a quarter of a second apart (its failed run
        may run again after L{deploy.RETRY_BASE}, patched), until the
        command ran C{runs} times in all.
        """
        for _ in range(40):
            if len(self.ran()) >= runs:
                return
            await deferLater(reactor, 0.25, lambda: None)
            await resource.check()
        self.fail(f"{self.ran()} after 10 seconds of checks, not {runs} runs")

    async def test_failureIsPerNode(self) -> None:
        """
        The command runs on both nodes for the certificate one of them
        ordered; it fails on one: that node runs it again at its next
        start and at its next checks until it works, its record of the run
        due staying in the database until then, while the node where it
        worked does not run it again, restarted or not; the shared renewal
        state holds no C{deploy_pending}.
        """
        self.server.validate = self.lookup
        self.setExit("node-1", 1)
        self.setExit("node-2", 0)
        # Until both ran once, a failed run is not tried again: a check on
        # node-1 before node-2 learnt of the certificate would run it twice.
        self.patch(deploy, "RETRY_BASE", 3600.0)
        # No certificate is issued until both nodes have loaded the sets: no
        # heartbeat runs here, so neither node is known to the other, and a
        # node that loads the other's new certificate at its start does not
        # run the command for it (see test_downNodeRunsOnceAtStart for nodes
        # that are known).
        held = HeldValidations(reactor)
        self.server.clock = held
        first = self.startNode("node-1")
        second = self.startNode("node-2")
        await first.whenLoaded()
        await second.whenLoaded()
        held.release()
        await first.whenSettled()
        await second.whenSettled()
        await self.until(lambda: sorted(self.ran()) == ["node-1", "node-2"], timeout=30)
        await self.until(lambda: len(self.failures()) == 1, timeout=10)
        await self.pendingBecome([deployKey("node-1", REPORTS)])
        for resource in (first, second):
            await resource.stopService()
        self.patch(deploy, "RETRY_BASE", 0.2)
        first = self.startNode("node-1")
        second = self.startNode("node-2")
        await self.until(lambda: len(self.ran()) == 3, timeout=10)
        self.assertEqual(self.ran().count("node-1"), 2)
        await self.checkUntil(first, 4)
        self.assertEqual(self.ran().count("node-1"), 3)
        self.setExit("node-1", 0)
        await self.checkUntil(first, 5)
        await self.until(lambda: len(self.successes()) == 2, timeout=10)
        for _ in range(3):
            await deferLater(reactor, 0.25, lambda: None)
            for resource in (first, second):
                await resource.check()
        self.assertEqual(sorted(self.ran()), ["node-1"] * 4 + ["node-2"])
        self.assertEqual(len(self.failures()), 3)
        await self.pendingBecome([])
        state = await Records(second.storage).loadRenewalState(REPORTS)
        assert state is not None
        self.assertNotIn("deploy_pending", state)

    async def settle(self, *resources: LetsEncryptResource) -> None:
        """
        Let C{resources} check three times, a quarter of a second apart.
        """
        for _ in range(3):
            await deferLater(reactor, 0.25, lambda: None)
            for resource in resources:
                await resource.check()

    async def test_downNodeRunsOnceAtStart(self) -> None:
        """
        A node known to the cluster (its heartbeat ran) but down while the
        other renews runs its command exactly once at its next start, for
        the new certificate; the renewing node runs it exactly once; once
        both run, a renewal runs it exactly once on each; no record of a
        run due is left.
        """
        self.server.validate = self.lookup
        self.setExit("node-1", 0)
        self.setExit("node-2", 0)
        second = self.startNode("node-2", heartbeat=True)
        await second.whenSettled()
        await self.until(lambda: self.ran() == ["node-2"], timeout=30)
        await self.pendingBecome([])
        self.assertIn(seenKey("node-2"), await self.pendingKeys("nodes/"))
        await self.stopNode(second)
        first = self.startNode("node-1", heartbeat=True)
        await first.whenSettled()
        await first.check(force=True)
        await self.until(lambda: self.ran() == ["node-2", "node-1"], timeout=30)
        await self.pendingBecome([deployKey("node-2", REPORTS)])
        second = self.startNode("node-2", heartbeat=True)
        await second.whenSettled()
        await self.until(lambda: len(self.ran()) == 3, timeout=30)
        await self.pendingBecome([])
        await self.settle(first, second)
        self.assertEqual(self.ran(), ["node-2", "node-1", "node-2"])
        renewed = first.managed[frozenset(REPORTS)].issued
        loaded = second.managed[frozenset(REPORTS)].issued
        assert renewed is not None and loaded is not None
        self.assertEqual(loaded.certificate.serial_number, renewed.certificate.serial_number)
        await first.check(force=True)
        await self.until(lambda: len(self.ran()) == 5, timeout=30)
        await self.pendingBecome([])
        await self.settle(first, second)
        self.assertEqual(sorted(self.ran()[3:]), ["node-1", "node-2"])
        self.assertEqual(self.failures(), [])

    async def test_noCommandNodeClears(self) -> None:
        """
        A node with no command, known to the cluster but down while the
        other renews, clears at its start the record of the run the other
        node wrote for it; its checks and its next start do not bring it
        back; only the renewing node ran its command.
        """
        self.server.validate = self.lookup
        self.setExit("node-1", 0)
        second = self.startNode("node-2", heartbeat=True, command=False)
        await second.whenSettled()
        await self.stopNode(second)
        first = self.startNode("node-1", heartbeat=True)
        await first.whenSettled()
        await first.check(force=True)
        await self.until(lambda: self.ran() == ["node-1"], timeout=30)
        await self.pendingBecome([deployKey("node-2", REPORTS)])
        second = self.startNode("node-2", heartbeat=True, command=False)
        await second.whenSettled()
        await self.pendingBecome([])
        await self.settle(first, second)
        self.assertFalse(second.managed[frozenset(REPORTS)].deployPending)
        await self.stopNode(second)
        second = self.startNode("node-2", heartbeat=True, command=False)
        await second.whenSettled()
        await self.settle(first, second)
        self.assertEqual(await self.pendingKeys(), [])
        self.assertEqual(self.ran(), ["node-1"])
