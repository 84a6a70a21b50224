"""
Security: private keys stay private (file modes, logs, error messages),
certificates that do not match the request are refused, and the public
challenge site answers nothing but what it must, whatever it is sent.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from functools import partial
from typing import Any

from hypothesis import HealthCheck, given, settings
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.challenge import CHALLENGE_PREFIX, ChallengeResponder, ChallengeSite
from letsencrypt_resource.folder import ServedFolder
from letsencrypt_resource.httplimits import DRAIN_LIMIT, HEADERS_DEADLINE
from letsencrypt_resource.https import FileSite, HTTPSFileService
from letsencrypt_resource.issuer import CertificateMismatch, obtainCertificate
from letsencrypt_resource.keys import PrivateKey, generateKey, keyToPEM, loadAccountKey
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.testing import FakeACMEServer, registeredClient, runUntilFired
from tests.helpers import (
    InMemoryConnection,
    challengefuzz,
    connectInMemory,
    filefuzz,
    keyMarkers,
    newSigner,
    provisionalFor,
    pullProducersOn,
    rawRequest,
    tlsClientFactory,
)
from tests.helpers.faultcase import FaultCase
from tests.helpers.resourcecase import FILES as DOMAINS
from tests.helpers.resourcecase import ResourceTestCase
from tests.helpers.serviceoptions import makeOptions
from tests.helpers.slow import slowTests
from tests.helpers.statedir import StateDirectory


def eventText(event: dict[str, Any]) -> str:
    """
    Everything an observer could write for C{event}: its formatted text,
    every field (as a JSON log would keep them) and any traceback.
    """
    parts = [formatEvent(event)]
    for name, value in event.items():
        parts.append(f"{name}={value!r}")
        if name == "log_failure":
            parts.append(value.getTraceback())
    return "\n".join(parts)


def leaks(texts: list[str], keys: list[PrivateKey]) -> list[str]:
    """
    The texts among C{texts} that hold a PEM key marker or any marker of
    one of C{keys}.
    """
    markers = [marker for key in keys for marker in keyMarkers(key)]
    found = []
    for text in texts:
        if "PRIVATE KEY" in text or any(marker in text for marker in markers):
            found.append(text[:300])
    return found


class KeyFileTests(FaultCase):
    """
    Where keys are kept on disk, after a real issuance.
    """

    async def issue(self, state: str, store: str, **options: Any) -> Any:
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        resource, consumers = self.makeResource(
            testCA.directoryURL,
            testCA.caFile,
            challengePort,
            stateDirectory=state,
            storeDirectory=store,
            **options,
        )
        self.startResource(resource)
        await resource.whenSettled()
        return resource, consumers

    async def test_modes(self) -> None:
        """
        Even with a umask of 0, every folder of the state directory is 0700
        and every file 0600; in the store directory each certificate's
        folder is 0700 and its private key 0600.
        """
        # The test's own folders first: under umask 0 they would be
        # writable by others, and no key is written below such a folder.
        base = os.path.abspath(self.mktemp())
        self.addCleanup(os.umask, os.umask(0))
        state, store = os.path.join(base, "state"), os.path.join(base, "exported")
        await self.issue(state, store, keyType="rsa-2048")
        files = 0
        for folder, _, names in os.walk(state):
            self.assertEqual(stat.S_IMODE(os.stat(folder).st_mode), 0o700, folder)
            for name in names:
                path = os.path.join(folder, name)
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600, path)
                files += 1
        # Account, signer, and a certificate and renewal state per set.
        self.assertGreaterEqual(files, 2 + 2 * len(self.SETS))
        for domains in self.SETS.values():
            folder = os.path.join(store, "_".join(domains))
            self.assertEqual(stat.S_IMODE(os.stat(folder).st_mode), 0o700, folder)
            key = os.path.join(folder, "privkey.pem")
            self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600, key)
            for name in ("cert.pem", "chain.pem", "fullchain.pem"):
                mode = stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
                self.assertEqual(mode & 0o022, 0, name)

    async def test_parentsNotWritableByOthers(self) -> None:
        """
        Folders created on the way to the state and store directories are
        not writable by group or others, even with a umask of 0: whoever
        can write there could swap the folders holding the keys.
        """
        base = os.path.abspath(self.mktemp())
        self.addCleanup(os.umask, os.umask(0))
        state = os.path.join(base, "var", "lib", "state")
        store = os.path.join(base, "srv", "tls", "exported")
        await self.issue(state, store)
        for path in (state, store):
            while path != base:
                mode = stat.S_IMODE(os.stat(path).st_mode)
                self.assertEqual(mode & 0o022, 0, f"{path} is {oct(mode)}")
                path = os.path.dirname(path)

    async def test_noKeyInLogs(self) -> None:
        """
        A real issuance and a renewal with C{debug = yes}, one set failing,
        certificates exported: no event, formatted or field by field, holds
        a PEM key marker or any part of the account key, the provisional
        signer's key, or any provisional or issued certificate's key.
        """
        base = os.path.abspath(self.mktemp())
        state, store = os.path.join(base, "state"), os.path.join(base, "exported")
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(
            challengePort, extraConfig={"domainBlocklist": ["blocked.example.test"]}
        )
        sets = dict(self.SETS, blocked=("blocked.example.test",))
        resource, consumers = self.makeResource(
            testCA.directoryURL,
            testCA.caFile,
            challengePort,
            sets=sets,
            stateDirectory=state,
            storeDirectory=store,
            debug=True,
            keyType="rsa-2048",
        )
        self.startResource(resource)
        await resource.whenSettled()
        await resource.check(force=True)
        self.assertIn(20017, self.recorder.ids())
        self.assertGreater(self.recorder.ids().count(20000), 20)
        directory = StateDirectory(state)
        keys = [directory.loadAccount(resource.options.acmeURL).key]
        keys.extend(c.key for consumer in consumers.values() for c in consumer.received)
        from letsencrypt_resource.certificates import CertifiedKey

        keys.append(CertifiedKey.fromPEM(directory.loadProvisionalSigner()).key)
        self.assertGreater(len(keys), 2 * len(sets))
        texts = [eventText(event) for event in self.recorder.events]
        self.assertEqual(leaks(texts, keys), [])


class KeyInErrorTests(ResourceTestCase):
    """
    Damaged state: what the errors say never holds key material.
    """

    def setUp(self) -> None:
        super().setUp()
        self.state = os.path.abspath(self.mktemp())
        self.store = StateDirectory(self.state)
        resource = self.start()
        resource.stopService()
        self.keys = [self.store.loadAccount("https://acme.test/directory").key]
        for consumer in self.consumers.values():
            self.keys.extend(c.key for c in consumer.received)
        self.events._events.clear()

    def damaged(self, relative: str, change: Any) -> str:
        """
        Apply C{change} (bytes to bytes) to the file at C{relative} in a
        copy of the state; return the copy.
        """
        copy = os.path.abspath(self.mktemp())
        shutil.copytree(self.state, copy)
        path = os.path.join(copy, relative)
        with open(path, "rb") as stream:
            data = stream.read()
        with open(path, "wb") as stream:
            stream.write(change(data))
        return copy

    def test_damagedFiles(self) -> None:
        """
        Certificates, account and signer files truncated, flipped or mixed
        up: the StoreErrors, the events of a start on that state and the
        failures of a configured account key quote none of the keys.
        """
        certificate = os.path.join("certificates", "reports.example.test.pem")
        [account] = os.listdir(os.path.join(self.state, "accounts"))
        account = os.path.join("accounts", account)
        otherKey = keyToPEM(generateKey("ecdsa-p256"))

        def flip(data: bytes, at: int) -> bytes:
            return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]

        damages = {
            "certificate truncated in its key": (certificate, lambda d: d[:100]),
            "certificate key flipped": (certificate, lambda d: flip(d, 80)),
            "certificate for another key": (
                certificate,
                lambda d: otherKey + d[d.index(b"-----BEGIN CERTIFICATE") :],
            ),
            "certificate without its certificate": (
                certificate,
                lambda d: d[: d.index(b"-----BEGIN CERTIFICATE")],
            ),
            "account truncated": (account, lambda d: d[: len(d) // 2]),
            "account key flipped": (account, lambda d: flip(d, d.index(b"KEY-----") + 40)),
            "account key cut": (account, lambda d: d.replace(b"\\n", b"\\n ", 1)[:-30] + b'"}'),
            "signer flipped": ("provisional-signer.pem", lambda d: flip(d, 90)),
        }
        texts = []
        for description, (relative, change) in damages.items():
            copy = self.damaged(relative, change)
            store = StateDirectory(copy)
            for load in (
                partial(store.loadAccount, "https://acme.test/directory"),
                partial(store.loadCertificate, ("reports.example.test",)),
                store.loadProvisionalSigner,
            ):
                try:
                    load()
                except Exception as error:
                    # StoreError is expected; anything else is a bug that
                    # tests.test_crash reports, but its text counts here.
                    texts.append(f"{description}: {error!r} {error}")
            try:
                loadAccountKey(os.path.join(copy, relative))
            except Exception as error:
                texts.append(f"{description}: {error!r} {error}")
            self.store = store
            resource = self.makeResource(stateDirectory=copy)
            try:
                resource.startService()
                runUntilFired(self.reactor, resource.whenSettled())
            except Exception as error:
                texts.append(f"{description}: {error!r} {error}")
            if resource.running:
                resource.stopService()
        texts.extend(eventText(event) for event in self.events)
        reported = [t for t in texts if t.startswith(("20017 ", "20163 "))]
        self.assertGreater(len(reported), 3)
        self.assertEqual(leaks(texts, self.keys), [])


class CertificateMismatchTests(ResourceTestCase):
    """
    The CA issues a certificate that is not the one asked for.
    """

    def issueFor(self, names: Any = None, key: Any = None) -> None:
        """
        Make the fake CA certify C{names} instead of the CSR's (a function
        of them), or C{key} instead of the CSR's key.
        """
        issue = self.server.issue

        def wrong(publicKey: Any, orderNames: Any, validity: Any = None) -> bytes:
            return issue(
                key.public_key() if key is not None else publicKey,
                names(orderNames) if names is not None else orderNames,
                validity,
            )

        self.server.issue = wrong  # type: ignore[method-assign]

    def obtain(self) -> Any:
        client = registeredClient(self.reactor, self.server)
        from letsencrypt_resource.challenge import ChallengeResponder

        responder = ChallengeResponder()
        self.server.validate = responder.lookup
        return runUntilFired(
            self.reactor,
            obtainCertificate(client, responder, self.reactor, DOMAINS, generateKey("ecdsa-p256")),
        )

    def test_otherNames(self) -> None:
        """
        A certificate for other names, for one name more, or for one name
        less is refused, naming both sets of names.
        """
        for change in (
            lambda names: ("evil.example.test",),
            lambda names: tuple(names) + ("evil.example.test",),
            lambda names: tuple(names)[:1],
        ):
            self.server = FakeACMEServer(self.reactor)
            self.issueFor(names=change)
            error = self.assertRaises(CertificateMismatch, self.obtain)
            self.assertIn("files.example.test", str(error))

    def assertRefusedByTheResource(self) -> None:
        self.start()
        texts = self.eventTexts(20017)
        self.assertEqual(len(texts), 2)
        for text in texts:
            self.assertIn("refused", text)
        self.assertEqual(self.store.keys("certificates/"), [])
        for consumer in self.consumers.values():
            self.assertEqual([c.provisional for c in consumer.received], [True])

    def test_otherNamesRefusedByTheResource(self) -> None:
        """
        The resource stores nothing, hands nothing to the services and logs
        20017 when the certificate carries another name too.
        """
        self.issueFor(names=lambda names: tuple(names) + ("evil.example.test",))
        self.assertRefusedByTheResource()

    def test_otherKeyRefusedByTheResource(self) -> None:
        """
        The same when the certificate is for another key.
        """
        self.issueFor(key=generateKey("ecdsa-p256"))
        self.assertRefusedByTheResource()


class ListenerLimitsTests(SynchronousTestCase):
    """
    The same limits and the same prompt refusals on both listeners: the
    challenge site over TCP and an C{https} file service over TLS.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.signer = newSigner()
        tree = filefuzz.makeTree(self.mktemp())
        service = HTTPSFileService(makeOptions(tree.served), self.clock)
        service.startService()
        self.addCleanup(service.stopService)
        service.consumer.useCertificate(provisionalFor(self.signer))
        [(_, self.fileFactory, _, _)] = self.clock.tcpServers
        self.challengeSite = ChallengeSite(ChallengeResponder())
        self.challengeSite.reactor = self.clock

    def connections(self) -> dict[str, InMemoryConnection]:
        """
        A new connection to each listener, by name.
        """
        return {
            "challenge": connectInMemory(self.challengeSite, clock=self.clock),
            "https": connectInMemory(
                self.fileFactory, tlsClientFactory(self.signer, self.clock), self.clock
            ),
        }

    def assertRefused(self, raw: bytes, status: bytes) -> dict[str, bytes]:
        """
        Both listeners answer C{raw} with C{status} alone and close the
        connection at once, without the clock moving.

        @return: What each listener sent, by name.
        """
        received = {}
        for name, connection in self.connections().items():
            connection.send(raw)
            answer = received[name] = connection.collector.received
            self.assertEqual(
                (answer[: len(status) + 9], answer.count(b"HTTP/1.")),
                (b"HTTP/1.1 " + status, 1),
                name,
            )
            self.assertIsNotNone(connection.collector.lostReason, name)
        self.assertEqual(self.clock.seconds(), 0)
        return received

    def closingChannel(self) -> tuple[Any, StringTransport]:
        """
        A challenge-site channel that refused a body and is closing on a
        transport that, like a TLS client that never answers close_notify,
        stays open.
        """
        channel = self.challengeSite.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 405 "))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        return channel, transport

    def test_refusedBodyCut(self) -> None:
        """
        A client that goes on sending the refused body is cut once
        L{DRAIN_LIMIT} bytes more came, instead of being read to its end.
        """
        channel, transport = self.closingChannel()
        channel.dataReceived(b"x" * DRAIN_LIMIT)
        self.assertFalse(transport.disconnected)
        channel.dataReceived(b"x")
        self.assertTrue(transport.disconnected)

    def test_silentClientCut(self) -> None:
        """
        A client that neither sends nor closes after a refusal is cut after
        the channel's C{abortTimeout}, not held until the idle timeout.
        """
        channel, transport = self.closingChannel()
        self.clock.advance(channel.abortTimeout - 1)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_tricklingHeaders(self) -> None:
        """
        A client that trickles a request's headers (a byte every few
        seconds keeps the idle timeout away) gets 408 and is closed
        L{HEADERS_DEADLINE} seconds after the request began, on both
        listeners.
        """
        for name, connection in self.connections().items():
            start = self.clock.seconds()
            connection.send(b"GET / HTTP/1.1\r\n")
            while self.clock.seconds() - start < HEADERS_DEADLINE - 5:
                connection.send(b"X")
                self.clock.advance(5)
                self.assertEqual(connection.collector.received, b"", name)
            self.clock.advance(5)
            connection.pump.flush()
            self.assertTrue(connection.collector.received.startswith(b"HTTP/1.1 408 "), name)

    def test_longHeader(self) -> None:
        """
        One header line over 16 KiB gets 400 and the connection closed;
        the file service used to wait for its idle timeout over TLS.
        """
        self.assertRefused(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: %s\r\n\r\n" % (b"a" * 20_000), b"400 "
        )

    def test_longRequestLine(self) -> None:
        """
        A request line over 16 KiB, complete or not, gets 400 and the
        connection closed.
        """
        target = b"/" + b"a" * 70_000
        self.assertRefused(rawRequest(b"GET", target), b"400 ")
        self.assertRefused(b"GET " + target, b"400 ")

    def test_manyHeaders(self) -> None:
        """
        More than 16 KiB of headers in all, or more than 500 headers, get
        400 and the connection closed.
        """
        for headers in [
            b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20)),
            b"".join(b"X-%d: a\r\n" % i for i in range(600)),
        ]:
            self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\n%s\r\n" % headers, b"400 ")

    def test_bodyRefusedUnread(self) -> None:
        """
        A request that announces a body is refused before the body is read
        or spooled to a temporary file: 413 for GET and HEAD, 405 with
        C{Allow} for other methods, whether the length is given or the
        body chunked; a request pipelined behind it is not answered.
        """
        spooled: list[Any] = []
        real = tempfile.TemporaryFile

        def recording(*args: Any, **kwargs: Any) -> Any:
            spooled.append(args)
            return real(*args, **kwargs)

        self.patch(tempfile, "TemporaryFile", recording)
        pipelined = rawRequest(b"GET", CHALLENGE_PREFIX + b"test.txt")
        for method, status in [(b"GET", b"413 "), (b"HEAD", b"413 "), (b"POST", b"405 ")]:
            self.assertRefused(rawRequest(method, b"/", b"hello") + pipelined, status)
            self.assertRefused(
                b"%s / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n" % method,
                status,
            )
            received = self.assertRefused(
                b"%s / HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n" % method
                + b"x" * 1_000_000,
                status,
            )
        self.assertIn(b"\r\nAllow: GET, HEAD\r\n", received["https"])
        self.assertEqual(spooled, [])


#: How the sites are fuzzed in the suite: 400 examples, the same each run.
FUZZED = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


#: The challenge site's fuzzing: 100,000 requests in the slow tests
#: (L{tests.helpers.slow}).
CHALLENGE_FUZZED = settings(FUZZED, max_examples=100_000 if slowTests() else 400)


class ChallengeSiteAbuseTests(SynchronousTestCase):
    """
    The public challenge site under malformed, oversized and arbitrary
    requests.
    """

    @CHALLENGE_FUZZED
    @given(request=challengefuzz.requests())
    def test_arbitraryRequests(self, request: challengefuzz.FuzzRequest) -> None:
        """
        Raw requests of every kind (odd targets, methods, versions,
        headers, bodies, sizes) get only what the site may answer; with
        C{LETSENCRYPT_SLOW_TESTS=1}, 100,000 of them.
        """
        site = challengefuzz.makeSite(request.redirect)
        answer = challengefuzz.send(site, request.raw)
        self.assertEqual(challengefuzz.problems(request, answer), [])


class FileSiteAbuseTests(SynchronousTestCase):
    """
    An C{https} file service's site under malformed, oversized and
    arbitrary requests, on a folder laid out for attacks.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        pullProducersOn(self, self.clock)
        tree = filefuzz.makeTree(self.mktemp())
        served = ServedFolder.open(tree.served)
        self.addCleanup(served.close)
        self.site = FileSite("files", False, served)
        self.site.reactor = self.clock

    @FUZZED
    @given(request=challengefuzz.requests(filefuzz.NAMES))
    def test_arbitraryRequests(self, request: challengefuzz.FuzzRequest) -> None:
        """
        Raw requests of every kind, with the folder's names among their
        path segments, get only what the service may answer (never a 5xx,
        a secret or a hidden file), and log no error or traceback.
        """
        with capturedLogs() as events:
            answer = challengefuzz.send(self.site, request.raw, self.clock)
        self.assertEqual(filefuzz.problems(request, answer), [])
        self.assertEqual(
            [
                formatEvent(e)
                for e in events
                if e["log_level"] >= LogLevel.warn or "log_failure" in e
            ],
            [],
        )
