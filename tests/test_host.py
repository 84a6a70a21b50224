"""
Tests for L{letsencrypt_resource.host.ServerService} itself.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.adapter import BaseAdapterRegistry

from letsencrypt_resource import startupcollection
from letsencrypt_resource.challenge import ChallengeResponder
from letsencrypt_resource.config import Configuration, ConfigurationError
from letsencrypt_resource.consumerregistry import SubscriberLeaf
from letsencrypt_resource.host import ServerService, checkServices
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.storage import lock as lockModule
from letsencrypt_resource.storage.lock import StateLock
from tests.helpers import newSigner, provisionalFor
from tests.helpers.resourcecase import resourceOptions
from tests.helpers.serviceoptions import makeOptions


class Cycle:
    """
    An object in a reference cycle: only the collector frees it.
    """

    def __init__(self) -> None:
        self.me = self


class LoadingResource(Service):
    """
    A resource whose domain sets load when the test says.
    """

    def __init__(self) -> None:
        self.loaded: Deferred[None] = Deferred()
        self.startUpListeners: list[Callable[[], object]] = []
        self.responder = ChallengeResponder()
        # No set: the control service's kept rows have none to make.
        self.managed: dict[object, object] = {}
        self.storage = None

    def whenLoaded(self) -> Deferred[None]:
        return self.loaded

    def whenSettled(self) -> Deferred[None]:
        """
        Never settled: the control service's kept rows wait (see
        L{letsencrypt_resource.operations.Operations.keepRows}).
        """
        return Deferred()


class StartTests(SynchronousTestCase):
    """
    What L{ServerService.startService} does for the whole process.
    """

    def test_startUpFrozenAfterCollecting(self) -> None:
        """
        Start-up garbage is collected, then what is left is frozen out of
        the collector's reach, so that full collections stay short.
        """
        server = ServerService(Configuration("host test", None, ()), MemoryReactorClock())
        # Only an explicit collection may free the cycle.
        gc.disable()
        self.addCleanup(gc.enable)
        gc.unfreeze()
        self.addCleanup(gc.unfreeze)
        garbage = weakref.ref(Cycle())
        server.startService()
        self.addCleanup(server.stopService)
        self.assertIsNone(garbage())
        self.assertGreater(gc.get_freeze_count(), 0)

    def test_listeningTold(self) -> None:
        """
        The services a server starts with do not each say that they listen
        (event 20156, at debug level only with C{debug = yes}): one event
        20209 says it once all do.  A service that listens again later
        says so itself.
        """
        folder = self.mktemp()
        os.mkdir(folder)
        services = tuple(
            attrs.evolve(makeOptions(folder), section=name, name=name, port=port, debug=debug)
            for name, port, debug in [("s1", 8001, False), ("s2", 8002, True)]
        )
        reactor = MemoryReactorClock()
        server = ServerService(Configuration("host test", None, services), reactor)
        signer = newSigner()
        with capturedLogs() as logged:
            server.startService()
            self.addCleanup(server.stopService)
            for service in server.fileServices:
                service.consumer.useCertificate(provisionalFor(signer))
        self.assertEqual(
            [(formatEvent(e), e["log_level"]) for e in logged if "event_id" in e],
            [
                ("20156 Service s2 is listening on 127.0.0.1 port 8002.", LogLevel.debug),
                (
                    "20209 2 services listen, 0 cannot, 0 wait for a certificate, "
                    "0.0 seconds after they started.",
                    LogLevel.info,
                ),
            ],
        )
        first = server.fileServices[0]
        with capturedLogs() as logged:
            first.stopService()
            first.startService()
        self.assertEqual(
            [(formatEvent(e), e["log_level"]) for e in logged if "event_id" in e],
            [("20156 Service s1 is listening on 127.0.0.1 port 8001.", LogLevel.info)],
        )

    def threeServices(self) -> ServerService:
        """
        A server of three services of one folder, on ports 8001 to 8003,
        on a memory reactor.
        """
        return self.servers((8001, 8002, 8003))

    def servers(self, ports: tuple[int, ...]) -> ServerService:
        """
        A server of services of one folder, one on each of C{ports}, on a
        memory reactor.
        """
        folder = self.mktemp()
        os.mkdir(folder)
        services = tuple(
            attrs.evolve(makeOptions(folder), section=f"s{port}", name=f"s{port}", port=port)
            for port in ports
        )
        return ServerService(Configuration("host test", None, services), MemoryReactorClock())

    def test_consumersRegisteredInPlace(self) -> None:
        """
        The registry the server builds adds each service's consumer to the
        subscribers of L{ICertificateConsumer} in place: registering N
        services does not copy the subscribers N times (0.45 s at 10,000).
        """
        server = self.threeServices()
        leaf = server.registry.utilities._subscribers[0][ICertificateConsumer][""]
        self.assertIsInstance(leaf, SubscriberLeaf)
        self.assertEqual(list(leaf), [s.consumer for s in server.fileServices])

    def test_consumersRegisteredAtOnce(self) -> None:
        """
        The services a server starts with are registered with one change
        of the registry (its lookups' caches cleared once), not two for
        each service: the changes do not grow with the services.
        """
        changes: list[object] = []
        original = BaseAdapterRegistry.changed

        def counting(registry: BaseAdapterRegistry, changed: object) -> None:
            changes.append(changed)
            original(registry, changed)

        self.patch(BaseAdapterRegistry, "changed", counting)
        counts = []
        for ports in [(8001,), (8001, 8002, 8003)]:
            server = self.servers(ports)
            utilities = server.registry.utilities
            counts.append(len([c for c in changes if c is utilities]))
        self.assertEqual(counts[0], counts[1])

    def test_folderOpenOnce(self) -> None:
        """
        Services serving the same folder hold one descriptor of it between
        them, not one each: 10,000 services needed more than 20,000 open
        files.  It is closed once they all stopped.
        """
        server = self.threeServices()
        before = len(os.listdir("/proc/self/fd"))
        server.startService()
        self.assertEqual(len(os.listdir("/proc/self/fd")), before + 1)
        server.stopService()
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)

    def test_listeningToldAtResourceStartUpEnd(self) -> None:
        """
        Event 20209 waits for a service whose set waits for a certificate
        only until the resource's start-up ends (event 20208): it counts
        that service as waiting, and the service says itself when it
        listens later, at info level.
        """
        folder = self.mktemp()
        os.mkdir(folder)
        services = tuple(
            attrs.evolve(makeOptions(folder), section=name, name=name, port=port)
            for name, port in [("s1", 8001), ("s2", 8002)]
        )
        resource = LoadingResource()
        server = ServerService(
            Configuration("host test", resourceOptions(stateDirectory=self.mktemp()), services),
            MemoryReactorClock(),
            resourceFactory=lambda *args, **kwargs: resource,
        )
        signer = newSigner()
        first, second = server.fileServices
        with capturedLogs() as logged:
            server.startService()
            self.addCleanup(server.stopService)
            first.consumer.useCertificate(provisionalFor(signer))
            for listener in resource.startUpListeners:
                listener()
            second.consumer.useCertificate(provisionalFor(signer))
        self.assertEqual(
            [(formatEvent(e), e["log_level"]) for e in logged if "event_id" in e],
            [
                (
                    "20209 1 services listen, 0 cannot, 1 wait for a certificate, "
                    "0.0 seconds after they started.",
                    LogLevel.info,
                ),
                ("20156 Service s2 is listening on 127.0.0.1 port 8002.", LogLevel.info),
            ],
        )

    def loadingServer(self) -> tuple[LoadingResource, ServerService]:
        """
        A server of no service on a L{LoadingResource}, nothing frozen yet
        (unfrozen again after the test).
        """
        resource = LoadingResource()
        server = ServerService(
            Configuration("host test", resourceOptions(stateDirectory=self.mktemp()), ()),
            MemoryReactorClock(),
            resourceFactory=lambda *args, **kwargs: resource,
        )
        gc.unfreeze()
        self.addCleanup(gc.unfreeze)
        return resource, server

    def test_frozenOnceLoaded(self) -> None:
        """
        With a resource, the freeze waits until its domain sets are loaded,
        so that they are frozen too: they are most of what start-up builds.
        """
        resource, server = self.loadingServer()
        server.startService()
        self.addCleanup(server.stopService)
        self.assertEqual(gc.get_freeze_count(), 0)
        loadedSets = [[Cycle()] for _ in range(100)]
        resource.loaded.callback(None)
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertTrue(gc.is_tracked(loadedSets))
        self.assertNotIn(loadedSets, gc.get_objects())

    def test_loadFrozenWithoutCollectingUnderTwistd(self) -> None:
        """
        Where the start-up was frozen without collecting (twistd's
        L{ResumeCollection <letsencrypt_resource.startupcollection.ResumeCollection>}),
        the freeze once the sets are loaded does not collect either: a
        collection there would go through everything the load made, on the
        running reactor.  Without that freeze, it collects first.
        """
        for frozeFirst, collected in ((True, []), (False, ["start", "stop"])):
            self.patch(startupcollection, "_frozeStartUp", frozeFirst)
            resource, server = self.loadingServer()
            server.startService()
            self.addCleanup(server.stopService)
            phases: list[str] = []
            gc.callbacks.append(lambda phase, info, seen=phases: seen.append(phase))
            try:
                resource.loaded.callback(None)
            finally:
                del gc.callbacks[-1]
            self.assertEqual(phases, collected)
            self.assertGreater(gc.get_freeze_count(), 0)
            gc.unfreeze()

    def test_collectionPausedUntilFrozen(self) -> None:
        """
        With a resource, automatic collection pauses from the server's start
        until what the load made is frozen: it does not go over the loaded
        sets once more as their load ends, just before the freeze.
        """
        resource, server = self.loadingServer()
        self.assertTrue(gc.isenabled())
        server.startService()
        self.addCleanup(server.stopService)
        self.assertFalse(gc.isenabled())
        resource.loaded.callback(None)
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertTrue(gc.isenabled())

    def test_collectionResumedAtStop(self) -> None:
        """
        A server stopped before its resource's load ends resumes automatic
        collection (the load keeps its own pause while it goes on).
        """
        server = ServerService(
            Configuration("host test", resourceOptions(stateDirectory=self.mktemp()), ()),
            MemoryReactorClock(),
            resourceFactory=lambda *args, **kwargs: LoadingResource(),
        )
        self.assertTrue(gc.isenabled())
        server.startService()
        self.assertFalse(gc.isenabled())
        server.stopService()
        self.assertTrue(gc.isenabled())

    def test_lockNamesTheServer(self) -> None:
        """
        Starting the server writes its pid into the state directory's lock,
        taken before by another process it forked from (twistd without
        C{-n} takes it, then daemonizes).
        """
        state = os.path.abspath(self.mktemp())
        lock = StateLock(state)
        patched = self.patch(lockModule.os, "getpid", lambda: 12345678)
        lock.acquire()
        patched.restore()
        self.addCleanup(lock.release)
        server = ServerService(
            Configuration("host test", resourceOptions(stateDirectory=state), ()),
            MemoryReactorClock(),
            lock,
            resourceFactory=lambda *args, **kwargs: LoadingResource(),
        )
        server.startService()
        self.addCleanup(server.stopService)
        with open(os.path.join(state, "lock")) as stream:
            self.assertEqual(stream.read(), str(os.getpid()))


class CheckServicesTests(SynchronousTestCase):
    """
    L{checkServices}: the folders the services serve.
    """

    def configuration(self, *paths: str) -> Configuration:
        """
        A configuration of one service serving each of C{paths}.
        """
        services = tuple(
            attrs.evolve(makeOptions(path), section=f"s{index}", name=f"s{index}")
            for index, path in enumerate(paths)
        )
        return Configuration("host test", None, services)

    def test_missingFolderRefused(self) -> None:
        """
        A folder that does not exist is refused, naming the first service
        that serves it.
        """
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        missing = folder + "-missing"
        error = self.assertRaises(
            ConfigurationError, checkServices, self.configuration(folder, missing, missing)
        )
        self.assertEqual(
            (error.section, error.option, error.message),
            ("s1", "path", f"{missing} is not an existing folder"),
        )

    def test_folderCheckedOnce(self) -> None:
        """
        A folder that many services serve is looked at once, not once
        for each service.
        """
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        looked: list[str] = []
        isdir = os.path.isdir

        def counting(path: str) -> bool:
            looked.append(path)
            return isdir(path)

        self.patch(os.path, "isdir", counting)
        checkServices(self.configuration(folder, folder, folder))
        self.assertEqual(looked, [folder])
