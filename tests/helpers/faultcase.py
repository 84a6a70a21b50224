"""
Fault injection around a real pebble: a front door that can refuse, swallow
or forward the ACME server's connections, a pebble that can be stopped and
started again behind it, and a test case base that runs the resource
against them and records every event.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import attrs
from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface.registry import Components

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.httpclient import loadCABundle, makeHTTPClient
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.pebble import RunningTestCA, freeTCPPort, startTestCA
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.testing import RecordingConsumer
from tests.helpers.pebblecase import TestCACase
from tests.helpers.resourcecase import resourceOptions

#: The front door's modes.
FORWARD = "forward"
REFUSE = "refuse"
BLACKHOLE = "blackhole"


class _Inbound(Protocol):
    """
    One client connection to the front door.
    """

    def __init__(self, door: CAFrontDoor) -> None:
        self.door = door
        self.peer: _Outbound | None = None
        self.pending: list[bytes] = []
        #: Abort after relaying this many bytes of the server's answer.
        self.cutAfter: int | None = None
        self.relayed = 0

    def connectionMade(self) -> None:
        self.door.connections.add(self)
        if self.door.cuts:
            self.door.cuts -= 1
            self.cutAfter = self.door.cutAfter
        if self.door.mode == FORWARD and self.door.target is not None:
            factory = ClientFactory.forProtocol(lambda: _Outbound(self))
            factory.noisy = False
            factory.clientConnectionFailed = lambda *_: self.transport.abortConnection()
            reactor.connectTCP("127.0.0.1", self.door.target, factory, timeout=5)
        # In BLACKHOLE mode the connection is accepted and nothing answers.

    def dataReceived(self, data: bytes) -> None:
        if self.door.mode == BLACKHOLE:
            return
        if self.peer is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def connectionLost(self, reason: Failure = None) -> None:
        self.door.connections.discard(self)
        if self.peer is not None:
            self.peer.transport.loseConnection()


class _Outbound(Protocol):
    """
    The front door's connection to pebble for one client connection.
    """

    def __init__(self, inbound: _Inbound) -> None:
        self.inbound = inbound

    def connectionMade(self) -> None:
        self.inbound.peer = self
        for data in self.inbound.pending:
            self.transport.write(data)
        self.inbound.pending = []
        if self.inbound.transport.disconnected:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        inbound = self.inbound
        if inbound.door.mode == BLACKHOLE:
            return
        if inbound.cutAfter is not None:
            room = inbound.cutAfter - inbound.relayed
            if len(data) >= room:
                inbound.transport.write(data[:room])
                inbound.door.cutsDone += 1
                inbound.transport.abortConnection()
                self.transport.abortConnection()
                return
        inbound.relayed += len(data)
        inbound.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:
        self.inbound.transport.loseConnection()


class CAFrontDoor:
    """
    A TCP port on 127.0.0.1 that stands for the ACME server: it forwards to
    pebble, refuses connections (the CA is down), or accepts them and never
    answers.  Pebble names its URLs after the Host header, so the client
    sees one stable ACME URL across pebble restarts.

    @ivar port: The port it is on, stable across L{refuse} and L{forward}.
    @ivar target: Pebble's ACME port, when it runs.
    """

    def __init__(self) -> None:
        self.port = freeTCPPort()
        self.target: int | None = None
        self.mode = REFUSE
        self.connections: set[_Inbound] = set()
        self._listening: IListeningPort | None = None
        self.cuts = 0
        self.cutAfter = 0
        self.cutsDone = 0

    def _listen(self) -> None:
        if self._listening is None:
            factory = Factory.forProtocol(lambda: _Inbound(self))
            factory.noisy = False
            self._listening = reactor.listenTCP(self.port, factory, interface="127.0.0.1")

    def forward(self, target: int | None = None) -> None:
        """
        Forward every new connection to pebble's ACME port C{target}.
        """
        if target is not None:
            self.target = target
        self.mode = FORWARD
        self._listen()

    def blackhole(self) -> None:
        """
        Go silent, as a CA that hangs: accept new connections and never
        answer them, and stop relaying anything on the open ones.
        """
        self.mode = BLACKHOLE
        self._listen()

    def refuse(self) -> Deferred[None]:
        """
        Stop listening, so connections are refused, and drop the open ones.
        """
        self.mode = REFUSE
        self.dropAll()
        listening, self._listening = self._listening, None
        if listening is None:
            return succeed(None)
        return listening.stopListening()

    def cutNext(self, count: int, after: int) -> None:
        """
        Forward the next C{count} connections but reset each once C{after}
        bytes of pebble's answers went through: responses cut short.
        """
        self.cuts = count
        self.cutAfter = after

    def dropAll(self) -> None:
        """
        Reset every open connection.
        """
        for connection in list(self.connections):
            connection.transport.abortConnection()


def _acmePort(testCA: RunningTestCA) -> int:
    with open(os.path.join(testCA.directory, "pebble-config.json")) as stream:
        address = json.load(stream)["pebble"]["listenAddress"]
    return int(address.rsplit(":", 1)[1])


class RestartablePebble:
    """
    A pebble behind a L{CAFrontDoor}, which can be stopped and started
    again: each start is a new pebble (new roots, no accounts, no orders)
    with the same ACME URL, HTTPS certificate and HTTP-01 port.

    @ivar challengePort: Where pebble validates HTTP-01.
    @ivar door: The front door.
    @ivar current: The pebble running now, if any.
    @ivar starts: How many times pebble was started.
    """

    def __init__(self, directory: str, **kwargs: Any) -> None:
        self.directory = os.path.abspath(directory)
        self.challengePort = freeTCPPort()
        self.door = CAFrontDoor()
        self.current: RunningTestCA | None = None
        self.starts = 0
        self._kwargs = kwargs
        self._listener: dict[str, str] = {}
        self.caFile = ""

    @property
    def directoryURL(self) -> str:
        return f"https://localhost:{self.door.port}/dir"

    async def start(self, *, open: bool = True, **kwargs: Any) -> RunningTestCA:
        """
        Start a new pebble; with C{open}, let clients reach it at once.
        """
        self.starts += 1
        extraConfig = dict(self._kwargs.get("extraConfig") or {})
        extraConfig.update(self._listener)
        options = {**self._kwargs, **kwargs, "extraConfig": extraConfig}
        testCA = await startTestCA(
            reactor,
            os.path.join(self.directory, f"pebble-{self.starts}"),
            self.challengePort,
            **options,
        )
        if not self._listener:
            # Every later pebble keeps the first one's HTTPS certificate, so
            # that the client's trust in acme_ca_file holds across restarts.
            self._listener = {
                "certificate": os.path.join(testCA.directory, "listener-cert.pem"),
                "privateKey": os.path.join(testCA.directory, "listener-key.pem"),
            }
            self.caFile = testCA.caFile
        else:
            # This pebble's listeners use the first one's certificate.
            shutil.copyfile(self.caFile, testCA.caFile)
        self.current = testCA
        self.door.target = _acmePort(testCA)
        if open:
            self.door.forward()
        return testCA

    async def stop(self) -> None:
        """
        Stop pebble; the front door refuses connections until the next
        start.
        """
        await self.door.refuse()
        current, self.current = self.current, None
        if current is not None:
            await current.stop()

    async def issuersPEM(self) -> bytes:
        """
        The root and intermediate of the pebble running now.
        """
        assert self.current is not None
        return await self.current.fetchIssuerPEM()


@attrs.define
class Recorder:
    """
    Every event logged while it is installed, formatted.
    """

    events: list[dict[str, Any]] = attrs.Factory(list)

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def ids(self) -> list[int]:
        return [e["event_id"] for e in self.events if "event_id" in e]

    def texts(self, eventID: int | None = None) -> list[str]:
        return [
            formatEvent(e) for e in self.events if eventID is None or e.get("event_id") == eventID
        ]

    def errors(self) -> list[str]:
        """
        Every event logged with a traceback, or as a legacy error that is
        none of the product's events (critical ones are marked isError by
        the legacy log bridge).
        """
        found = []
        for event in self.events:
            legacyError = event.get("isError") and "event_id" not in event
            if legacyError or "log_failure" in event:
                failure = event.get("log_failure")
                found.append(
                    formatEvent(event)
                    + ("\n" + failure.getTraceback() if failure is not None else "")
                )
        return found


def allIssued(consumers: dict[str, RecordingConsumer]) -> bool:
    """
    Whether every consumer holds a CA-issued certificate.
    """
    return all(c.received and not c.received[-1].provisional for c in consumers.values())


def chainsTo(certifiedKey: CertifiedKey, issuersPEM: bytes) -> bool:
    """
    Whether C{certifiedKey}'s certificate was signed by the intermediate
    in C{issuersPEM} (pebble's root then intermediate).
    """
    root, intermediate = x509.load_pem_x509_certificates(issuersPEM)[:2]
    try:
        certifiedKey.certificate.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
    except (ValueError, TypeError, Exception):
        return False
    return True


async def waitFor(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """
    Poll C{condition} in real time until it holds or C{timeout} seconds
    have passed; return whether it held.
    """
    end = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > end:
            return False
        await deferLater(reactor, step, lambda: None)
    return True


class FaultCase(TestCACase):
    """
    A resource with recording consumers against a real pebble, with every
    event recorded in C{self.recorder}.
    """

    #: The consumers' domain sets, by name.
    SETS: dict[str, tuple[str, ...]] = {
        "files": ("files.example.test", "www.example.test"),
        "reports": ("reports.example.test",),
        "uploads": ("uploads.example.test",),
    }

    def setUp(self) -> None:
        super().setUp()
        self.recorder = Recorder()
        globalLogPublisher.addObserver(self.recorder)
        self.addCleanup(globalLogPublisher.removeObserver, self.recorder)

    def makeResource(
        self,
        acmeURL: str,
        caFile: str,
        challengePort: int,
        sets: dict[str, tuple[str, ...]] | None = None,
        stateDirectory: str | None = None,
        **options: Any,
    ) -> tuple[LetsEncryptResource, dict[str, RecordingConsumer]]:
        """
        A resource for recording consumers of C{sets}, not started.
        """
        registry = Components()
        consumers = {}
        for name, domains in (sets or self.SETS).items():
            consumers[name] = RecordingConsumer(f"{name}-https", domains)
            registry.registerUtility(consumers[name], ICertificateConsumer, name=name)
        http, pool = makeHTTPClient(reactor, loadCABundle(caFile))
        self.addCleanup(pool.closeCachedConnections)
        state = stateDirectory or os.path.abspath(self.mktemp())
        values: dict[str, Any] = {
            "port": challengePort,
            "acmeURL": acmeURL,
            "stateDirectory": state,
            "acmeCAFile": caFile,
        }
        values.update(options)
        resource = LetsEncryptResource(
            attrs.evolve(resourceOptions(), **values),
            registry,
            DirectoryStorage(state, reactor),
            reactor,
            http,
            closeStorage=True,
        )
        return resource, consumers

    def startResource(self, resource: LetsEncryptResource) -> None:
        """
        Start C{resource}, stopped when the test ends.
        """
        resource.startService()
        self.addCleanup(lambda: resource.stopService() if resource.running else None)

    def assertIssued(self, consumers: dict[str, RecordingConsumer], issuersPEM: bytes) -> None:
        """
        Every consumer holds a CA-issued certificate for its names that
        chains to C{issuersPEM}, valid now, for the key it came with.
        """
        for name, consumer in consumers.items():
            current = consumer.received[-1]
            self.assertFalse(current.provisional, name)
            self.assertEqual(set(current.domains), set(consumer.domains), name)
            self.assertTrue(chainsTo(current, issuersPEM), name)
            self.assertGreater(current.notAfter.timestamp(), reactor.seconds(), name)

    def assertNoErrors(self) -> None:
        """
        Nothing was logged as an unexpected error or traceback.
        """
        self.assertEqual(self.recorder.errors(), [])


__all__ = [
    "CAFrontDoor",
    "RestartablePebble",
    "Recorder",
    "FaultCase",
    "chainsTo",
    "waitFor",
]


def dnsManagementPort(testCA: RunningTestCA) -> int:
    """
    The management port of the test CA's DNS server, read from its
    command line (L{startTestCA} does not return it).
    """
    for process in testCA._processes:
        if process.name == "challtestsrv":
            with open(f"/proc/{process.transport.pid}/cmdline", "rb") as stream:
                arguments = stream.read().split(b"\0")
            address = arguments[arguments.index(b"-management") + 1]
            return int(address.rsplit(b":", 1)[1])
    raise LookupError("no challtestsrv")


async def resolveTo(testCA: RunningTestCA, name: str, address: str) -> None:
    """
    Make the test CA's DNS answer C{address} for C{name}.
    """
    import treq

    port = dnsManagementPort(testCA)
    body = json.dumps({"host": name, "addresses": [address]}).encode()
    response = await treq.post(f"http://127.0.0.1:{port}/add-a", body, persistent=False)
    await response.content()
    if response.code != 200:
        raise RuntimeError(f"add-a {name}: HTTP {response.code}")


def shortRetries(case: Any, first: float) -> None:
    """
    Make the first retry after a failure come after C{first} seconds (then
    double as usual) for the rest of the test: the schedule stays the real
    one, only shorter.
    """
    from letsencrypt_resource import policy

    case.patch(policy, "FIRST_RETRY_DELAY", first)
    if policy.retryDelay(1, 86400.0) != first:
        raise AssertionError("policy.retryDelay no longer uses FIRST_RETRY_DELAY")
