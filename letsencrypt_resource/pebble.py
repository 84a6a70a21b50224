"""
Run a local Let's Encrypt test CA, for the C{testca} command
(L{letsencrypt_resource.localca}) and the demo: U{pebble
<https://github.com/letsencrypt/pebble>} plus C{pebble-challtestsrv} as its
DNS server, both listening on loopback only.

Every name resolves to 127.0.0.1, so pebble validates HTTP-01 challenges for
any name (such as C{www.example.test}) against C{127.0.0.1:httpPort}.

What only tests need on top (pebble 2.10 for ARI and profiles, certificate
status, renewal windows) is in L{letsencrypt_resource.testing.pebble}.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
from collections.abc import Sequence
from io import BytesIO
from typing import Any, cast

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError, TimeoutError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.internet.ssl import Certificate
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    ResponseDone,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IResponse

from .listenerca import listenerCertificate
from .safefs import openFolder, replaceInFolder

_STARTUP_TIMEOUT = 15.0
_KILL_AFTER = 5.0
#: How long a request to pebble's management interface may take, answer
#: included, in seconds.
MANAGE_TIMEOUT = 10.0
#: The largest answer read from pebble's management interface, in bytes:
#: certificates and JSON are far smaller.
MAX_MANAGE_ANSWER = 2**20


class TestCANotFound(Exception):
    """
    The pebble or pebble-challtestsrv executable could not be found.
    """


class TestCAError(Exception):
    """
    The test CA failed to start, or answered a request with an error.
    """


def findTestCA() -> tuple[str, str]:
    """
    Find the test CA executables, from C{PEBBLE_BIN} and
    C{PEBBLE_CHALLTESTSRV_BIN} if set, otherwise on C{PATH}.

    @return: the paths of C{pebble} and C{pebble-challtestsrv}.
    @raise TestCANotFound: if either is missing.
    """
    found = []
    for name, variable in [
        ("pebble", "PEBBLE_BIN"),
        ("pebble-challtestsrv", "PEBBLE_CHALLTESTSRV_BIN"),
    ]:
        configured = os.environ.get(variable)
        path = shutil.which(configured or name)
        if path is None:
            where = f"{variable}={configured!r}" if configured else "PATH"
            raise TestCANotFound(
                f"{name} not found (looked at {where}): install it with "
                "`apt-get install pebble` (Debian), or set PEBBLE_BIN and "
                "PEBBLE_CHALLTESTSRV_BIN to the executables"
            )
        found.append(path)
    return found[0], found[1]


def freeTCPPort(host: str = "127.0.0.1") -> int:
    """
    @return: a TCP port on C{host} that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def tlsPolicyTrusting(caFile: str) -> IPolicyForHTTPS:
    """
    @param caFile: path of a PEM CA certificate.
    @return: an HTTPS policy (an C{Agent}'s C{contextFactory})
        trusting only that CA.
    """
    with open(caFile, "rb") as f:
        return BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(f.read()))


class _TestCAProcess(ProcessProtocol):
    """
    A child process whose output goes straight to a log file.

    @ivar reason: why the process ended, or C{None} while it runs.
    """

    def __init__(self, name: str, logPath: str) -> None:
        self.name = name
        self.logPath = logPath
        self.reason: Failure | None = None
        self._waiting: list[Deferred[None]] = []

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def logTail(self, size: int = 3000) -> str:
        """
        @return: the end of the process's log.
        """
        with open(self.logPath, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode("utf-8", "replace")

    def stop(self, reactor: Any) -> Deferred[None]:
        """
        Send C{SIGTERM}, and C{SIGKILL} if still running after a while.

        @return: fires when the process has ended.
        """
        if self.reason is not None:
            return succeed(None)
        ended: Deferred[None] = Deferred()
        self._waiting.append(ended)
        transport = self.transport
        assert transport is not None, "stopped before it started"
        transport.signalProcess("TERM")
        kill = reactor.callLater(_KILL_AFTER, transport.signalProcess, "KILL")

        def cancelKill(result: None) -> None:
            if kill.active():
                kill.cancel()

        return ended.addCallback(cancelKill)


def _stopAll(reactor: Any, processes: Sequence[_TestCAProcess]) -> Deferred[None]:
    return gatherResults([p.stop(reactor) for p in processes]).addCallback(lambda _: None)


class _BoundedAnswer(Protocol):
    """
    Collect an answer's body, up to L{MAX_MANAGE_ANSWER} bytes: past that,
    the connection is closed and the answer refused.
    """

    def __init__(self, finished: Deferred[bytes], what: str):
        self._finished = finished
        self._what = what
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._finished.called:
            return
        self._size += len(data)
        if self._size > MAX_MANAGE_ANSWER:
            self.stop()
            self._finished.errback(
                TestCAError(f"{self._what}: answer longer than {MAX_MANAGE_ANSWER} bytes")
            )
            return
        self._parts.append(data)

    def stop(self) -> None:
        """
        Close the connection the answer comes on.
        """
        cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._finished.called:
            return
        if reason.check(ResponseDone):
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(reason)


def _readAnswer(response: IResponse, what: str) -> Deferred[bytes]:
    """
    The body of C{response}, bounded (see L{_BoundedAnswer}); cancelling
    the Deferred closes the connection.
    """
    reader: _BoundedAnswer

    def cancel(_: Deferred[bytes]) -> None:
        reader.stop()

    finished: Deferred[bytes] = Deferred(cancel)
    reader = _BoundedAnswer(finished, what)
    response.deliverBody(reader)
    return finished


@attrs.frozen
class RunningTestCA:
    """
    A running test CA, from L{startTestCA}.

    @ivar directoryURL: the ACME directory URL.
    @ivar caFile: path of the PEM CA certificate that signed the HTTPS
        certificate of pebble's listeners, the same at every start in the
        same folder; see L{tlsPolicyTrusting}.
    @ivar managementURL: the base URL of pebble's management interface.
    @ivar directory: where its configuration and logs are.
    """

    directoryURL: str
    caFile: str
    managementURL: str
    directory: str
    _reactor: Any = attrs.field(repr=False)
    _processes: Sequence[_TestCAProcess] = attrs.field(repr=False)

    def fetchIssuerPEM(self) -> Deferred[bytes]:
        """
        Fetch the chain issuing certificates in this run of pebble (each start
        makes a new one).

        @return: fires with the root then the intermediate certificate, PEM.
        """
        return Deferred.fromCoroutine(self._fetchIssuerPEM())

    async def _fetchIssuerPEM(self) -> bytes:
        pems = []
        for path in ["/roots/0", "/intermediates/0"]:
            pems.append(await self.manage("GET", path))
        return b"".join(pems)

    def manage(self, method: str, path: str, body: bytes | None = None) -> Deferred[bytes]:
        """
        Send a request to pebble's management interface.

        @param path: the path under L{managementURL}, such as C{"/roots/0"}.
        @param body: the request body, if any.
        @return: fires with the answer's body; fails with L{TestCAError}
            when the status is not 200, when no whole answer came within
            L{MANAGE_TIMEOUT} seconds, or when it is longer than
            L{MAX_MANAGE_ANSWER} bytes (the connection is then closed).
        """

        def timedOut(result: object, timeout: float) -> Failure:
            return Failure(TestCAError(f"{method} {path}: no answer within {timeout} seconds"))

        return Deferred.fromCoroutine(self._manage(method, path, body)).addTimeout(
            MANAGE_TIMEOUT, self._reactor, onTimeoutCancel=timedOut
        )

    async def _manage(self, method: str, path: str, body: bytes | None) -> bytes:
        agent = Agent(self._reactor, contextFactory=tlsPolicyTrusting(self.caFile))
        producer = None
        if body is not None:
            producer = FileBodyProducer(
                BytesIO(body),
                cooperator=task.Cooperator(scheduler=lambda work: self._reactor.callLater(0, work)),
            )
        response = await agent.request(
            method.encode("ascii"),
            (self.managementURL + path).encode("ascii"),
            Headers({b"user-agent": [b"letsencrypt-resource"]}),
            producer,
        )
        answer = await _readAnswer(response, f"{method} {path}")
        if response.code != 200:
            raise TestCAError(f"{method} {path}: HTTP {response.code}: {answer!r}")
        return answer

    def stop(self) -> Deferred[None]:
        """
        Stop pebble and its DNS server: C{SIGTERM}, then C{SIGKILL} after 5
        seconds.

        @return: fires once both processes have ended.
        """
        return _stopAll(self._reactor, self._processes)


def startTestCA(
    reactor: Any,
    directory: str,
    httpPort: int,
    *,
    nonceReject: int | None = None,
    extraConfig: dict[str, Any] | None = None,
    extraEnv: dict[str, str] | None = None,
    executables: tuple[str, str] | None = None,
    acmePort: int | None = None,
) -> Deferred[RunningTestCA]:
    """
    Start pebble and pebble-challtestsrv on free loopback ports.

    @param reactor: provider of C{IReactorProcess}, C{IReactorTCP} and
        C{IReactorTime}.
    @param directory: where to write the configuration, the HTTPS listener
        certificate and the logs C{pebble.log} and C{challtestsrv.log}: a
        folder private to this user, created if missing; the listener CA
        kept there is used again (see L{listenerCertificate}).
    @param httpPort: the port on 127.0.0.1 where pebble validates HTTP-01
        challenges.
    @param nonceReject: percentage of valid nonces pebble rejects
        (C{PEBBLE_WFE_NONCEREJECT}); C{None} for pebble's default.
    @param extraConfig: merged into pebble's C{"pebble"} configuration.
    @param extraEnv: added to both processes' environment.
    @param executables: the paths of C{pebble} and C{pebble-challtestsrv}
        to run; C{None} for those L{findTestCA} finds.
    @param acmePort: the port on 127.0.0.1 of the ACME directory; C{None}
        for a free one.
    @return: fires with the L{RunningTestCA} once it accepts connections;
        fails with L{TestCANotFound}, L{TestCAError}, or
        L{letsencrypt_resource.safefs.UnusablePath} when C{directory} is not
        private to this user.
    """
    return Deferred.fromCoroutine(
        _startTestCA(
            reactor,
            directory,
            httpPort,
            nonceReject,
            extraConfig or {},
            extraEnv or {},
            executables,
            acmePort,
        )
    )


async def _startTestCA(
    reactor: Any,
    directory: str,
    httpPort: int,
    nonceReject: int | None,
    extraConfig: dict[str, Any],
    extraEnv: dict[str, str],
    executables: tuple[str, str] | None,
    acmePort: int | None,
) -> RunningTestCA:
    pebble, challtestsrv = executables or findTestCA()
    directory = os.path.abspath(directory)
    now = datetime.datetime.fromtimestamp(reactor.seconds(), datetime.timezone.utc)
    caFile, certFile, keyFile = listenerCertificate(directory, now)

    taken = {httpPort} if acmePort is None else {httpPort, acmePort}
    free: list[int] = []
    while len(free) < 5:
        port = freeTCPPort()
        if port not in taken and port not in free:
            free.append(port)
    if acmePort is None:
        acmePort = free.pop()
    managementPort, tlsPort, dnsPort, dnsManagementPort = free[:4]

    configFile = os.path.join(directory, "pebble-config.json")
    config = {
        "listenAddress": f"127.0.0.1:{acmePort}",
        "managementListenAddress": f"127.0.0.1:{managementPort}",
        "certificate": certFile,
        "privateKey": keyFile,
        "httpPort": httpPort,
        "tlsPort": tlsPort,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    configJSON = json.dumps({"pebble": {**config, **extraConfig}}, indent=2)
    with openFolder(directory) as folder:
        replaceInFolder(folder, [(os.path.basename(configFile), configJSON.encode(), 0o644)])

    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1"}
    if nonceReject is not None:
        env["PEBBLE_WFE_NONCEREJECT"] = str(nonceReject)
    env.update(extraEnv)

    processes: list[_TestCAProcess] = []
    try:
        processes.append(
            _spawn(
                reactor,
                directory,
                "challtestsrv",
                # challtestsrv is only a DNS server answering 127.0.0.1 for
                # every name.
                [
                    challtestsrv,
                    "-dns01",
                    f"127.0.0.1:{dnsPort}",
                    "-defaultIPv4",
                    "127.0.0.1",
                    "-defaultIPv6",
                    "",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                    "-management",
                    f"127.0.0.1:{dnsManagementPort}",
                ],
                env,
            )
        )
        processes.append(
            _spawn(
                reactor,
                directory,
                "pebble",
                [pebble, "-config", configFile, "-dnsserver", f"127.0.0.1:{dnsPort}"],
                env,
            )
        )
        await _waitUntilListening(reactor, processes, [dnsManagementPort, acmePort, managementPort])
    except BaseException:
        await _stopAll(reactor, processes)
        raise
    return RunningTestCA(
        directoryURL=f"https://localhost:{acmePort}/dir",
        caFile=caFile,
        managementURL=f"https://localhost:{managementPort}",
        directory=directory,
        reactor=reactor,
        processes=processes,
    )


def _spawn(
    reactor: Any, directory: str, name: str, args: list[str], env: dict[str, str]
) -> _TestCAProcess:
    process = _TestCAProcess(name, os.path.join(directory, f"{name}.log"))
    with open(process.logPath, "wb") as log, open(os.devnull, "rb") as null:
        reactor.spawnProcess(
            process,
            args[0],
            args,
            env=env,
            path=directory,
            childFDs={0: null.fileno(), 1: log.fileno(), 2: log.fileno()},
        )
    return process


async def _waitUntilListening(
    reactor: Any, processes: Sequence[_TestCAProcess], ports: list[int]
) -> None:
    deadline = reactor.seconds() + _STARTUP_TIMEOUT
    while True:
        for process in processes:
            if process.reason is not None:
                raise TestCAError(
                    f"{process.name} exited during startup "
                    f"({process.reason.value}); end of {process.logPath}:\n"
                    f"{process.logTail()}"
                )
        ports = [port for port in ports if not await _accepts(reactor, port)]
        if not ports:
            return
        if reactor.seconds() > deadline:
            logs = "".join(f"\nend of {p.logPath}:\n{p.logTail()}" for p in processes)
            raise TestCAError(
                f"test CA not listening on 127.0.0.1 port(s) {ports} after "
                f"{_STARTUP_TIMEOUT} seconds{logs}"
            )
        await task.deferLater(reactor, 0.1)


async def _accepts(reactor: Any, port: int) -> bool:
    factory = Factory.forProtocol(Protocol)
    factory.noisy = False
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1)
    try:
        protocol = await endpoint.connect(factory)
    except (ConnectError, TimeoutError):
        return False
    assert isinstance(protocol, Protocol) and protocol.transport is not None
    protocol.transport.loseConnection()
    return True
