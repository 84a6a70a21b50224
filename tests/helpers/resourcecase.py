"""
L{ResourceTestCase}: a resource with consumers, a memory store and a
fake CA on a fake clock; the options, domain sets and runners its tests
share.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.registry import Components

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.config import ResourceOptions
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.resource import (
    LetsEncryptResource,
)
from letsencrypt_resource.storage.directory import DirectoryStorage, InThisThread
from letsencrypt_resource.storage.interface import ILease, StorageError
from letsencrypt_resource.testing import (
    FakeACMEServer,
    MemoryStore,
    RecordingConsumer,
    runUntilFired,
)
from letsencrypt_resource.tls import TLSCertificateConsumer
from tests.helpers.statedir import StateDirectory

DAY = 86400.0

#: The ACME directory of L{resourceOptions}.
ACME_URL = "https://acme.test/directory"


FILES = ("files.example.test", "www.example.test")


REPORTS = ("reports.example.test",)


def synchronously(function: Any, *args: Any) -> Any:
    """
    Run C{function} at once: the tests' stand-in for a thread pool.
    """
    return succeed(function(*args))


def resourceOptions(**overrides: Any) -> ResourceOptions:
    values: dict[str, Any] = {
        "section": "resources/le",
        "name": "le",
        "description": "",
        "address": "127.0.0.1",
        "port": 5002,
        "acmeURL": ACME_URL,
        "stateDirectory": "/nonexistent",
        "storeDirectory": None,
        "redirectURL": None,
        "acmeCAFile": None,
        "keyType": "ecdsa-p256",
        "debug": False,
        "agreeTOS": True,
    }
    values.update(overrides)
    return ResourceOptions(**values)


class RefusingReactor(MemoryReactorClock):
    """
    A memory reactor on which every port is taken.
    """

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


class ResourceTestCase(SynchronousTestCase):
    """
    A resource with consumers, a memory store and a fake CA, on a fake clock.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_800_000_000)
        self.server = FakeACMEServer(self.reactor)
        self.store = MemoryStore()
        self.registry = Components()
        self.consumers = {
            "files": RecordingConsumer("files-https", FILES),
            "files-ftps": RecordingConsumer("files-ftps", tuple(reversed(FILES))),
            "reports": RecordingConsumer("reports-https", REPORTS),
        }
        for name, consumer in self.consumers.items():
            self.registry.registerUtility(consumer, ICertificateConsumer, name=name)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def makeResource(self, reactor: Any = None, **options: Any) -> LetsEncryptResource:
        """
        A resource on L{store}: a L{MemoryStore}, a L{DirectoryStorage}, or
        a L{StateDirectory} whose state directory it then uses through a
        L{DirectoryStorage}, with its checks.
        """
        reactor = reactor or self.reactor
        storage = self.store
        if isinstance(storage, StateDirectory):
            storage = DirectoryStorage(storage.path, reactor, workers=InThisThread())
        resource = LetsEncryptResource(
            resourceOptions(**options),
            self.registry,
            storage,
            reactor,
            RequestTraversalAgent(self.server),
            runInThread=synchronously,
            random=lambda: 0.5,
            checkWritable=getattr(self.store, "checkCertificateWritable", None),
            closeStorage=storage is not self.store,
        )
        self.server.validate = resource.responder.lookup
        self.server.validateALPN = resource.responder.lookupALPN
        return resource

    def start(self, **options: Any) -> LetsEncryptResource:
        resource = self.makeResource(**options)
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        return resource

    def stop(self, resource: LetsEncryptResource) -> None:
        if resource.running:
            resource.stopService()

    def assertNear(self, actual: float, expected: float) -> None:
        """
        C{actual} is C{expected} give or take a second of polling.
        """
        self.assertTrue(abs(actual - expected) < 1, f"{actual} is not near {expected}")

    def eventIDs(self) -> list[int]:
        return [e["event_id"] for e in self.events if "event_id" in e]

    def assertReplacedAtOnce(
        self, resource: LetsEncryptResource, tls: TLSCertificateConsumer
    ) -> CertifiedKey:
        """
        A handshake of C{tls} refused the stored certificate of L{REPORTS}
        (event 20260): the set went on a provisional certificate, and the
        attempt that started at once issued one that C{tls} presents.

        @return: The issued certificate.
        """
        self.assertIn(20260, self.eventIDs())
        self.assertTrue(self.consumers["reports"].received[-1].provisional)
        attempt = resource.managed[frozenset(REPORTS)].attempt
        assert attempt is not None
        runUntilFired(self.reactor, attempt.whenEnded())
        issued = tls.tls.certifiedKey
        assert issued is not None
        self.assertFalse(issued.provisional)
        self.assertIsInstance(tls.tls.serverConnectionForTLS(None), SSL.Connection)
        return issued

    def eventTexts(self, eventID: int) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("event_id") == eventID]


class HeldRunner:
    """
    A stand-in for the resource's C{runWrite} (or C{runInThread}) that runs
    most jobs at once but holds some, by their function's name, until
    told.
    """

    HELD = ("saveRenewalState", "exportCertificate")

    def __init__(self) -> None:
        self.held: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, function: Any, *args: Any) -> Deferred[Any]:
        if function.__name__ not in self.HELD:
            return maybeDeferred(function, *args)
        done: Deferred[Any] = Deferred()
        self.held.append((function, args, done))
        return done

    def names(self) -> list[str]:
        return [function.__name__ for function, _, _ in self.held]

    def releaseOne(self) -> None:
        """
        Run the first held job; what it raises fails its Deferred, as in a
        worker thread.
        """
        function, args, done = self.held.pop(0)
        maybeDeferred(function, *args).chainDeferred(done)


#: The keys each failing save of L{FailingSaves} stands for.
SAVES = {
    "saveCertificate": "certificates/",
    "saveRenewalState": "renewal/",
    "saveAccount": "accounts/",
}


class FailingSaves(MemoryStore):
    """
    A memory store whose saves of one kind fail while told to.

    @ivar failing: The names of the L{Records} methods whose writes fail
        with L{StorageError}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        for name in self.failing:
            if key.startswith(SAVES[name]):
                return fail(StorageError(f"memory:{name}", "cannot be written: disk full"))
        return super().store(key, value, fence)
