"""
Where the product's listeners listen: Twisted endpoint descriptions.

Every listener (the challenge site and each C{https} service) listens on
a C{serverFromString} description, its C{endpoint} option, or on TCP at
its C{address} and C{port} (what C{tcp:PORT:interface=ADDRESS} names).  The
TLS of the C{https} services is the product's own, so only plain stream
endpoints are taken (L{STREAM_TYPES}); an C{ssl:} description, or one of a
plugin that may wrap the connection in something else, is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, execute, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .drain import Draining
from .quietport import listenQuietly
from .reactors import Reactor

#: The endpoint types a listener may use.
STREAM_TYPES = ("tcp", "tcp6", "unix", "systemd")
#: The port shown in events for a listener whose endpoint names none.
NO_PORT = "-"


class ListenerOptions(Protocol):
    """
    The options of a section that listens.
    """

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def endpoint(self) -> str | None: ...


def tcpDescription(address: str, port: int) -> str:
    """
    The description of a TCP listener on C{address} and C{port}, with the
    colons of an IPv6 address escaped.
    """
    escaped = address.replace("\\", "\\\\").replace(":", "\\:")
    return f"tcp:{port}:interface={escaped}"


def description(options: ListenerOptions) -> str:
    """
    The endpoint description C{options} listen on.
    """
    if options.endpoint is not None:
        return options.endpoint
    return tcpDescription(options.address, options.port)


def endpointOf(reactor: Reactor, options: ListenerOptions) -> IStreamServerEndpoint:
    """
    The endpoint C{options} listen on: their C{endpoint} description's, or
    for an C{address} and C{port}, a L{QuietTCPEndpoint} there: what
    C{tcp:PORT:interface=ADDRESS} names, made without writing and parsing
    that description (with thousands of services, parsing was a tenth of
    the start-up), and opened without Twisted's log lines.
    """
    if options.endpoint is not None:
        return serverFromString(reactor, options.endpoint)
    return QuietTCPEndpoint(reactor, options.port, options.address)


@implementer(IStreamServerEndpoint)
class QuietTCPEndpoint:
    """
    TCP on C{port} of C{interface}, listened on at once (see
    L{listenQuietly}).  A plain class with slots, not an attrs one: one is
    made for each of thousands of services at start, and a frozen attrs
    class's setting of each field was most of its cost.
    """

    __slots__ = ("reactor", "port", "interface")

    def __init__(self, reactor: Reactor, port: int, interface: str):
        self.reactor = reactor
        self.port = port
        self.interface = interface

    def __repr__(self) -> str:
        return f"QuietTCPEndpoint(port={self.port!r}, interface={self.interface!r})"

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with C{protocolFactory}: a Deferred that fires with the
        port, or fails with whatever listening raised (as Twisted's TCP
        endpoint's: a port over 65535's C{OverflowError} too).
        """
        return execute(self.listenNow, protocolFactory)

    def listenNow(self, protocolFactory: IProtocolFactory) -> IListeningPort:
        """
        Listen with C{protocolFactory} at once, without a Deferred.

        @raise CannotListenError: when it cannot listen there.
        """
        return listenQuietly(self.reactor, self.port, protocolFactory, self.interface)


def checkDescription(text: str) -> str:
    """
    Check the endpoint description C{text} without listening or using
    the environment: its type is one of L{STREAM_TYPES} and Twisted can
    build an endpoint from it.  A C{systemd:} description's socket is
    looked for by L{inheritedSocketProblem}, when the server starts.

    @return: C{text}, stripped.
    @raise ValueError: saying what is wrong.
    """
    text = text.strip()
    kind = text.partition(":")[0]
    if kind == "ssl":
        raise ValueError(
            f"{text!r} is an ssl: endpoint; the TLS of the services is the "
            "resource's own, so give a plain one (tcp:, tcp6:, unix: or systemd:)"
        )
    if kind not in STREAM_TYPES:
        raise ValueError(f"{text!r} is not a tcp:, tcp6:, unix: or systemd: endpoint description")
    if (len(text) - len(text.rstrip("\\"))) % 2:
        # Twisted's parser fails on it with "generator raised StopIteration".
        raise ValueError(f"{text!r} ends in a backslash that escapes nothing")
    try:
        serverFromString(_recorder(), text)
        binding = tcpBinding(text)
    except Exception as error:
        if kind == "systemd" and isinstance(error, (IndexError, KeyError)):
            return text  # a socket not passed to this process, looked for at start
        # Whatever else Twisted's parsers raise on odd text refuses it.
        raise ValueError(f"{text!r} is not a valid endpoint description: {error}") from None
    if binding is not None and not 1 <= binding[1] <= 65535:
        raise ValueError(f"{text!r} has a port outside the range 1 to 65535")
    return text


def inheritedSocketProblem(text: str) -> str | None:
    """
    What is wrong with the C{systemd:} description C{text} in this
    process: the socket it names was not passed by systemd (C{LISTEN_FDS},
    C{LISTEN_FDNAMES}).  C{None} when it was, or for another endpoint type.
    """
    if text.partition(":")[0] != "systemd":
        return None
    try:
        serverFromString(_recorder(), text)
    except (IndexError, KeyError):
        return (
            f"{text!r} names a socket that systemd did not pass to this process "
            "(start it from a .socket unit, or check its index or name)"
        )
    return None


def _recorder() -> Any:
    """
    A reactor that records what would listen, without listening: Twisted's
    C{MemoryReactor}, imported when an endpoint description is first
    checked (its module is large, and most configurations have none).
    """
    from twisted.internet.testing import MemoryReactor

    return MemoryReactor()


def tcpBinding(text: str) -> tuple[str, int] | None:
    """
    The interface and port a C{tcp:} or C{tcp6:} description binds, for
    comparing listeners, or C{None} for other types and for port 0.
    """
    if text.partition(":")[0] not in ("tcp", "tcp6"):
        return None
    reactor = _recorder()
    serverFromString(reactor, text).listen(Factory())
    [(port, _, _, interface)] = reactor.tcpServers
    if port == 0:
        return None
    return (interface or "0.0.0.0", port)


def place(options: ListenerOptions) -> tuple[str, int | str]:
    """
    The address and port events name for a listener before it listens:
    C{address} and C{port}, or the C{endpoint} description and L{NO_PORT}.
    """
    if options.endpoint is not None:
        return options.endpoint, NO_PORT
    return options.address, options.port


def listeningPlace(options: ListenerOptions, port: IListeningPort) -> tuple[str, int | str]:
    """
    The address and port events name for a listener listening on C{port}:
    C{address} and the port bound, or for an C{endpoint} the IP address
    and port bound when it is one (a C{unix:} socket is named by its
    description).  For an C{address} and a C{port} other than 0, those:
    the port is not asked (a system call, for each of thousands of
    services at start).
    """
    if options.endpoint is None and options.port:
        return options.address, options.port
    host = port.getHost()
    if isinstance(host, (IPv4Address, IPv6Address)):
        return host.host if options.endpoint is not None else options.address, host.port
    return place(options)


def stopPort(port: IListeningPort) -> Deferred[None]:
    """
    Stop C{port}: a Deferred that fires once it has stopped, whether its
    C{stopListening} returned one or not.
    """
    return maybeDeferred(port.stopListening).addCallback(lambda _: None)


def failureDetails(failure: Failure) -> str:
    """
    Why listening failed, as events tell it.
    """
    error = failure.value
    if isinstance(error, CannotListenError):
        return str(error.socketError)
    return str(error)


#: What a L{Listener} calls once it listens, with its port.
Listened = Callable[[IListeningPort], object]
#: What a L{Listener} calls when it cannot listen, with why.
NotListened = Callable[[Failure], object]


class Listener:
    """
    A factory listening on an endpoint: listening is asynchronous, and it
    may be stopped before it listens.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: Callable[[], IStreamServerEndpoint] | QuietTCPEndpoint,
        factory: IProtocolFactory,
        clock: IReactorTime,
        label: str | ListenerOptions,
    ):
        """
        @param endpoint: Builds the endpoint, when the listener starts; or
            a L{QuietTCPEndpoint}, listened on at once.
        @param clock: Times the wait for open connections at a stop.
        @param label: Where it listens, for the events; or the options
            whose L{description} says it, written only when an event
            needs it (for thousands of services at start, writing each
            was a fifth of making its listener).
        """
        self._endpoint = endpoint
        self._factory = Draining(factory)
        self._clock = clock
        self._label = label
        self._port: IListeningPort | None = None
        self._waiting: tuple[Listened, NotListened] | None = None
        self._stopped = False

    @property
    def label(self) -> str:
        """
        Where it listens, for the events.
        """
        label = self._label
        return label if isinstance(label, str) else description(label)

    @classmethod
    def on(cls, reactor: Reactor, options: ListenerOptions, factory: IProtocolFactory) -> Listener:
        """
        A listener of C{factory} where C{options} say: on their C{endpoint}
        description, built when it starts, or on a L{QuietTCPEndpoint} at
        their C{address} and C{port} (see L{endpointOf}).
        """
        if options.endpoint is None:
            return cls(
                QuietTCPEndpoint(reactor, options.port, options.address), factory, reactor, options
            )
        return cls(lambda: endpointOf(reactor, options), factory, reactor, options)

    def start(self) -> Deferred[IListeningPort]:
        """
        Listen.

        @return: A Deferred that fires with the port, or fails with why it
            cannot listen, or with C{CancelledError} when stopped before.
        """
        pending: Deferred[IListeningPort] = Deferred()
        self.listen(pending.callback, pending.errback)
        return pending

    def listen(self, listened: Listened, failed: NotListened) -> None:
        """
        Listen: call C{listened} with the port once it listens, or
        C{failed} with why it cannot, or with C{CancelledError} when
        stopped before.  On an address and port (a L{QuietTCPEndpoint}),
        at once and without a Deferred: with thousands of services, the
        Deferreds of each one's listening were a fifth of its cost.
        """
        self._waiting = (listened, failed)
        result: IListeningPort | Failure
        try:
            endpoint = self._endpoint
            if not isinstance(endpoint, QuietTCPEndpoint):
                built = endpoint()
                if not isinstance(built, QuietTCPEndpoint):
                    built.listen(self._factory).addBoth(self._listened)
                    return
                endpoint = built
            result = endpoint.listenNow(self._factory)
        except Exception:
            result = Failure()
        self._listened(result)

    def _listened(self, result: IListeningPort | Failure) -> None:
        waiting, self._waiting = self._waiting, None
        if self._stopped:
            # Stopped while listening was under way: close what came late.
            if not isinstance(result, Failure):
                result.stopListening()
            return
        assert waiting is not None
        listened, failed = waiting
        if not isinstance(result, Failure):
            self._port = result
        # What they raise is logged, not raised to whoever started the
        # listener (a parent service would start no service after it).
        try:
            if isinstance(result, Failure):
                failed(result)
            else:
                listened(result)
        except Exception:
            self._log.failure("Unexpected error after listening on {label}", label=self.label)

    def stopListening(self) -> Deferred[None]:
        """
        Stop listening, or give up listening if it is under way; then wait
        for the connections still open, for at most
        L{letsencrypt_resource.drain.GRACE} seconds.
        """
        return self.stop().drained

    def stop(self) -> Stopping:
        """
        Stop listening, or give up listening if it is under way: new
        connections are refused at once.

        @return: When the port has closed (another listener may take it
            then), and when the connections open have ended too.
        """
        self._stopped = True
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting[1](Failure(CancelledError()))
        port, self._port = self._port, None
        if port is None:
            return Stopping(succeed(None), succeed(None))
        closed: Deferred[None] = Deferred()

        def drain(_: None) -> Deferred[None]:
            closed.callback(None)
            return self._factory.drained(self._clock, self.label)

        return Stopping(closed, stopPort(port).addCallback(drain))


@attrs.frozen
class Stopping:
    """
    A listener that stops: see L{Listener.stop}.
    """

    #: Fires once the port has closed.
    closed: Deferred[None]
    #: Fires once the connections open have ended too, or the grace is over.
    drained: Deferred[None]
