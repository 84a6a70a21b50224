"""
Reloading the configuration of a running server (C{SIGHUP}): the plan of
what changes, L{ServerService.reload} on a memory reactor with the fake CA,
and the signal handler, tested without sending signals.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import attrs
from treq.testing import RequestTraversalAgent
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer

from letsencrypt_resource import host
from letsencrypt_resource.config import (
    RESOURCE_OPTIONS,
    ConfigurationError,
    ResourceOptions,
    parseConfiguration,
)
from letsencrypt_resource.drain import GRACE
from letsencrypt_resource.host import ServerService, readConfiguration
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.reload import (
    ReloadOnHangUp,
    changedResourceOptions,
    planReload,
)
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.testing import (
    FakeACMEServer,
    MemoryStore,
    RecordingConsumer,
    runUntilFired,
)
from tests.helpers import connectInMemory
from tests.helpers.resourcecase import HeldRunner, ResourceTestCase, synchronously

RESOURCE = """\
[resources/le]
type = lets-encrypt
address = 127.0.0.1
port = 5002
acme_url = https://acme.test/directory
agree_tos = yes
state_directory = state
{extra}
"""


def httpsService(name: str, port: int, domains: str) -> str:
    """
    The section of an C{https} service C{name} serving C{public}.
    """
    return (
        f"[services/{name}]\ntype = https\nname = {name}-https\naddress = 127.0.0.1\n"
        f"port = {port}\npath = public\nssl_domains = {domains}\n"
    )


FILES = httpsService("files", 6001, "files.example.test, www.example.test")
REPORTS = httpsService("reports", 6002, "reports.example.test")
NEW = httpsService("new", 6003, "new.example.test")


def configuration(*services: str, extra: str = "") -> str:
    """
    A configuration text with the resource and C{services}.
    """
    return "\n".join([RESOURCE.format(extra=extra), *services])


class PlanTests(SynchronousTestCase):
    """
    L{planReload} tells what a new configuration changes.
    """

    def plan(self, old: str, new: str) -> Any:
        return planReload(parseConfiguration(old, "/srv"), parseConfiguration(new, "/srv"))

    def test_servicesAddedRemovedChanged(self) -> None:
        """
        Services are told apart by section: one that is gone is stopped, a
        new one started, one with other options stopped and started again,
        and one with the same options left alone.
        """
        plan = self.plan(
            configuration(FILES, REPORTS),
            configuration(FILES.replace("6001", "7001"), NEW),
        )
        self.assertEqual(plan.stop, ("services/files", "services/reports"))
        self.assertEqual([o.section for o in plan.start], ["services/files", "services/new"])
        self.assertEqual(plan.start[0].port, 7001)
        self.assertEqual(plan.changed, ("services/files",))
        self.assertEqual(plan.added, ("services/new",))
        self.assertEqual(plan.removed, ("services/reports",))
        self.assertEqual(plan.unchanged, ())
        self.assertIsNone(plan.restartSection)

    def test_unchanged(self) -> None:
        """
        The same file changes nothing.
        """
        plan = self.plan(configuration(FILES, REPORTS), configuration(FILES, REPORTS))
        self.assertEqual((plan.stop, plan.start), ((), ()))
        self.assertEqual(plan.unchanged, ("services/files", "services/reports"))

    def test_resourceChangesWaitForRestart(self) -> None:
        """
        Changed resource options are named as the file spells them, and
        the services' changes still apply.
        """
        plan = self.plan(
            configuration(FILES),
            configuration(FILES, NEW, extra="check_interval = 1h").replace(
                "state_directory = state", "state_directory = other"
            ),
        )
        self.assertEqual(plan.restartSection, "resources/le")
        self.assertEqual(plan.restartOptions, ("state_directory", "check_interval"))
        self.assertEqual(plan.added, ("services/new",))

    def test_everyResourceFieldNamed(self) -> None:
        """
        Each field of L{ResourceOptions} is named after an option of the
        file (or the section's name), so event 20198 names what to fix.
        """
        options = parseConfiguration(configuration(), "/srv").resource
        assert options is not None
        known = {option.name for option in RESOURCE_OPTIONS} | {"the section's name"}
        for field in attrs.fields(ResourceOptions):
            value = getattr(options, field.name)
            changed = attrs.evolve(options, **{field.name: (value, "changed")})
            [name] = changedResourceOptions(options, changed)
            self.assertIn(name, known, field.name)

    def test_duplicateNamesRefused(self) -> None:
        """
        Two components with the same C{name} are refused, naming both
        sections: the server could not run them side by side (and a reload
        adding one would stop half-way).
        """
        error = self.assertRaises(
            ConfigurationError,
            parseConfiguration,
            configuration(FILES, NEW.replace("name = new-https", "name = files-https")),
            "/srv",
        )
        self.assertEqual((error.section, error.option), ("services/new", "name"))
        self.assertIn("[services/files]", str(error))
        error = self.assertRaises(
            ConfigurationError,
            parseConfiguration,
            configuration(NEW.replace("name = new-https", "name = resources/le")),
            "/srv",
        )
        self.assertEqual((error.section, error.option), ("services/new", "name"))


@implementer(IListeningPort)
@attrs.define(eq=False)
class RecordingPort:
    """
    A listening port of L{PortsReactor}, which remembers whether it was
    stopped.
    """

    port: int
    factory: Any
    stopped: bool = False
    stopping: Deferred[None] | None = None

    def startListening(self) -> None:
        """
        Already listening.
        """

    def stopListening(self) -> Deferred[None] | None:
        self.stopped = True
        return self.stopping

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self.port)


class PortsReactor(MemoryReactorClock):
    """
    A memory reactor that keeps every TCP port it opened.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[RecordingPort] = []
        self.fromThreads: list[Callable[[], object]] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        listening = RecordingPort(port, factory)
        self.ports.append(listening)
        return listening

    def listening(self) -> dict[int, RecordingPort]:
        """
        The ports not stopped, by number.
        """
        return {p.port: p for p in self.ports if not p.stopped}

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.fromThreads.append(lambda: f(*args))


class ReloadCase(SynchronousTestCase):
    """
    A server on a memory reactor, with the fake CA, and its file.
    """

    def setUp(self) -> None:
        self.reactor = PortsReactor()
        self.reactor.advance(1_800_000_000)
        self.ca = FakeACMEServer(self.reactor)
        self.store = MemoryStore()
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.directory, "public"))
        self.path = os.path.join(self.directory, "server.ini")
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.addCleanup(gc.unfreeze)
        self.servers: list[ServerService] = []

    def write(self, text: str) -> None:
        with open(self.path, "w") as stream:
            stream.write(text)

    def makeResource(
        self, options: ResourceOptions, registry: Any, reactor: Any, lock: Any = None
    ) -> Any:
        resource = LetsEncryptResource(
            options,
            registry,
            self.store,
            reactor,
            RequestTraversalAgent(self.ca),
            runInThread=synchronously,
            random=lambda: 0.5,
        )
        self.ca.validate = resource.responder.lookup
        return resource

    def start(self, text: str) -> ServerService:
        self.write(text)
        server = ServerService(
            readConfiguration(self.path),
            self.reactor,
            path=self.path,
            resourceFactory=self.makeResource,
        )
        server.startService()
        self.addCleanup(server.stopService)
        self.servers.append(server)
        assert server.resource is not None
        runUntilFired(self.reactor, server.resource.whenSettled())
        return server

    def reload(self, server: ServerService, text: str) -> None:
        self.write(text)
        runUntilFired(self.reactor, server.reload())

    def texts(self, eventID: int) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("event_id") == eventID]

    def certificateOn(self, server: ServerService, section: str) -> Any:
        [service] = [s for s in server.fileServices if s.options.section == section]
        return service.consumer.tls.certifiedKey


class ServerReloadTests(ReloadCase):
    """
    L{ServerService.reload} on a memory reactor, with the fake CA.
    """

    def test_unchangedFolderReopened(self) -> None:
        """
        A reload opens again the folder of each unchanged service, once the
        checks passed: a deployment that points the served link at a new
        folder takes effect without a restart.
        """
        public = os.path.join(self.directory, "public")
        os.rename(public, public + "-v1")
        os.makedirs(public + "-v2")
        os.symlink(public + "-v1", public)
        server = self.start(configuration(FILES))
        [service] = server.fileServices
        os.unlink(public)
        os.symlink(public + "-v2", public)
        self.reload(server, configuration(FILES))
        served = service._served
        assert served is not None and served._root is not None
        self.assertTrue(os.path.samestat(os.fstat(served._root), os.stat(public + "-v2")))

    def test_addedServiceListensOthersUntouched(self) -> None:
        """
        A service added to the file listens at once on a provisional
        certificate, then gets one from the CA; the running services keep
        their ports (so their connections) and certificates.
        """
        server = self.start(configuration(FILES, REPORTS))
        before = self.reactor.listening()
        files = self.certificateOn(server, "services/files")
        self.reload(server, configuration(FILES, REPORTS, NEW))
        after = self.reactor.listening()
        self.assertEqual({p: after[p] for p in before}, before)
        self.assertIn(6003, after)
        self.assertIs(self.certificateOn(server, "services/files"), files)
        runUntilFired(self.reactor, server.resource.check())
        issued = self.certificateOn(server, "services/new")
        self.assertFalse(issued.provisional)
        self.assertEqual(issued.domains, ("new.example.test",))
        self.assertEqual(
            self.texts(20196),
            [
                f"20196 Reloaded the configuration from {self.path}: services added: "
                "services/new; removed: none; changed: none; unchanged: "
                "services/files, services/reports."
            ],
        )
        self.assertEqual(
            self.texts(20195), [f"20195 Reloading the configuration from {self.path}."]
        )

    def test_removedServiceStops(self) -> None:
        """
        A service removed from the file stops listening and leaves the
        registry; its domain set is no longer managed.
        """
        server = self.start(configuration(FILES, REPORTS))
        self.reload(server, configuration(FILES))
        self.assertEqual(sorted(self.reactor.listening()), [5002, 6001])
        self.assertEqual(
            [name for name, _ in server.registry.getUtilitiesFor(ICertificateConsumer)],
            ["services/files"],
        )
        self.assertEqual(
            list(server.resource.managed), [frozenset(("files.example.test", "www.example.test"))]
        )
        self.assertEqual([s.options.section for s in server.fileServices], ["services/files"])

    def test_changedDomains(self) -> None:
        """
        New C{ssl_domains} for a service: it listens again on a certificate
        for the new names, ordered from the CA; the old set is dropped.
        """
        server = self.start(configuration(FILES, REPORTS))
        oldPort = self.reactor.listening()[6002]
        self.reload(
            server,
            configuration(FILES, REPORTS.replace("reports.example.test", "new.example.test")),
        )
        self.assertTrue(oldPort.stopped)
        self.assertIsNot(self.reactor.listening()[6002], oldPort)
        runUntilFired(self.reactor, server.resource.check())
        certificate = self.certificateOn(server, "services/reports")
        self.assertEqual(certificate.domains, ("new.example.test",))
        self.assertFalse(certificate.provisional)
        self.assertNotIn(frozenset(["reports.example.test"]), server.resource.managed)

    def test_changedServiceDoesNotWaitForDrain(self) -> None:
        """
        A reload that changes a service with a connection open does not
        wait for that connection: the replacement listens on the port as
        soon as the old port has closed, and the old connection drains in
        the background.
        """
        server = self.start(configuration(FILES, REPORTS))
        oldPort = self.reactor.listening()[6002]
        opened = connectInMemory(oldPort.factory, clock=self.reactor)
        begun = self.reactor.seconds()
        self.reload(
            server,
            configuration(FILES, REPORTS.replace("reports.example.test", "new.example.test")),
        )
        self.assertLess(self.reactor.seconds() - begun, GRACE)
        self.assertTrue(oldPort.stopped)
        self.assertIsNot(self.reactor.listening()[6002], oldPort)
        self.assertIsNone(opened.collector.lostReason)

    def test_changedServiceFolderReopened(self) -> None:
        """
        A service changed while its old self drains a connection serves
        the folder its path names now, not the one its old self opened
        (which the two share until the drain ends).
        """
        public = os.path.join(self.directory, "public")
        os.rename(public, public + "-v1")
        os.makedirs(public + "-v2")
        os.symlink(public + "-v1", public)
        server = self.start(configuration(FILES))
        connectInMemory(self.reactor.listening()[6001].factory, clock=self.reactor)
        os.unlink(public)
        os.symlink(public + "-v2", public)
        self.reload(server, configuration(FILES.replace("www.example.test", "new.example.test")))
        [service] = server.fileServices
        served = service._served
        assert served is not None and served._root is not None
        self.assertTrue(os.path.samestat(os.fstat(served._root), os.stat(public + "-v2")))

    def test_changedPathKeepsCertificate(self) -> None:
        """
        A service whose options change but not its names is started again
        at once on the certificate its set has: no new order.
        """
        os.makedirs(os.path.join(self.directory, "other"))
        server = self.start(configuration(FILES, REPORTS))
        reports = self.certificateOn(server, "services/reports")
        orders = self.ca.ordersCreated
        self.reload(server, configuration(FILES, REPORTS.replace("path = public", "path = other")))
        self.assertIs(self.certificateOn(server, "services/reports"), reports)
        self.assertIn(6002, self.reactor.listening())
        runUntilFired(self.reactor, server.resource.check())
        self.assertEqual(self.ca.ordersCreated, orders)
        self.assertEqual(
            [
                s.options.path
                for s in server.fileServices
                if s.options.section == "services/reports"
            ],
            [os.path.join(self.directory, "other")],
        )

    def assertRefused(self, text: str, details: str) -> None:
        """
        Reloading C{text} changes nothing and says why, in 20197.
        """
        server = self.start(configuration(FILES, REPORTS))
        before = dict(self.reactor.listening())
        running = server.configuration
        self.reload(server, text)
        self.assertEqual(self.reactor.listening(), before)
        self.assertIs(server.configuration, running)
        [text] = self.texts(20197)
        self.assertIn(f"20197 The configuration in {self.path} is not applied", text)
        self.assertIn(details, text)
        self.assertEqual(self.texts(20196), [])

    def test_parseErrorRefused(self) -> None:
        """
        A file that does not parse is refused; the server goes on as it was.
        """
        self.assertRefused(
            configuration(FILES, REPORTS.replace("6002", "99999")),
            "[services/reports] option 'port'",
        )

    def test_fileSystemErrorRefused(self) -> None:
        """
        A file whose checks on the file system fail (a missing served
        folder) is refused too.
        """
        self.assertRefused(
            configuration(FILES, REPORTS.replace("path = public", "path = missing")),
            "[services/reports] option 'path'",
        )

    def test_ftpsUnloadableRefused(self) -> None:
        """
        A reload that adds the first FTPS service, whose modules cannot be
        loaded (the package changed on disk since the start), is refused
        before anything changes; the next reload works.
        """
        ftp = "\n".join(
            [
                "[services/ftp]",
                "type = ftps",
                "address = 127.0.0.1",
                "port = 6021",
                "path = public",
                "ssl_domains = ftp.example.test",
                "anonymous = yes",
                "",
            ]
        )
        name = "letsencrypt_resource.ftps"
        loaded = sys.modules.pop(name, None)
        sys.modules[name] = None  # type: ignore[assignment]
        try:
            self.assertRefused(
                configuration(FILES, NEW, ftp),
                "the FTPS service cannot be loaded: ModuleNotFoundError",
            )
        finally:
            del sys.modules[name]
            if loaded is not None:
                sys.modules[name] = loaded
        [server] = self.servers
        self.reload(server, configuration(FILES, NEW))
        self.assertEqual(set(self.reactor.listening()) - {5002}, {6001, 6003})
        self.assertEqual(len(self.texts(20196)), 1)

    def test_endpointBackslashRefused(self) -> None:
        """
        An endpoint description ending in a lone backslash (Twisted's
        parser fails on it with a C{RuntimeError}) is refused as the
        option's problem, not blamed on the FTPS service.
        """
        self.assertRefused(
            configuration(FILES, REPORTS + "endpoint = tcp:\\\n"),
            "[services/reports] option 'endpoint': 'tcp:\\\\' ends in a backslash",
        )
        self.assertNotIn("FTPS", self.texts(20197)[0])

    def test_unexpectedErrorRefused(self) -> None:
        """
        An unexpected error while reading a configuration without FTPS
        services refuses the reload, saying so without blaming FTPS.
        """

        def fail(path: str) -> None:
            raise RuntimeError("a bug")

        self.patch(host, "readConfiguration", fail)
        self.assertRefused(
            configuration(FILES, REPORTS, NEW),
            "the configuration cannot be checked: RuntimeError('a bug')",
        )

    def test_unreadableFileRefused(self) -> None:
        """
        A file that is gone is refused, naming it.
        """
        server = self.start(configuration(FILES))
        os.remove(self.path)
        runUntilFired(self.reactor, server.reload())
        [text] = self.texts(20197)
        self.assertIn("cannot read the configuration file", text)

    def test_resourceChangesNeedRestart(self) -> None:
        """
        Changes to the resource section are named in 20198 and wait for a
        restart; the services' changes are applied meanwhile, and the
        running configuration keeps the running resource's options.
        """
        server = self.start(configuration(FILES))
        running = server.configuration.resource
        self.reload(server, configuration(FILES, NEW, extra="check_interval = 1h"))
        self.assertEqual(
            self.texts(20198),
            [
                f"20198 Changes to [resources/le] in {self.path} take effect only "
                "after a restart: check_interval."
            ],
        )
        self.assertIn(6003, self.reactor.listening())
        self.assertIs(server.configuration.resource, running)
        self.assertEqual(len(server.configuration.services), 2)

    def test_resourceRemovedRefused(self) -> None:
        """
        A file without the resource is refused, and the running services
        go on: the file would leave the server nothing to do.
        """
        server = self.start(configuration(FILES))
        before = dict(self.reactor.listening())
        self.reload(server, "[server]\nname = x\n")
        self.assertEqual(self.reactor.listening(), before)
        [text] = self.texts(20197)
        self.assertIn("would do nothing", text)
        self.assertEqual(self.texts(20196), [])

    def test_reloadsOneAtATime(self) -> None:
        """
        A reload asked for while one runs waits for it, then reads the file
        again.
        """
        server = self.start(configuration(FILES))
        self.write(configuration(FILES, NEW))
        first = server.reload()
        second = server.reload()
        runUntilFired(self.reactor, first)
        runUntilFired(self.reactor, second)
        self.assertEqual(len(self.texts(20196)), 2)
        self.assertEqual(len([p for p in self.reactor.ports if p.port == 6003]), 1)


class ReloadAttackTests(ReloadCase):
    """
    Reloads that try to get around the checks made at start.
    """

    def test_servedStateDirectoryRefused(self) -> None:
        """
        A new file that moves C{state_directory} (a change that waits for a
        restart) and adds a service serving the running state directory is
        refused: the services are checked against the resource as it runs,
        not only as the new file has it.
        """
        state = os.path.join(self.directory, "state")
        try:
            parseConfiguration(
                configuration(NEW.replace("path = public", f"path = {state}")),
                self.directory,
            )
        except ConfigurationError:
            pass
        else:
            raise SkipTest("needs the check that a served folder holds no state (item 1)")
        server = self.start(configuration(FILES))
        moved = configuration(FILES, NEW.replace("path = public", f"path = {state}"))
        self.reload(server, moved.replace("state_directory = state", "state_directory = other"))
        [text] = self.texts(20197)
        self.assertIn("state_directory", text)
        self.assertNotIn(6003, self.reactor.listening())

    def test_stopDuringReload(self) -> None:
        """
        A server stopped while a reload waits for services to stop starts
        nothing afterwards.
        """
        server = self.start(configuration(FILES, REPORTS))
        held: Deferred[None] = Deferred()
        self.reactor.listening()[6002].stopping = held
        self.write(configuration(FILES, NEW))
        reloading = server.reload()
        server.stopService()
        held.callback(None)
        runUntilFired(self.reactor, reloading)
        self.assertNotIn(6003, [p.port for p in self.reactor.ports])
        self.assertEqual(self.texts(20196), [])


class HangUpTests(SynchronousTestCase):
    """
    L{ReloadOnHangUp}, with its handler called as the signal would.
    """

    def test_handlerSchedulesReload(self) -> None:
        """
        While running, the C{SIGHUP} handler only schedules the reload in
        the reactor thread; stopping puts the previous handler back.
        """
        previous = signal.getsignal(signal.SIGHUP)
        reactor = PortsReactor()
        reloads: list[None] = []
        service = ReloadOnHangUp(lambda: reloads.append(None), reactor)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        self.assertEqual(reloads, [])
        [scheduled] = reactor.fromThreads
        scheduled()
        self.assertEqual(reloads, [None])
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)


class SignerRunner(HeldRunner):
    """
    Runs jobs at once, but holds the making of provisional signers.
    """

    HELD = ("makeSigner",)


class ReloadClashTests(ReloadCase):
    """
    New services are checked against the resource as it runs, not only
    as the new file has it.
    """

    def test_runningChallengePortRefused(self) -> None:
        """
        A file that moves the challenge port (a change that waits for a
        restart) and adds a service on the running one is refused, and
        the services go on.
        """
        server = self.start(configuration(FILES))
        before = dict(self.reactor.listening())
        moved = configuration(FILES, NEW.replace("port = 6003", "port = 5002"))
        self.reload(server, moved.replace("port = 5002\nacme_url", "port = 5003\nacme_url"))
        [text] = self.texts(20197)
        self.assertIn("[services/new] option 'port'", text)
        self.assertIn("[resources/le]", text)
        self.assertEqual(self.reactor.listening(), before)

    def test_runningNameRefused(self) -> None:
        """
        A file that renames the resource and gives its running name to a
        new service is refused: two components would share one name.
        """
        server = self.start(configuration(FILES))
        taken = NEW.replace("name = new-https", "name = resources/le")
        self.reload(server, configuration(FILES, taken, extra="name = other"))
        [text] = self.texts(20197)
        self.assertIn("[services/new] option 'name'", text)
        self.assertEqual(self.texts(20196), [])


class ConsumerReloadTests(ResourceTestCase):
    """
    L{LetsEncryptResource.reloadConsumers} with attempts and provisions
    under way.
    """

    def test_droppedAndAddedBackDuringOrder(self) -> None:
        """
        A set dropped while its order runs, then added back before it
        ends, is taken back with that order: no second attempt starts
        beside it (20155 once, no order placed or resumed again), and its
        consumers get the certificate it ends in.
        """
        self.server.validationDelay = 30
        resource = self.makeResource()
        resource.startService()
        self.addCleanup(self.stop, resource)
        self.reactor.advance(1)
        self.assertEqual(self.server.ordersCreated, 2)
        reports = self.consumers["reports"]
        self.registry.unregisterUtility(reports, ICertificateConsumer, name="reports")
        resource.reloadConsumers()
        self.assertNotIn(frozenset(reports.domains), resource.managed)
        self.registry.registerUtility(reports, ICertificateConsumer, name="reports")
        resource.reloadConsumers()
        runUntilFired(self.reactor, resource.whenSettled())
        self.assertEqual(self.server.ordersCreated, 2)
        self.assertEqual(self.eventIDs().count(20155), 2)
        self.assertNotIn(20191, self.eventIDs())
        self.assertFalse(reports.received[-1].provisional)

    def test_overlappingProvisionsMakeOneSigner(self) -> None:
        """
        A reload that adds a set while the first start still makes the
        provisional signer waits for it instead of making a second one.
        """
        runner = SignerRunner()
        resource = self.makeResource()
        resource.runInThread = runner
        resource.startService()
        self.addCleanup(self.stop, resource)
        solo = RecordingConsumer("solo-https", ("files.example.test",))
        self.registry.registerUtility(solo, ICertificateConsumer, name="solo")
        resource.reloadConsumers()
        self.assertEqual(runner.names(), ["makeSigner"])
        runner.releaseOne()
        runUntilFired(self.reactor, resource.whenSettled())
        self.assertEqual(runner.names(), [])
        self.assertEqual(len(self.eventTexts(20180)), 1)
        self.assertTrue(solo.received[0].provisional)
