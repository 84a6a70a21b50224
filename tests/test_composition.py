"""
Tests for how L{LetsEncryptResource} is composed of its parts: the order
in which they start and stop, and the logger their events go to.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed

from letsencrypt_resource.acmeloading import LoadAtStart
from letsencrypt_resource.challengesite import ChallengeSiteService
from letsencrypt_resource.challengesweep import ChallengeSweeper
from letsencrypt_resource.deploy import DeployHooks
from letsencrypt_resource.deployflags import DueAtStart
from letsencrypt_resource.domainsets import DomainSets
from letsencrypt_resource.metricssite import MetricsSiteService
from letsencrypt_resource.scheduler import Scheduler
from letsencrypt_resource.storage.interface import StorageError
from letsencrypt_resource.testing import runUntilFired
from tests.helpers.resourcecase import ResourceTestCase
from tests.helpers.statedir import StateDirectory

#: Challenge site listening, stored certificate loaded, certificate in use,
#: start-up done.
LISTENING, LOADED, IN_USE, STARTED = 20151, 20158, 20016, 20208


class CompositionTests(ResourceTestCase):
    """
    The resource is a C{MultiService} of its parts, and behaves as one
    service.
    """

    def test_children(self) -> None:
        """
        Its child services are the deploy hooks, the metrics site, the
        challenge site, the domain sets, the scheduler, the sweeper of
        challenges left in the storage, the read of the deploy runs due on
        this node once the sets are loaded, and the load of the ACME
        modules, in that order: each starts after the one before it.
        """
        resource = self.makeResource()
        self.assertIsInstance(resource, MultiService)
        self.assertEqual(
            [type(child) for child in resource],
            [
                DeployHooks,
                MetricsSiteService,
                ChallengeSiteService,
                DomainSets,
                Scheduler,
                ChallengeSweeper,
                DueAtStart,
                LoadAtStart,
            ],
        )

    def test_startOrder(self) -> None:
        """
        At start, the challenge site listens (20151) before the stored
        certificates are loaded and handed to their consumers, which the
        start-up's event (20208) counts.
        """
        first = self.start()
        runUntilFired(self.reactor, first.stopService())
        before = len(self.events)
        self.start()
        logged = [e for e in self.events[before:] if e.get("event_id") in (LISTENING, STARTED)]
        self.assertEqual([e["event_id"] for e in logged], [LISTENING, STARTED])
        self.assertEqual((logged[1]["stored"], logged[1]["issued"]), (2, 3))
        self.assertFalse({LOADED, IN_USE} & set(self.eventIDs()[before:]))

    def test_eventsFromTheResource(self) -> None:
        """
        Every event of every part is logged as the resource's: its
        namespace and source are the resource's, whichever part emits it
        (the account module, which the parts use, logs as itself).
        """
        resource = self.start()
        logged = [
            e
            for e in self.events
            if "event_id" in e and e["log_namespace"] != "letsencrypt_resource.account"
        ]
        self.assertTrue({LISTENING, IN_USE, 20015} <= {e["event_id"] for e in logged})
        for event in logged:
            self.assertEqual(
                event["log_namespace"],
                "letsencrypt_resource.resource.LetsEncryptResource",
            )
            self.assertIs(event["log_source"], resource)

    def recordPorts(self) -> list[RecordingPort]:
        """
        Make the reactor's TCP ports L{RecordingPort}s.

        @return: The ports, as they are made.
        """
        ports: list[RecordingPort] = []
        listen = self.reactor.listenTCP

        def listenTCP(port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
            listen(port, factory, backlog, interface)
            ports.append(RecordingPort())
            return ports[-1]

        self.patch(self.reactor, "listenTCP", listenTCP)
        return ports

    def test_stopStopsEveryPart(self) -> None:
        """
        Stopping the resource stops each child service, and ends once the
        challenge site no longer listens: its port's stop has ended.
        """
        ports = self.recordPorts()
        resource = self.start()
        [port] = ports
        stopping = resource.stopService()
        self.assertEqual((port.stopped, self.successResultOf(stopping)), (True, None))
        self.assertFalse(resource.running)
        self.assertFalse(any(child.running for child in resource))

    def test_stopWaitsForThePort(self) -> None:
        """
        Stopping ends only once the challenge site's port has stopped.
        """
        ports = self.recordPorts()
        resource = self.start()
        [port] = ports
        port.stopping = Deferred()
        stopping = resource.stopService()
        self.assertNoResult(stopping)
        port.stopping.callback(None)
        self.assertIsNone(self.successResultOf(stopping))

    def test_partStopFails(self) -> None:
        """
        When a part fails to stop (the challenge site's port does not
        close), stopping the resource fails with its error, after the
        other parts stopped and the storage it owns was closed all the
        same.
        """
        ports = self.recordPorts()
        self.store = StateDirectory(self.mktemp())
        resource = self.start()
        [port] = ports
        port.stopping = fail(OSError(9, "Bad file descriptor"))
        failure = self.failureResultOf(resource.stopService(), OSError)
        self.assertEqual(failure.value.strerror, "Bad file descriptor")
        self.assertFalse(any(child.running for child in resource))
        self.failureResultOf(resource.storage.load("provisional-signer.pem"), StorageError)

    def test_partsStopFail(self) -> None:
        """
        When several parts fail to stop, stopping the resource fails with
        the first error, in stop order, and the others are logged.
        """
        ports = self.recordPorts()
        resource = self.start()
        [port] = ports
        port.stopping = fail(OSError(9, "Bad file descriptor"))
        scheduler = list(resource)[-1]
        self.patch(scheduler, "stopService", lambda: fail(ZeroDivisionError()))
        self.failureResultOf(resource.stopService(), ZeroDivisionError)
        [logged] = self.flushLoggedErrors(OSError)
        self.assertEqual(logged.value.strerror, "Bad file descriptor")


class RecordingPort:
    """
    A listening port that records that it was stopped; its stop ends as
    L{stopping} does.

    @ivar stopped: Whether C{stopListening} was called.
    @ivar stopping: What C{stopListening} returns.
    """

    def __init__(self) -> None:
        self.stopped = False
        self.stopping: Deferred[None] = succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 5002)

    def stopListening(self) -> Deferred[None]:
        self.stopped = True
        return self.stopping
