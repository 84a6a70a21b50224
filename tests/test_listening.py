"""
Tests for L{letsencrypt_resource.listening}, on memory reactors.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, RaisingMemoryReactor
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import listening
from letsencrypt_resource.config import ServiceOptions
from letsencrypt_resource.ftps import FTPSService
from letsencrypt_resource.ftpsoptions import FTPSOptions
from letsencrypt_resource.listening import (
    NO_PORT,
    Listener,
    QuietTCPEndpoint,
    checkDescription,
    endpointOf,
    failureDetails,
    inheritedSocketProblem,
    listeningPlace,
    place,
    tcpBinding,
)
from letsencrypt_resource.quietport import BACKLOG


def options(**overrides: Any) -> ServiceOptions:
    """
    The options of a service on 192.0.2.1 port 8443, with some changed.
    """
    values: dict[str, Any] = {
        "section": "services/s1",
        "type": "https",
        "name": "s1",
        "description": "",
        "address": "192.0.2.1",
        "port": 8443,
        "domains": ("files.example.com",),
        "path": "/srv/files",
        "debug": False,
    }
    values.update(overrides)
    return ServiceOptions(**values)


class DescriptionTests(SynchronousTestCase):
    """
    Tests for L{endpointOf} and L{tcpBinding}.
    """

    def test_addressAndPort(self) -> None:
        """
        Without an endpoint, a listener listens on TCP at its address and
        port, IPv6 addresses included, with a backlog of L{BACKLOG} (not
        Twisted's 50): as C{tcp:PORT:interface=ADDRESS:backlog=BACKLOG}
        would.
        """
        for address, port in [("192.0.2.1", 80), ("::1", 443), ("2001:db8::1", 8443)]:
            reactor = MemoryReactor()
            factory = Factory()
            endpointOf(reactor, options(address=address, port=port)).listen(factory)
            parsed = MemoryReactor()
            escaped = address.replace(":", "\\:")
            serverFromString(parsed, f"tcp:{port}:interface={escaped}:backlog={BACKLOG}").listen(
                factory
            )
            self.assertEqual(reactor.tcpServers, [(port, factory, BACKLOG, address)])
            self.assertEqual(reactor.tcpServers, parsed.tcpServers)

    def test_endpointReplacesAddress(self) -> None:
        """
        An endpoint, when set, is the description listened on.
        """
        reactor = MemoryReactor()
        factory = Factory()
        endpointOf(reactor, options(endpoint="unix:/run/files.sock")).listen(factory)
        self.assertEqual(reactor.tcpServers, [])
        self.assertEqual([path for path, *_ in reactor.unixServers], ["/run/files.sock"])

    def test_bindingOfOtherTypes(self) -> None:
        """
        Only C{tcp:} and C{tcp6:} descriptions bind a comparable address:
        the every-interface defaults are named, and port 0 (any port) is not
        comparable.
        """
        self.assertEqual(tcpBinding("tcp:80"), ("0.0.0.0", 80))
        self.assertEqual(tcpBinding("tcp6:80"), ("::", 80))
        self.assertIsNone(tcpBinding("tcp:0"))
        self.assertIsNone(tcpBinding("unix:/run/files.sock"))
        self.assertIsNone(tcpBinding("systemd:domain=INET:index=0"))


class CheckDescriptionTests(SynchronousTestCase):
    """
    Tests for L{checkDescription} and L{inheritedSocketProblem}.
    """

    def test_streamTypes(self) -> None:
        """
        C{tcp:}, C{tcp6:}, C{unix:} and C{systemd:} descriptions are taken,
        stripped; a C{systemd:} one even when no socket was passed, which
        is only looked for when the server starts.
        """
        for text in (
            "tcp:443:interface=127.0.0.1",
            "tcp6:443:interface=\\:\\:1",
            "unix:/run/files.sock:mode=660",
            "systemd:domain=INET:index=0",
            "systemd:domain=INET6:name=files",
        ):
            self.assertEqual(checkDescription(f" {text} "), text)

    def test_sslRefused(self) -> None:
        """
        An C{ssl:} description is refused, saying that the TLS is the
        resource's own: it would wrap the services' TLS in another.
        """
        error = self.assertRaises(ValueError, checkDescription, "ssl:443:privateKey=key.pem")
        self.assertIn("ssl: endpoint", str(error))
        self.assertIn("tcp:, tcp6:, unix: or systemd:", str(error))

    def test_otherTypesRefused(self) -> None:
        """
        Any other type is refused, among them client endpoint types and
        plugins that may wrap connections in anything (such as txacme's
        C{le:}).
        """
        for text in ("le:/srv/certs:tcp:443", "txtorcon:80", "http:80", "443", ""):
            error = self.assertRaises(ValueError, checkDescription, text)
            self.assertIn("is not a tcp:, tcp6:, unix: or systemd:", str(error))

    def test_invalidArgumentsRefused(self) -> None:
        """
        A description Twisted cannot build an endpoint from, or whose port
        is out of range, is refused with what is wrong.
        """
        for text, reason in [
            ("tcp:http", "invalid literal"),
            ("tcp:443:bind=0.0.0.0", "unexpected keyword argument 'bind'"),
            ("systemd:domain=INET", "exactly one of descriptor index or name"),
            ("tcp:70000", "outside the range 1 to 65535"),
        ]:
            error = self.assertRaises(ValueError, checkDescription, text)
            self.assertIn(reason, str(error), text)

    def test_loneBackslashRefused(self) -> None:
        """
        A description ending in a backslash that escapes nothing (Twisted's
        parser raises C{RuntimeError} on it) is refused with a
        C{ValueError} saying so; an escaped backslash at the end is taken.
        """
        for text in ("tcp:\\", "tcp6:443:interface=\\", "unix:\\\\\\", "systemd:\\"):
            error = self.assertRaises(ValueError, checkDescription, text)
            self.assertIn("ends in a backslash that escapes nothing", str(error), text)
        self.assertEqual(checkDescription("unix:/run/a\\\\"), "unix:/run/a\\\\")

    def test_anyParserErrorRefused(self) -> None:
        """
        Whatever else Twisted's parsers raise on a description refuses it
        with a C{ValueError}, which the configuration reports as the
        option's problem.
        """

        def odd(reactor: object, text: str) -> None:
            raise RuntimeError("odd text")

        self.patch(listening, "serverFromString", odd)
        error = self.assertRaises(ValueError, checkDescription, "tcp:443")
        self.assertIn("is not a valid endpoint description: odd text", str(error))

    def test_missingSystemdSocket(self) -> None:
        """
        A C{systemd:} description names a socket this process was not
        passed; other types need none.
        """
        problem = inheritedSocketProblem("systemd:domain=INET:index=0")
        assert problem is not None
        self.assertIn("systemd did not pass", problem)
        self.assertIsNone(inheritedSocketProblem("tcp:443"))


class PlaceTests(SynchronousTestCase):
    """
    Tests for L{place}, L{listeningPlace} and L{failureDetails}: what the
    listening events name.
    """

    def test_addressAndPort(self) -> None:
        """
        A listener on an address and port is named by them, with the port
        bound once it listens.
        """
        reactor = MemoryReactor()
        port = reactor.listenTCP(0, Factory())
        self.assertEqual(place(options()), ("192.0.2.1", 8443))
        self.assertEqual(listeningPlace(options(port=0), port), ("192.0.2.1", 0))

    def test_fixedPortNotAsked(self) -> None:
        """
        A listener on an address and a port other than 0 is named by them
        once it listens, without asking the port where it is bound.
        """
        self.assertEqual(listeningPlace(options(), RecordingPort()), ("192.0.2.1", 8443))

    def test_endpoint(self) -> None:
        """
        A listener on an endpoint is named by its description before it
        listens, by the IP address and port it bound once it does, and by
        its description when it bound none (a Unix socket).
        """
        reactor = MemoryReactor()
        tcp = reactor.listenTCP(443, Factory(), interface="::1")
        unix = reactor.listenUNIX("/run/files.sock", Factory())
        tcpOptions = options(endpoint="tcp6:443:interface=\\:\\:1")
        unixOptions = options(endpoint="unix:/run/files.sock")
        self.assertEqual(place(tcpOptions), ("tcp6:443:interface=\\:\\:1", NO_PORT))
        self.assertIsInstance(tcp.getHost(), IPv6Address)
        self.assertEqual(listeningPlace(tcpOptions, tcp), ("::1", 443))
        self.assertIsInstance(unix.getHost(), UNIXAddress)
        self.assertEqual(listeningPlace(unixOptions, unix), ("unix:/run/files.sock", NO_PORT))

    def test_failureDetails(self) -> None:
        """
        A port that cannot be opened is told by its socket error, as before
        endpoints; other failures by their text.
        """
        reason = OSError(errno.EADDRINUSE, "Address already in use")
        self.assertEqual(failureDetails(Failure(CannotListenError("", 80, reason))), str(reason))
        self.assertEqual(failureDetails(Failure(IndexError("no socket"))), "no socket")


class RecordingPort:
    """
    A listening port that records whether it was stopped.
    """

    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class RecordingReactor(MemoryReactor):
    """
    A memory reactor whose TCP ports record whether they were stopped.
    """

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        super().listenTCP(port, factory, backlog, interface)
        return RecordingPort()


class PendingEndpoint:
    """
    An endpoint whose C{listen} ends when the test says.
    """

    def __init__(self) -> None:
        self.listening: Deferred[Any] = Deferred()

    def listen(self, factory: Any) -> Deferred[Any]:
        return self.listening


class ListenerTests(SynchronousTestCase):
    """
    Tests for L{Listener}.
    """

    def test_listensAndStops(self) -> None:
        """
        The listener listens on its description with the reactor, with its
        factory wrapped to count the connections open (see
        L{letsencrypt_resource.drain}), and stops the port it got.
        """
        reactor = RecordingReactor()
        factory = Factory()
        listener = Listener(
            lambda: serverFromString(reactor, "tcp6:8443:interface=\\:\\:1"),
            factory,
            Clock(),
            "here",
        )
        port = self.successResultOf(listener.start())
        [(number, listening, backlog, interface)] = reactor.tcpServers
        self.assertEqual((number, backlog, interface), (8443, 50, "::1"))
        self.assertIs(listening.wrappedFactory, factory)
        self.successResultOf(listener.stopListening())
        self.assertTrue(port.stopped)

    def test_cannotListen(self) -> None:
        """
        A port that cannot be opened fails the start.
        """
        reason = CannotListenError("", 80, OSError(errno.EACCES, "Permission denied"))
        reactor = RaisingMemoryReactor(reason)
        listener = Listener(lambda: serverFromString(reactor, "tcp:80"), Factory(), Clock(), "here")
        self.failureResultOf(listener.start(), CannotListenError)
        self.successResultOf(listener.stopListening())

    def test_endpointNotBuilt(self) -> None:
        """
        A description that cannot be built into an endpoint now (a
        C{systemd:} socket that was not passed) fails the start.
        """
        description = "systemd:domain=INET:index=5"
        listener = Listener(
            lambda: serverFromString(MemoryReactor(), description), Factory(), Clock(), "here"
        )
        self.failureResultOf(listener.start(), IndexError)

    def test_stoppedBeforeListening(self) -> None:
        """
        Stopped while the endpoint is still opening its port, the start
        fails with L{CancelledError}, and the port that comes late is
        closed at once.
        """
        pending = PendingEndpoint()
        listener = Listener(lambda: pending, Factory(), Clock(), "here")
        started = listener.start()
        self.assertNoResult(started)
        self.successResultOf(listener.stopListening())
        self.failureResultOf(started, CancelledError)
        port = RecordingPort()
        pending.listening.callback(port)
        self.assertTrue(port.stopped)

    def test_listensLater(self) -> None:
        """
        An endpoint that opens its port later fires the start then.
        """
        pending = PendingEndpoint()
        listener = Listener(lambda: pending, Factory(), Clock(), "here")
        started = listener.start()
        port = RecordingPort()
        pending.listening.callback(port)
        self.assertIs(self.successResultOf(started), port)
        self.successResultOf(listener.stopListening())
        self.assertTrue(port.stopped)


class AddressListenerTests(SynchronousTestCase):
    """
    Tests for L{Listener.listen} on an address and port (a
    L{QuietTCPEndpoint}).
    """

    def setUp(self) -> None:
        # Listening on an address and port goes through no Deferred.
        def noDeferred(*args: Any) -> None:
            raise AssertionError("the endpoint's Deferred was used")

        self.patch(QuietTCPEndpoint, "listen", noDeferred)

    def test_listensAtOnce(self) -> None:
        """
        The listener listens before C{listen} returns, and tells so at
        once, with the port.
        """
        reactor = RecordingReactor()
        listener = Listener.on(reactor, options(), Factory())
        told: list[object] = []
        listener.listen(told.append, told.append)
        [port] = told
        self.assertIsInstance(port, RecordingPort)
        [(number, _, _, interface)] = reactor.tcpServers
        self.assertEqual((number, interface), (8443, "192.0.2.1"))
        self.successResultOf(listener.stopListening())
        self.assertTrue(port.stopped)  # type: ignore[attr-defined]

    def test_tellingErrorsLogged(self) -> None:
        """
        What the callbacks raise when told that the listener listens, or
        cannot, is logged, not raised to the caller of C{listen}: the
        listener that listens still has its port to stop.
        """

        told: list[object] = []

        def broken(result: object) -> None:
            told.append(result)
            raise RuntimeError("broken")

        reactor = RecordingReactor()
        listener = Listener.on(reactor, options(), Factory())
        listener.listen(broken, broken)
        reason = CannotListenError("", 80, OSError(errno.EACCES, "Permission denied"))
        refused = Listener.on(RaisingMemoryReactor(reason), options(port=80), Factory())
        refused.listen(broken, broken)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        [port, failure] = told
        self.assertIsInstance(failure, Failure)
        self.successResultOf(listener.stopListening())
        self.assertTrue(port.stopped)  # type: ignore[attr-defined]

    def test_cannotListenAtOnce(self) -> None:
        """
        A port that cannot be opened is told at once, with why; nothing is
        left to stop.
        """
        reason = CannotListenError("", 80, OSError(errno.EACCES, "Permission denied"))
        listener = Listener.on(RaisingMemoryReactor(reason), options(port=80), Factory())
        listened: list[object] = []
        failed: list[Failure] = []
        listener.listen(listened.append, failed.append)
        self.assertEqual(listened, [])
        [failure] = failed
        self.assertIs(failure.value, reason)
        self.successResultOf(listener.stopListening())
        self.assertEqual(len(failed), 1)


class LabelTests(SynchronousTestCase):
    """
    Tests for L{Listener.label}: where a listener listens, for the events.
    """

    def test_writtenWhenAsked(self) -> None:
        """
        A listener on an address and port writes its description only when
        an event needs it, not as it is made nor as it listens (with
        thousands of services at start, writing each was a fifth of making
        its listener); it is then the description of its options.
        """
        written: list[object] = []
        self.patch(listening, "description", lambda where: written.append(where) or "here")
        where = options()
        listener = Listener.on(RecordingReactor(), where, Factory())
        listener.listen(lambda port: None, lambda failure: None)
        self.assertEqual(written, [])
        self.assertEqual(listener.label, "here")
        self.assertEqual(written, [where])

    def test_ftpsWrittenWhenAsked(self) -> None:
        """
        An FTPS service's listener on an address and port writes its
        description only when an event needs it too, as an C{https}
        service's: it is then the description of the service's options.
        """
        written: list[object] = []
        self.patch(listening, "description", lambda where: written.append(where) or "here")
        where = options(type="ftps", address="::1", ftps=FTPSOptions(usersFile="/none"))
        listener = FTPSService(where, MemoryReactor())._listener(Factory())
        self.assertEqual(written, [])
        self.assertEqual(listener.label, "here")
        self.assertEqual(written, [where])

    def test_descriptionOfOptions(self) -> None:
        """
        The label of a listener made on options is their description: the
        C{tcp:} description of their address and port, or their
        C{endpoint}; a label given as text is kept as it is.
        """
        onAddress = Listener.on(RecordingReactor(), options(address="::1"), Factory())
        onEndpoint = Listener.on(
            RecordingReactor(), options(endpoint="unix:/run/files.sock"), Factory()
        )
        given = Listener(PendingEndpoint, Factory(), Clock(), "ftps here")
        self.assertEqual(
            (onAddress.label, onEndpoint.label, given.label),
            ("tcp:8443:interface=\\:\\:1", "unix:/run/files.sock", "ftps here"),
        )

    def test_failureLogNamesIt(self) -> None:
        """
        What a callback raises after listening is logged with the
        listener's description.
        """

        def broken(result: object) -> None:
            raise RuntimeError("broken")

        listener = Listener.on(RecordingReactor(), options(), Factory())
        with capturedLogs() as logged:
            listener.listen(broken, broken)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [event] = logged
        self.assertEqual(
            formatEvent(event), "Unexpected error after listening on tcp:8443:interface=192.0.2.1"
        )
        self.successResultOf(listener.stopListening())


class QuietTCPEndpointTests(SynchronousTestCase):
    """
    Tests for L{QuietTCPEndpoint} given to a L{Listener} as it is.
    """

    def test_listenedAtOnce(self) -> None:
        """
        A listener given a L{QuietTCPEndpoint} itself (not a callable that
        builds one) listens on it at once, where it says, with
        L{BACKLOG}.
        """
        reactor = RecordingReactor()
        listener = Listener(QuietTCPEndpoint(reactor, 8443, "192.0.2.1"), Factory(), reactor, "x")
        told: list[object] = []
        listener.listen(told.append, told.append)
        [port] = told
        self.assertIsInstance(port, RecordingPort)
        [(number, _, backlog, interface)] = reactor.tcpServers
        self.assertEqual((number, backlog, interface), (8443, BACKLOG, "192.0.2.1"))

    def test_listenFailsItsDeferred(self) -> None:
        """
        Its C{listen}, as Twisted's TCP endpoint's, never raises: what
        listening raises (a port over 65535's C{OverflowError}, a port
        that is no number's C{TypeError}, C{CannotListenError}) fails the
        Deferred it returns.
        """
        for error in (
            OverflowError("bind(): port must be 0-65535."),
            TypeError("'str' object cannot be interpreted as an integer"),
            CannotListenError("192.0.2.1", 8443, OSError(errno.EADDRINUSE, "in use")),
        ):
            endpoint = QuietTCPEndpoint(RaisingMemoryReactor(listenException=error), 70000, "")
            failure = self.failureResultOf(endpoint.listen(Factory()))
            self.assertIs(failure.value, error)

    def test_listenFires(self) -> None:
        """
        Its C{listen} fires with the port once it listens.
        """
        reactor = RecordingReactor()
        listened = QuietTCPEndpoint(reactor, 8443, "192.0.2.1").listen(Factory())
        self.assertIsInstance(self.successResultOf(listened), RecordingPort)

    def test_repr(self) -> None:
        """
        Its C{repr} says where it listens.
        """
        self.assertEqual(
            repr(QuietTCPEndpoint(MemoryReactor(), 8443, "192.0.2.1")),
            "QuietTCPEndpoint(port=8443, interface='192.0.2.1')",
        )
