"""
Tests for L{letsencrypt_resource.pebble} and L{letsencrypt_resource.testing.pebble},
against a real pebble.
"""

from __future__ import annotations

import datetime
import os
import stat
from typing import Any
from urllib.parse import urlsplit

import treq
from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from zope.interface import directlyProvides, providedBy

from letsencrypt_resource.listenerca import listenerCertificate
from letsencrypt_resource.pebble import (
    MANAGE_TIMEOUT,
    MAX_MANAGE_ANSWER,
    RunningTestCA,
    TestCAError,
    TestCANotFound,
    findTestCA,
    freeTCPPort,
    startTestCA,
    tlsPolicyTrusting,
)
from letsencrypt_resource.testing.pebble import MODERN_VARIABLE, findModernTestCA
from tests.helpers.pebblecase import TestCACase


class FindTestCATests(TestCase):
    """
    Tests for L{findTestCA}.
    """

    def test_environmentOverride(self) -> None:
        """
        C{PEBBLE_BIN} and C{PEBBLE_CHALLTESTSRV_BIN} name the executables.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        paths = []
        for name in ["my-pebble", "my-challtestsrv"]:
            path = os.path.abspath(os.path.join(directory, name))
            with open(path, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(path, stat.S_IRWXU)
            paths.append(path)
        self.patch(
            os,
            "environ",
            {
                **os.environ,
                "PEBBLE_BIN": paths[0],
                "PEBBLE_CHALLTESTSRV_BIN": paths[1],
            },
        )
        self.assertEqual(findTestCA(), (paths[0], paths[1]))

    def test_notFound(self) -> None:
        """
        L{TestCANotFound} says what is missing and how to install it.
        """
        missing = os.path.abspath(self.mktemp())
        self.patch(os, "environ", {**os.environ, "PEBBLE_BIN": missing})
        error = self.assertRaises(TestCANotFound, findTestCA)
        self.assertIn(missing, str(error))
        self.assertIn("apt-get install pebble", str(error))


class FindModernTestCATests(TestCase):
    """
    Tests for L{findModernTestCA}.
    """

    def test_unset(self) -> None:
        """
        Without L{MODERN_VARIABLE}, L{TestCANotFound} names the variable.
        """
        environ = {k: v for k, v in os.environ.items() if k != MODERN_VARIABLE}
        self.patch(os, "environ", environ)
        error = self.assertRaises(TestCANotFound, findModernTestCA)
        self.assertIn(MODERN_VARIABLE, str(error))

    def test_notExecutable(self) -> None:
        """
        When the folder holds no executable C{pebble}, L{TestCANotFound}
        names the path it looked at.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        self.patch(os, "environ", {**os.environ, MODERN_VARIABLE: folder})
        error = self.assertRaises(TestCANotFound, findModernTestCA)
        self.assertIn(os.path.join(folder, "pebble"), str(error))


class NetworkAndClock:
    """
    The real reactor for the network, a L{Clock} for the time: a test
    times a real connection out without waiting.
    """

    def __init__(self, clock: Clock):
        self._clock = clock
        directlyProvides(self, providedBy(reactor))

    def callLater(self, *args: Any, **kwargs: Any) -> Any:
        return self._clock.callLater(*args, **kwargs)

    def seconds(self) -> float:
        return self._clock.seconds()

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class _Server(Protocol):
    """
    A loopback management interface that never answers, or, with
    C{flood}, answers a request with 20 MiB.
    """

    def __init__(self, connected: Deferred[None], lost: Deferred[None], flood: bool):
        self._connected = connected
        self._lost = lost
        self._flood = flood

    def connectionMade(self) -> None:
        self._connected.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if self._flood and b"\r\n\r\n" in data:
            size = 20 * 2**20
            transport: Any = self.transport
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            transport.write(b"x" * size)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost.callback(None)


class ManageLimitsTests(TestCase):
    """
    L{RunningTestCA.manage} against a management interface that does not
    behave: it neither waits for ever nor reads without end.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.connected: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.folder = os.path.abspath(self.mktemp())
        self.caFile = listenerCertificate(
            self.folder, datetime.datetime.now(datetime.timezone.utc)
        )[0]

    def runningCA(self, flood: bool) -> RunningTestCA:
        """
        A L{RunningTestCA} whose management interface is a loopback
        L{_Server}, timed by C{self.clock}.
        """
        factory = Factory.forProtocol(lambda: _Server(self.connected, self.lost, flood))
        port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        return RunningTestCA(
            directoryURL="",
            caFile=self.caFile,
            managementURL=f"http://127.0.0.1:{port.getHost().port}",
            directory=self.folder,
            reactor=NetworkAndClock(self.clock),
            processes=[],
        )

    async def test_silent(self) -> None:
        """
        A request without an answer fails with L{TestCAError} after
        L{MANAGE_TIMEOUT} seconds, and its connection is closed.
        """
        answer = self.runningCA(flood=False).manage("GET", "/roots/0")
        await self.connected
        self.clock.advance(MANAGE_TIMEOUT - 1)
        self.assertNoResult(answer)
        self.clock.advance(1)
        error = await self.assertFailure(answer, TestCAError)
        self.assertIn(f"GET /roots/0: no answer within {MANAGE_TIMEOUT} seconds", str(error))
        await self.lost

    async def test_flood(self) -> None:
        """
        An answer longer than L{MAX_MANAGE_ANSWER} bytes fails with
        L{TestCAError} once that much came, and its connection is closed.
        """
        answer = self.runningCA(flood=True).manage("GET", "/roots/0")
        error = await self.assertFailure(answer, TestCAError)
        self.assertIn(f"answer longer than {MAX_MANAGE_ANSWER} bytes", str(error))
        await self.lost


class TestCATests(TestCACase):
    """
    Tests for L{startTestCA} and L{RunningTestCA}, running pebble.
    """

    async def test_directory(self) -> None:
        """
        The ACME directory is served over HTTPS trusting C{caFile}.
        """
        ca = await self.startTestCA()
        agent = Agent(reactor, contextFactory=tlsPolicyTrusting(ca.caFile))
        response = await treq.get(ca.directoryURL, agent=agent)
        self.assertEqual(response.code, 200)
        directory = await response.json()
        self.assertIn("newAccount", directory)
        self.assertIn("newOrder", directory)

    async def test_fetchIssuerPEM(self) -> None:
        """
        L{RunningTestCA.fetchIssuerPEM} returns the self-signed root then the
        intermediate it signed.
        """
        ca = await self.startTestCA()
        root, intermediate = x509.load_pem_x509_certificates(await ca.fetchIssuerPEM())
        self.assertEqual(root.issuer, root.subject)
        self.assertEqual(intermediate.issuer, root.subject)
        intermediate.verify_directly_issued_by(root)

    async def test_manageError(self) -> None:
        """
        L{RunningTestCA.manage} fails with L{TestCAError}, naming the path
        and the status, when the management interface answers other than
        200.
        """
        ca = await self.startTestCA()
        error = await self.assertFailure(ca.manage("GET", "/no-such-path"), TestCAError)
        self.assertIn("/no-such-path: HTTP 404", str(error))

    async def test_executables(self) -> None:
        """
        L{startTestCA} runs the C{executables} it is given: a C{pebble} that
        cannot run makes it fail.
        """
        missing = os.path.abspath(self.mktemp())
        error = await self.assertFailure(
            startTestCA(
                reactor,
                self.mktemp(),
                freeTCPPort(),
                executables=(missing, findTestCA()[1]),
            ),
            TestCAError,
        )
        self.assertIn("pebble exited during startup", str(error))

    async def test_stop(self) -> None:
        """
        After L{RunningTestCA.stop}, pebble no longer accepts connections and
        its logs remain.
        """
        directory = self.mktemp()
        ca = await startTestCA(reactor, directory, freeTCPPort())
        self.addCleanup(ca.stop)
        await ca.stop()
        for url in [ca.directoryURL, ca.managementURL]:
            port = urlsplit(url).port
            assert port is not None
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
            await self.assertFailure(connectProtocol(endpoint, Protocol()), ConnectionRefusedError)
        for name in ["pebble.log", "challtestsrv.log"]:
            self.assertTrue(os.path.getsize(os.path.join(directory, name)))

    async def test_options(self) -> None:
        """
        C{nonceReject}, C{extraEnv} and C{extraConfig} reach pebble, which
        reports them in its log.
        """
        directory = self.mktemp()
        ca = await startTestCA(
            reactor,
            directory,
            freeTCPPort(),
            nonceReject=0,
            extraEnv={"PEBBLE_AUTHZREUSE": "100"},
            extraConfig={"certificateValidityPeriod": 3600},
        )
        self.addCleanup(ca.stop)
        with open(os.path.join(directory, "pebble.log")) as f:
            log = f.read()
        self.assertIn("reject 0% of good nonces", log)
        self.assertIn("authz reuse for each identifier 100% of the time", log)
        self.assertIn("validity period of 3600 seconds", log)

    async def test_startupFailure(self) -> None:
        """
        If pebble exits while starting, L{startTestCA} fails with the end of
        its log.
        """
        missing = os.path.abspath(self.mktemp())
        error = await self.assertFailure(
            startTestCA(
                reactor,
                self.mktemp(),
                freeTCPPort(),
                extraConfig={"certificate": missing},
            ),
            TestCAError,
        )
        self.assertIn("pebble exited during startup", str(error))
        self.assertIn(missing, str(error))
