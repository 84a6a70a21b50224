"""
Tests for L{letsencrypt_resource.quietport}: on the real reactor, on
loopback, and on a memory reactor.
"""

from __future__ import annotations

import errno
import os
import socket
from types import ModuleType
from typing import Any

import attrs
from twisted.internet import abstract, reactor, tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from letsencrypt_resource import quietport
from letsencrypt_resource.listening import Listener, failureDetails
from letsencrypt_resource.quietport import (
    BACKLOG,
    QuietPort,
    addressFamily,
    listenQuietly,
    nonBlockingStream,
)
from letsencrypt_resource.turnports import TurnEndpoint
from tests.helpers.received import Received


def ipv6Here() -> None:
    """
    Skip the test where the system has no IPv6.
    """
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        raise SkipTest("no IPv6 here") from None


def sysctl(name: str) -> int | None:
    """
    The value of the Linux IPv4 setting C{name}
    (C{/proc/sys/net/ipv4/NAME}), or C{None} where it cannot be read.
    """
    try:
        with open(f"/proc/sys/net/ipv4/{name}") as setting:
            return int(setting.read())
    except (OSError, ValueError):
        return None


def socketModule(**constants: int) -> ModuleType:
    """
    A socket module with only C{constants}.
    """
    module = ModuleType("socket")
    vars(module).update(constants)
    return module


@attrs.frozen
class Where:
    """
    Where a listener listens: an address and a port.
    """

    address: str
    port: int
    endpoint: None = None


class Greeting(Protocol):
    """
    Says hello and hangs up.
    """

    def connectionMade(self) -> None:
        self.transport.write(b"hello")
        self.transport.loseConnection()


def greetings() -> Factory:
    """
    A quiet factory of L{Greeting}s.
    """
    factory = Factory.forProtocol(Greeting)
    factory.noisy = False
    return factory


class QuietPortTests(TestCase):
    """
    A listener on an address and port opens a L{QuietPort} on the real
    reactor: it serves as Twisted's port would, and logs nothing.
    """

    async def test_servesWithoutLines(self) -> None:
        """
        The port a listener opens on an address and port accepts
        connections and serves them, and neither its opening nor its
        closing logs anything (Twisted's port logs "... starting on PORT"
        and "(... Port PORT Closed)": with thousands of services, those
        lines were a third of the start-up once the reactor ran).
        """
        listener = Listener.on(reactor, Where("127.0.0.1", 0), greetings())
        with capturedLogs() as opening:
            port = await listener.start()
        self.assertIsInstance(port, QuietPort)
        received = Received()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        await connectProtocol(endpoint, received)
        self.assertEqual(await received.ended, b"hello")
        with capturedLogs() as closing:
            await listener.stop().closed
        client = "twisted.internet.endpoints.OneShotFactory"
        self.assertEqual([e for e in opening + closing if e["log_namespace"] != client], [])

    async def test_socket(self) -> None:
        """
        The port's socket, made in fewer system calls than Twisted's, is
        as Twisted's: it does not block, child processes do not inherit
        it, and it reuses addresses (a restart need not wait for the
        connections of the last run to time out).
        """
        listener = Listener.on(reactor, Where("127.0.0.1", 0), greetings())
        port = await listener.start()
        self.addCleanup(listener.stopListening)
        made = port.socket
        self.assertEqual(
            (
                made.getblocking(),
                made.get_inheritable(),
                made.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0,
            ),
            (False, False, True),
        )

    async def test_backlog(self) -> None:
        """
        The port listens with a backlog of L{BACKLOG}, an FTPS control
        port's, not Twisted's 50: a burst of connections to an C{https}
        service is not dropped by the kernel.
        """
        listener = Listener.on(reactor, Where("127.0.0.1", 0), greetings())
        port = await listener.start()
        self.addCleanup(listener.stopListening)
        self.assertEqual(port.backlog, BACKLOG)

    async def test_socketWithoutNonBlockingFlag(self) -> None:
        """
        Where the system has no C{SOCK_NONBLOCK} (macOS), the port still
        listens, on a socket that does not block.
        """
        # What the module finds at import on such a system.
        flag, kind = nonBlockingStream(socketModule(SOCK_STREAM=socket.SOCK_STREAM))
        self.patch(quietport, "_NON_BLOCKING", flag)
        self.patch(quietport, "_NON_BLOCKING_STREAM", kind)
        original, types = socket.socket, []

        def making(family: int, kind: int) -> socket.socket:
            types.append(kind)
            return original(family, kind)

        listener = Listener.on(reactor, Where("127.0.0.1", 0), greetings())
        # Only while it listens (at once): accepting makes sockets too.
        socket.socket = making  # type: ignore[misc,assignment]
        try:
            started = listener.start()
        finally:
            socket.socket = original  # type: ignore[misc]
        port = await started
        self.addCleanup(listener.stopListening)
        self.assertEqual(types[0], socket.SOCK_STREAM)
        self.assertFalse(port.socket.getblocking())
        received = Received()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        await connectProtocol(endpoint, received)
        self.assertEqual(await received.ended, b"hello")

    def test_nonBlockingFlagFound(self) -> None:
        """
        A socket module without C{SOCK_NONBLOCK} (macOS's) gives no flag
        and a plain stream; one with it gives the flag and a stream with
        it.  The module found this system's at import.
        """
        self.assertEqual(
            (
                nonBlockingStream(socketModule(SOCK_STREAM=1)),
                nonBlockingStream(socketModule(SOCK_STREAM=1, SOCK_NONBLOCK=2048)),
                (quietport._NON_BLOCKING, quietport._NON_BLOCKING_STREAM),
            ),
            ((0, 1), (2048, 2049), nonBlockingStream(socket)),
        )
        if hasattr(socket, "SOCK_NONBLOCK"):
            self.assertEqual(
                quietport._NON_BLOCKING_STREAM, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
            )

    async def test_ipv6(self) -> None:
        """
        An IPv6 address is listened on as such.
        """
        try:
            socket.socket(socket.AF_INET6).close()
        except OSError:
            self.skipTest("no IPv6 here")
        listener = Listener.on(reactor, Where("::1", 0), greetings())
        port = await listener.start()
        self.addCleanup(listener.stopListening)
        self.assertEqual(port.getHost().host, "::1")
        received = Received()
        endpoint = TCP6ClientEndpoint(reactor, "::1", port.getHost().port)
        await connectProtocol(endpoint, received)
        self.assertEqual(await received.ended, b"hello")

    async def test_portTaken(self) -> None:
        """
        A port another socket listens on is not taken: the start fails with
        C{CannotListenError}, told as the system said it, and no socket is
        left open.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        factory = greetings()
        listener = Listener.on(reactor, Where("127.0.0.1", taken), factory)
        error = await self.assertFailure(listener.start(), CannotListenError)
        self.assertIn("Address already in use", failureDetails(Failure(error)))
        self.assertEqual(factory.numPorts, 0)


class RecordingPort(QuietPort):
    """
    A L{QuietPort} that keeps the sockets it makes, to check they were
    closed.
    """

    def createInternetSocket(self) -> socket.socket:
        made = super().createInternetSocket()
        self.made: list[socket.socket] = [*getattr(self, "made", []), made]
        return made


class StartingFactory(Factory):
    """
    A quiet factory of L{Greeting}s that counts its starts and stops, and
    may fail to start.
    """

    protocol = Greeting
    noisy = False

    def __init__(self, broken: bool = False):
        self.broken = broken
        self.told: list[str] = []

    def startFactory(self) -> None:
        self.told.append("start")
        if self.broken:
            raise RuntimeError("cannot start")

    def stopFactory(self) -> None:
        self.told.append("stop")


class RefusedPortTests(TestCase):
    """
    A L{QuietPort} that cannot listen raises what Twisted's port raises,
    closes the socket it made and stops its factory again: a reload can
    listen on the port, and no client waits on a backlog nobody accepts.
    """

    def refused(
        self, port: int, address: str, factory: StartingFactory | None = None
    ) -> tuple[BaseException, RecordingPort, StartingFactory]:
        """
        Listen on C{port} of C{address}, on the real reactor: what it
        raised, the port and its factory.  Should it listen, the test
        fails, and the port is stopped at its end.
        """
        factory = StartingFactory() if factory is None else factory
        quiet = RecordingPort(port, factory, BACKLOG, address, reactor)
        self.addCleanup(lambda: [made.close() for made in getattr(quiet, "made", [])])
        try:
            quiet.startListening()
        except BaseException as error:
            return error, quiet, factory
        self.addCleanup(quiet.stopListening)
        self.fail(f"listened on {address} port {port}")

    def assertAbandoned(self, quiet: RecordingPort, factory: StartingFactory) -> None:
        """
        C{quiet} closed and forgot the one socket it made, and C{factory}
        counts no port.
        """
        [made] = quiet.made
        self.assertEqual(made.fileno(), -1)
        self.assertEqual(
            (quiet.connected, getattr(quiet, "socket", None), quiet.fileno(), factory.numPorts),
            (False, None, -1, 0),
        )

    def test_portOverRange(self) -> None:
        """
        A port over 65535 (which only an embedder can ask: the
        configuration refuses it) raises C{OverflowError}, as Twisted's
        port does, and the socket made for it is closed, not left open
        until the collector finds it.
        """
        error, quiet, factory = self.refused(70000, "127.0.0.1")
        self.assertIsInstance(error, OverflowError)
        self.assertAbandoned(quiet, factory)
        self.assertEqual(factory.told, [])

    def test_addressNotHere(self) -> None:
        """
        An address this host does not have is refused with
        C{CannotListenError}, told as the system said it; the socket is
        closed.
        """
        if sysctl("ip_nonlocal_bind") != 0:
            raise SkipTest(
                "net.ipv4.ip_nonlocal_bind is not 0 here (or cannot be read): "
                "an address the host lacks may be bound"
            )
        error, quiet, factory = self.refused(0, "192.0.2.1")
        self.assertIsInstance(error, CannotListenError)
        self.assertIn("Cannot assign requested address", failureDetails(Failure(error)))
        self.assertAbandoned(quiet, factory)

    def test_permissionRefused(self) -> None:
        """
        A port below 1024 for a user without the privilege to bind it is
        refused with C{CannotListenError}, told as the system said it; the
        socket is closed.  (Run as root, the test binds as C{nobody}.)
        """
        if os.geteuid() != 0:
            raise SkipTest("binds as another user: run as root")
        unprivileged = sysctl("ip_unprivileged_port_start")
        if unprivileged is None or unprivileged <= 1:
            raise SkipTest(
                "net.ipv4.ip_unprivileged_port_start is not above 1 here (or "
                f"cannot be read: {unprivileged}): any user may bind port 1"
            )
        os.seteuid(65534)
        try:
            error, quiet, factory = self.refused(1, "127.0.0.1")
        finally:
            os.seteuid(0)
        self.assertIsInstance(error, CannotListenError)
        self.assertIn("Permission denied", failureDetails(Failure(error)))
        self.assertAbandoned(quiet, factory)

    def test_readingRefused(self) -> None:
        """
        When the reactor cannot read the socket bound and listening (epoll
        refuses it: C{fs.epoll.max_user_watches} reached, or no memory),
        the start fails with C{CannotListenError}, told as the system said
        it; the socket is closed, the factory stopped again, and the port
        can be listened on again at once (a reload).
        """
        bound: list[int] = []

        def refusing(quiet: RecordingPort) -> None:
            bound.append(quiet.socket.getsockname()[1])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.patch(RecordingPort, "startReading", refusing)
        error, quiet, factory = self.refused(0, "127.0.0.1")
        self.assertIsInstance(error, CannotListenError)
        self.assertIn("No space left on device", failureDetails(Failure(error)))
        self.assertAbandoned(quiet, factory)
        self.assertEqual(factory.told, ["start", "stop"])
        again = QuietPort(bound[0], greetings(), BACKLOG, "127.0.0.1", reactor)
        again.startListening()
        self.addCleanup(again.stopListening)
        self.assertEqual(again.getHost().port, bound[0])

    def test_factoryStartFails(self) -> None:
        """
        When the factory fails to start, what it raised is raised, and the
        socket, bound and listening by then, is closed.
        """
        error, quiet, factory = self.refused(0, "127.0.0.1", StartingFactory(broken=True))
        self.assertEqual(str(error), "cannot start")
        self.assertAbandoned(quiet, factory)
        self.assertEqual(factory.told, ["start"])

    def test_socketOptionRefused(self) -> None:
        """
        When the new socket cannot be set to reuse addresses, the start
        fails with C{CannotListenError}, and the socket is closed.
        """
        made: list[socket.socket] = []

        def refusing(listening: socket.socket, *option: Any) -> None:
            made.append(listening)
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))

        self.patch(socket.socket, "setsockopt", refusing)
        factory = StartingFactory()
        quiet = QuietPort(0, factory, BACKLOG, "127.0.0.1", reactor)
        self.addCleanup(lambda: [listening.close() for listening in made])
        error = self.assertRaises(CannotListenError, quiet.startListening)
        self.assertIn("No buffer space available", failureDetails(Failure(error)))
        [listening] = made
        self.assertEqual(listening.fileno(), -1)
        self.assertEqual((quiet.connected, factory.told), (False, []))


class FTPSPortTests(TestCase):
    """
    An FTPS service's control port, a
    L{TurnPort <letsencrypt_resource.turnports.TurnPort>}, is quiet too.
    """

    async def test_listensWithoutLines(self) -> None:
        """
        A listener on a L{TurnEndpoint}, as an FTPS service on an address
        and port listens, logs neither Twisted's "... starting on PORT" as
        it starts nor "(... Port PORT Closed)" as it stops, and keeps its
        own backlog.
        """
        listener = Listener(
            lambda: TurnEndpoint(reactor, 0, "127.0.0.1"), greetings(), reactor, "ftps test"
        )
        with capturedLogs() as logged:
            port = await listener.start()
            self.assertIsInstance(port, QuietPort)
            self.assertEqual(port.backlog, BACKLOG)
            await listener.stop().closed
        self.assertEqual(logged, [])


class OtherReactorTests(SynchronousTestCase):
    """
    A reactor whose C{listenTCP} is not Twisted's own for POSIX listens
    through it.
    """

    def test_memoryReactor(self) -> None:
        """
        A memory reactor is asked to listen, where the listener says.
        """
        memory = MemoryReactor()
        factory = Factory()
        port = listenQuietly(memory, 8443, factory, "192.0.2.1")
        self.assertNotIsInstance(port, QuietPort)
        [(number, listened, backlog, interface)] = memory.tcpServers
        self.assertEqual(
            (number, listened, backlog, interface), (8443, factory, BACKLOG, "192.0.2.1")
        )


class AddressFamilyTests(SynchronousTestCase):
    """
    A L{QuietPort} finds out about its address once for each distinct
    address, not once a port.
    """

    def setUp(self) -> None:
        addressFamily.cache_clear()
        self.addCleanup(addressFamily.cache_clear)
        quietport._resolveUnscoped.cache_clear()
        self.addCleanup(quietport._resolveUnscoped.cache_clear)

    def test_familyOnceAnAddress(self) -> None:
        """
        Ports on the same address parse it once: IPv4 and IPv6 addresses
        get their families and address types, as Twisted's port gives
        them.
        """
        parsed: list[str] = []
        isIPv6 = abstract.isIPv6Address

        def counted(address: str) -> bool:
            parsed.append(address)
            return isIPv6(address)

        self.patch(abstract, "isIPv6Address", counted)
        ports = [
            QuietPort(8000 + n, Factory(), interface=address, reactor=MemoryReactor())
            for n in range(3)
            for address in ("127.0.0.1", "::1")
        ]
        self.assertEqual(sorted(parsed), ["127.0.0.1", "::1"])
        self.assertEqual(
            {(p.interface, p.addressFamily, p._addressType) for p in ports},
            {
                ("127.0.0.1", socket.AF_INET, IPv4Address),
                ("::1", socket.AF_INET6, IPv6Address),
            },
        )
        self.assertEqual([p.port for p in ports[::2]], [8000, 8001, 8002])
        self.assertEqual(
            {(p.backlog, p._reuseAddress, p._reusePort) for p in ports}, {(50, True, False)}
        )

    def countResolutions(self) -> list[str]:
        """
        Count Twisted's resolutions of IPv6 addresses for binding: the
        addresses resolved, in order.
        """
        resolved: list[str] = []
        resolve = tcp._resolveIPv6

        def counted(address: str, port: int) -> tuple[str, int, int, int]:
            resolved.append(address)
            return resolve(address, port)  # type: ignore[no-any-return]

        self.patch(tcp, "_resolveIPv6", counted)
        return resolved

    def listenOn(self, address: str) -> QuietPort:
        """
        A L{QuietPort} listening on C{address}, any port, on a memory
        reactor; closed at the end of the test.
        """
        port = QuietPort(0, Factory(), interface=address, reactor=MemoryReactor())
        port.startListening()
        self.addCleanup(port.socket.close)
        return port

    def test_unscopedOnceThroughListening(self) -> None:
        """
        Ports listening on an IPv6 address without a scope resolve it once
        for binding; each binds its own port.
        """
        ipv6Here()
        resolved = self.countResolutions()
        ports = [self.listenOn("::1") for _ in range(3)]
        self.assertEqual(resolved, ["::1"])
        self.assertEqual(len({p.socket.getsockname()[1] for p in ports}), 3)
        self.assertEqual({p.socket.getsockname()[0] for p in ports}, {"::1"})

    def test_scopedAtEachListen(self) -> None:
        """
        An IPv6 address with a scope is resolved again at each listen: its
        interface may have been made again with a new index.
        """
        ipv6Here()
        resolved: list[str] = []
        scopes = iter([1, 7])

        def rescoped(address: str, port: int) -> tuple[str, int, int, int]:
            resolved.append(address)
            return ("::1", port, 0, next(scopes))

        self.patch(tcp, "_resolveIPv6", rescoped)
        binds: list[tuple[Any, ...]] = []
        bind = socket.socket.bind

        def recorded(made: socket.socket, where: Any) -> None:
            binds.append(where)
            bind(made, where[:3] + (0,))

        self.patch(socket.socket, "bind", recorded)
        for _ in range(2):
            self.listenOn("fe80::1%eth9")
        self.assertEqual(resolved, ["fe80::1%eth9"] * 2)
        self.assertEqual([where[3] for where in binds], [1, 7])


class TwistedPortTests(SynchronousTestCase):
    """
    A L{QuietPort} is built as Twisted's own TCP port: if a Twisted release
    set another attribute, or another value, the inherited methods could
    fail at run time.
    """

    def test_sameAttributes(self) -> None:
        """
        Built with the same arguments, a L{QuietPort} and Twisted's
        C{tcp.Port} have the same attributes with the same values, on all
        addresses, IPv4 and IPv6, with and without a scope.
        """
        factory, memory = Factory(), MemoryReactor()
        for address in ("", "127.0.0.1", "192.0.2.55", "::1", "fe80::1%lo"):
            twisted = tcp.Port(443, factory, BACKLOG, address, memory)
            quiet = QuietPort(443, factory, BACKLOG, address, memory)
            names = vars(twisted).keys() | vars(quiet).keys()
            self.assertEqual(
                {name: getattr(quiet, name, "(not set)") for name in names},
                {name: getattr(twisted, name, "(not set)") for name in names},
                address,
            )
