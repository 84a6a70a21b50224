"""
Faults: the resource keeps every service on a valid certificate when the
CA rejects nonces, is down, goes away in the middle of orders, refuses a
name, answers garbage or nothing at all, when the store directory cannot be
written and when the challenge port is taken.

Most run against a real pebble (see L{tests.faultcase}); the malformed and
missing answers, which pebble cannot give, against the in-memory fake CA on
a fake clock.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from acme import messages
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.web.server import NOT_DONE_YET, Request

from letsencrypt_resource.acmeclient import MAX_BAD_NONCE_RETRIES, REQUEST_TIMEOUT
from letsencrypt_resource.certificates import CertifiedKey, certificateNames
from letsencrypt_resource.config import parseConfiguration
from letsencrypt_resource.host import ServerService
from letsencrypt_resource.issuer import ORDER_TIMEOUT
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.testing import (
    FakeACMEServer,
    advanceThrough,
    runUntilFired,
)
from tests.helpers.configuration import CONFIGURATION, HELLO
from tests.helpers.faultcase import (
    FaultCase,
    RestartablePebble,
    allIssued,
    resolveTo,
    shortRetries,
    waitFor,
)
from tests.helpers.resourcecase import ResourceTestCase
from tests.helpers.statedir import StateDirectory
from tests.helpers.tlsclient import connectTLS

#: Seconds a fault test against pebble may wait for certificates.
PATIENCE = 12.0


def storedCertificates(state: str, sets: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """
    What a fresh L{StateDirectory} loads from C{state}, by set name: it
    raises if anything is damaged.
    """
    store = StateDirectory(state)
    return {name: store.loadCertificate(domains) for name, domains in sets.items()}


class NonceRejectionTests(FaultCase):
    """
    Pebble rejecting half of the good nonces.
    """

    async def test_everyCertificateIssued(self) -> None:
        """
        With 50% of nonces rejected, every domain set is still issued at the
        first attempt: each C{badNonce} is retried with the nonce it
        carried.
        """
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort, nonceReject=50)
        sets = dict(self.SETS, more=("more.example.test",), last=("last.example.test",))
        resource, consumers = self.makeResource(
            testCA.directoryURL, testCA.caFile, challengePort, sets=sets, debug=True
        )
        self.startResource(resource)
        await resource.whenSettled()
        self.assertIssued(consumers, await testCA.fetchIssuerPEM())
        self.assertNotIn(20017, self.recorder.ids())
        retries = [t for t in self.recorder.texts(20000) if "badNonce" in t]
        # Dozens of signed requests at 50%: pebble did reject some.
        self.assertGreater(len(retries), 3)
        # The retries used the nonces their rejections carried: far fewer
        # nonces were fetched (one per order running at once, at most).
        fetched = [t for t in self.recorder.texts(20000) if "ACME HEAD" in t]
        self.assertLessEqual(len(fetched), len(sets) + 1)
        self.assertLess(len(fetched), len(retries))
        self.assertNoErrors()


class CADownAtStartTests(FaultCase):
    """
    The CA is unreachable when the resource starts.
    """

    async def test_provisionalThenIssuedWhenCAReturns(self) -> None:
        """
        Services get provisional certificates at once; each failed attempt
        is logged (20017) with the next one planned (20160); once the CA is
        back (a new pebble, with a new root) the certificates come on the
        retry schedule, with no restart.

        The schedule is the product's (1 minute, doubling), shortened to a
        quarter second so that this runs in real time: the retries are
        the resource's own wake-ups, not checks driven by the test.
        """
        shortRetries(self, 0.25)
        pebble = RestartablePebble(self.mktemp())
        await pebble.start(open=False)
        self.addCleanup(pebble.stop)
        resource, consumers = self.makeResource(
            pebble.directoryURL, pebble.caFile, pebble.challengePort
        )
        started = reactor.seconds()
        self.startResource(resource)
        self.assertTrue(await waitFor(lambda: all(c.received for c in consumers.values()), 5))
        self.assertLess(reactor.seconds() - started, 5)
        for consumer in consumers.values():
            self.assertTrue(consumer.received[0].provisional)
        await resource.whenSettled()
        failures = self.recorder.texts(20017)
        self.assertEqual(len(failures), len(consumers))
        for text in failures:
            self.assertIn("refused", text.lower())
        self.assertIn(20160, self.recorder.ids())
        await deferLater(reactor, 1.0, lambda: None)
        await pebble.stop()
        await pebble.start()
        self.assertTrue(
            await waitFor(
                lambda: allIssued(consumers),
                PATIENCE,
            ),
            self.recorder.texts(20017)[-3:],
        )
        self.assertTrue(resource.running)
        self.assertIssued(consumers, await pebble.issuersPEM())
        # Retries backed off while the CA was away.
        delays = [float(e["delay"]) for e in self.recorder.events if e.get("event_id") == 20160]
        self.assertGreater(max(delays), min(delays))
        self.assertNoErrors()

    async def restartWhileCADown(self) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
        """
        Issue certificates, stop the resource, make the CA unreachable and
        start a new resource on the same state.

        @return: the new resource, its consumers, the certificates issued
            before, by set name, and the pebble.
        """
        pebble = RestartablePebble(self.mktemp())
        await pebble.start()
        self.addCleanup(pebble.stop)
        state = os.path.abspath(self.mktemp())
        first, consumers = self.makeResource(
            pebble.directoryURL, pebble.caFile, pebble.challengePort, stateDirectory=state
        )
        self.startResource(first)
        await first.whenSettled()
        issued = {name: c.received[-1] for name, c in consumers.items()}
        await first.stopService()
        # The CA is unreachable (pebble itself keeps running: a new pebble
        # would not know the stored account).
        await pebble.door.refuse()
        del self.recorder.events[:]
        second, consumers = self.makeResource(
            pebble.directoryURL, pebble.caFile, pebble.challengePort, stateDirectory=state
        )
        self.startResource(second)
        await second.whenSettled()
        return second, consumers, issued, pebble

    async def test_storedCertificatesWhileCADown(self) -> None:
        """
        After a restart with the CA down, services start at once on their
        stored certificates, keep them through failed attempts, and get new
        ones once the CA is back.
        """
        second, consumers, issued, pebble = await self.restartWhileCADown()
        for name, consumer in consumers.items():
            [again] = consumer.received
            self.assertEqual(again.certificate, issued[name].certificate)
        [started] = self.recorder.texts(20208)
        self.assertIn(f"{len(consumers)} on CA-issued certificates", started)
        self.assertIn(f"({len(consumers)} stored certificates loaded), 0 on provisional", started)
        before = len(self.recorder.texts(20017))
        await second.check(force=True)
        self.assertEqual(len(self.recorder.texts(20017)), before + len(consumers))
        for name, consumer in consumers.items():
            self.assertEqual(consumer.received[-1].certificate, issued[name].certificate)
        pebble.door.forward()
        await second.check(force=True)
        self.assertIssued(consumers, await pebble.issuersPEM())
        for name, consumer in consumers.items():
            self.assertNotEqual(consumer.received[-1].certificate, issued[name].certificate)
        self.assertNoErrors()

    async def test_noFailureWhenNothingDue(self) -> None:
        """
        Starting with the CA down and stored certificates far from due is
        not a failure to get a certificate: no 20017 (critical), at most a
        warning that the CA could not be asked (20161).
        """
        await self.restartWhileCADown()
        self.assertNotIn(20017, self.recorder.ids())


class CAGoneMidOrderTests(FaultCase):
    """
    The CA goes away while orders are under way, and comes back.
    """

    async def cutMidOrder(self, when: str, restart: bool) -> None:
        """
        Start the resource; at C{when} ("challenge": the first challenge is
        about to be answered, "finalize": the first order is finalized)
        make the CA unreachable, dropping every connection; a second later
        bring it back (with C{restart}, as a new pebble).  Every set must
        end up issued without a restart of the resource.
        """
        from letsencrypt_resource.acmeclient import ACMEClient

        shortRetries(self, 0.25)
        pebble = RestartablePebble(self.mktemp())
        await pebble.start()
        self.addCleanup(pebble.stop)
        resource, consumers = self.makeResource(
            pebble.directoryURL, pebble.caFile, pebble.challengePort
        )
        cut: list[float] = []

        async def comeBack() -> None:
            await deferLater(reactor, 1.0, lambda: None)
            if restart:
                await pebble.stop()
                await pebble.start()
            else:
                pebble.door.forward()

        def goAway() -> None:
            if not cut:
                cut.append(reactor.seconds())
                pebble.door.refuse()
                from twisted.internet.defer import Deferred

                Deferred.fromCoroutine(comeBack())

        if when == "challenge":
            add = resource.responder.add

            def adding(token: str, keyAuthorization: str) -> None:
                add(token, keyAuthorization)
                goAway()

            resource.responder.add = adding  # type: ignore[method-assign]
        else:
            finalize = ACMEClient.finalize

            def finalizing(client: Any, *args: Any) -> Any:
                goAway()
                return finalize(client, *args)

            self.patch(ACMEClient, "finalize", finalizing)

        self.startResource(resource)
        await resource.whenSettled()
        self.assertTrue(cut)
        self.assertIn(20017, self.recorder.ids())
        self.assertTrue(
            await waitFor(
                lambda: allIssued(consumers),
                PATIENCE,
            ),
            self.recorder.texts(20017)[-3:],
        )
        self.assertIssued(consumers, await pebble.issuersPEM())
        await resource.check()
        for certificate in resource.managed.values():
            self.assertIsNone(certificate.attempt)
        self.assertEqual(len(resource.responder), 0)
        self.assertNoErrors()

    async def test_unreachableWhileValidating(self) -> None:
        """
        The CA vanishes as the first challenge is answered.
        """
        await self.cutMidOrder("challenge", restart=False)

    async def test_unreachableWhileFinalizing(self) -> None:
        """
        The CA vanishes as the first order is finalized.
        """
        await self.cutMidOrder("finalize", restart=False)

    async def test_restartedWhileValidating(self) -> None:
        """
        The CA is restarted as the first challenge is answered: the new
        pebble knows neither the orders nor the account.
        """
        await self.cutMidOrder("challenge", restart=True)

    async def test_responsesCutShort(self) -> None:
        """
        Connections to the CA reset part-way through its answers fail the
        attempts they carry; the next attempts succeed on new connections.
        """
        shortRetries(self, 0.25)
        pebble = RestartablePebble(self.mktemp())
        await pebble.start()
        self.addCleanup(pebble.stop)
        pebble.door.cutNext(4, 2500)
        resource, consumers = self.makeResource(
            pebble.directoryURL, pebble.caFile, pebble.challengePort
        )
        self.startResource(resource)
        self.assertTrue(
            await waitFor(
                lambda: allIssued(consumers),
                PATIENCE,
            ),
            self.recorder.texts(20017)[-3:],
        )
        self.assertGreater(pebble.door.cutsDone, 0)
        self.assertIssued(consumers, await pebble.issuersPEM())
        self.assertNoErrors()


class OneSetFailsTests(FaultCase):
    """
    One domain set cannot be issued; the others must be.
    """

    async def checkOnlyFailing(self, failing: str, problem: str, name: str) -> None:
        await self.resource.whenSettled()
        [text] = self.recorder.texts(20017)
        self.assertIn(", ".join(self.sets[failing]), text)
        self.assertIn(problem, text)
        self.assertIn(name, text)
        [planned] = self.recorder.texts(20160)
        self.assertIn(", ".join(self.sets[failing]), planned)
        others = {n: c for n, c in self.consumers.items() if n != failing}
        self.assertIssued(others, await self.testCA.fetchIssuerPEM())
        self.assertTrue(self.consumers[failing].received[-1].provisional)
        self.assertNoErrors()

    async def startWith(self, failingNames: tuple[str, ...], **kwargs: Any) -> None:
        challengePort = freeTCPPort()
        self.testCA = await self.startTestCA(challengePort, **kwargs)
        self.sets = dict(self.SETS, failing=failingNames)
        self.challengePort = challengePort

    def go(self) -> None:
        self.resource, self.consumers = self.makeResource(
            self.testCA.directoryURL, self.testCA.caFile, self.challengePort, sets=self.sets
        )
        self.startResource(self.resource)

    async def test_nameRefusedByPolicy(self) -> None:
        """
        A name on the CA's block list: 20017 with its C{rejectedIdentifier}
        problem for that set alone.
        """
        await self.startWith(
            ("ok.example.test", "blocked.example.test"),
            extraConfig={"domainBlocklist": ["blocked.example.test"]},
        )
        self.go()
        await self.checkOnlyFailing("failing", "rejectedIdentifier", "blocked.example.test")

    async def test_challengeNotAnswered(self) -> None:
        """
        A name that resolves where nothing answers: 20017 with the CA's
        C{connection} problem naming it, for that set alone.
        """
        await self.startWith(("ok.example.test", "lost.example.test"))
        await resolveTo(self.testCA, "lost.example.test", "127.0.0.2")
        self.go()
        await self.checkOnlyFailing("failing", "connection", "lost.example.test")


class HangingACMEServer(FakeACMEServer):
    """
    The fake CA, which can also never answer or cut its answers short.

    @ivar hang: Path prefixes never answered.
    @ivar truncate: Path prefixes answered with a body cut short: the
        connection closes before the announced length was sent.
    """

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.hang: set[str] = set()
        self.truncate: set[str] = set()
        self.hanging: list[Request] = []

    def render(self, request: Request) -> Any:
        path = request.path.decode("ascii")
        if any(path.startswith(prefix) for prefix in self.hang):
            self.requests.append((request.method.decode("ascii"), path))
            self.hanging.append(request)
            return NOT_DONE_YET
        if any(path.startswith(prefix) for prefix in self.truncate):
            self.requests.append((request.method.decode("ascii"), path))
            request.setHeader("content-type", "application/json")
            request.setHeader("content-length", "1000")
            request.write(b'{"status": "pend')
            request.channel.transport.loseConnection()
            return NOT_DONE_YET
        return super().render(request)


class BadAnswerTests(ResourceTestCase):
    """
    The ACME server answers errors, garbage or nothing: every attempt ends
    within its time-outs with a clear 20017, leaves nothing pending, and
    the next attempt after the fault succeeds.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server = HangingACMEServer(self.reactor)

    def startFaulty(self) -> Any:
        """
        Start the resource, let the first attempts end, and return it.
        """
        resource = self.makeResource()
        resource.startService()
        self.addCleanup(self.stop, resource)
        self.started = self.reactor.seconds()
        runUntilFired(self.reactor, resource.whenSettled(), limit=3 * 3600)
        return resource

    def assertRecovers(self, resource: Any) -> None:
        """
        Nothing is left pending; once the fault is gone the next scheduled
        attempt issues every certificate; stopping leaves no delayed call.
        """
        for certificate in resource.managed.values():
            self.assertIsNone(certificate.attempt)
        self.assertEqual(len(resource.responder), 0)
        for consumer in self.consumers.values():
            self.assertTrue(consumer.received[-1].provisional)
        self.server.faults.clear()
        self.server.hang.clear()
        self.server.truncate.clear()
        advanceThrough(self.reactor, 3600)
        for consumer in self.consumers.values():
            self.assertFalse(consumer.received[-1].provisional)
        errors = [
            e
            for e in self.events
            if "log_failure" in e or (e.get("isError") and "event_id" not in e)
        ]
        self.assertEqual(errors, [])
        resource.stopService()
        self.reactor.advance(REQUEST_TIMEOUT)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def failureTexts(self) -> list[str]:
        texts = self.eventTexts(20017)
        self.assertEqual(len(texts), 2, texts)
        return texts

    def test_serverError(self) -> None:
        """
        A 500 without a problem document: 20017 names the status and URL.
        """
        self.server.fail("/new-order", 500, body=b"<h1>Internal error</h1>", times=None)
        resource = self.startFaulty()
        for text in self.failureTexts():
            self.assertIn("HTTP 500", text)
            self.assertIn("https://acme.test/new-order", text)
        self.assertRecovers(resource)

    def test_unavailableWithRetryAfter(self) -> None:
        """
        A 503 with Retry-After: no new attempt before the delay the server
        asked for, which 20160 announces.
        """
        self.server.fail(
            "/new-order", 503, body=b"busy", headers={"Retry-After": "900"}, times=None
        )
        resource = self.startFaulty()
        for text in self.failureTexts():
            self.assertIn("HTTP 503", text)
        self.assertTrue(all("in 900 seconds" in t for t in self.eventTexts(20160)))
        orders = len([r for r in self.server.requests if r[1] == "/new-order"])
        self.reactor.advance(899)
        self.assertEqual(len([r for r in self.server.requests if r[1] == "/new-order"]), orders)
        self.assertRecovers(resource)

    def test_malformedJSON(self) -> None:
        """
        An order answered with JSON cut short, in the middle of polling.
        """
        self.server.fail("/order/", 200, body=b'{"status": "val', times=None)
        resource = self.startFaulty()
        for text in self.failureTexts():
            self.assertIn("not JSON", text)
        self.assertRecovers(resource)

    def test_htmlInsteadOfJSON(self) -> None:
        """
        An HTML page (a proxy's error page) where the order should be.
        """
        self.server.fail(
            "/new-order",
            200,
            body=b"<html><body>Gateway says hi</body></html>",
            headers={"content-type": "text/html"},
            times=None,
        )
        resource = self.startFaulty()
        for text in self.failureTexts():
            self.assertIn("not JSON", text)
            self.assertIn("Gateway says hi", text)
        self.assertRecovers(resource)

    def test_certificateOfWrongType(self) -> None:
        """
        JSON where the PEM chain should be: the certificate is refused and
        nothing is stored.
        """
        self.server.fail(
            "/cert/",
            200,
            body=b'{"certificate": "here"}',
            headers={"content-type": "application/json"},
            times=None,
        )
        resource = self.startFaulty()
        for text in self.failureTexts():
            self.assertIn("refused", text)
        self.assertEqual(self.store.keys("certificates/"), [])
        self.assertRecovers(resource)

    def test_truncatedBody(self) -> None:
        """
        A body cut short (the connection closes before Content-Length bytes
        came) fails the attempt at once.
        """
        self.server.truncate.add("/new-order")
        resource = self.startFaulty()
        self.failureTexts()
        self.assertEqual(self.reactor.seconds(), self.started)
        self.assertRecovers(resource)

    def test_neverAnswers(self) -> None:
        """
        A server that accepts requests and never answers: each request
        gives up after REQUEST_TIMEOUT, so the attempt ends.
        """
        self.server.hang.add("/new-order")
        resource = self.startFaulty()
        self.failureTexts()
        self.assertLessEqual(self.reactor.seconds() - self.started, REQUEST_TIMEOUT + 1)
        self.assertRecovers(resource)

    def assertClear(self, url: str) -> None:
        texts = self.failureTexts()
        for text in texts:
            self.assertNotIn("twisted.python.failure.Failure", text)
            self.assertIn(url, text)

    def test_timeoutMessageIsClear(self) -> None:
        """
        The 20017 of a time-out names the URL and says no answer came, in
        words, not as the repr of Twisted failures.
        """
        self.server.hang.add("/new-order")
        self.startFaulty()
        self.assertClear("https://acme.test/new-order")
        for text in self.eventTexts(20017):
            self.assertIn("30 seconds", text)

    def test_connectionLostMessageIsClear(self) -> None:
        """
        The 20017 of an answer cut short names the URL and says the
        connection was lost, in words.
        """
        self.server.truncate.add("/new-order")
        self.startFaulty()
        self.assertClear("https://acme.test/new-order")

    def test_slowServerOrderBounded(self) -> None:
        """
        A server slow to answer every request (but within REQUEST_TIMEOUT)
        and whose order never completes: the order ends with OrderTimedOut
        within ORDER_TIMEOUT, plus the one request under way.
        """
        self.server.hang.clear()
        self.server.fail("/chall/", 200, body=b"{}", times=None)
        slow = SlowAnswers(self.server, self.reactor, REQUEST_TIMEOUT - 5)
        resource = self.makeResource()
        slow.install(resource, self)
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled(), limit=3 * 3600)
        for text in self.eventTexts(20017):
            self.assertIn("still pending after 300 seconds", text)
        durations = slow.orderDurations()
        self.assertEqual(len(durations), 2)
        for duration in durations:
            self.assertLessEqual(duration, ORDER_TIMEOUT + REQUEST_TIMEOUT)

    def test_slowNonceRejectionsOrderBounded(self) -> None:
        """
        A server that answers slowly and rejects every nonce: the order
        still ends within ORDER_TIMEOUT plus one request, however many
        badNonce retries remain.
        """
        problem = messages.Error.with_code("badNonce", detail="stale")
        self.server.fail("/new-order", 400, problem=problem, times=None)
        slow = SlowAnswers(self.server, self.reactor, REQUEST_TIMEOUT - 5)
        resource = self.makeResource()
        slow.install(resource, self)
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled(), limit=3 * 3600)
        # The bound cuts the badNonce retries short.
        self.assertLess(
            len([r for r in self.server.requests if r[1] == "/new-order"]),
            2 * (MAX_BAD_NONCE_RETRIES + 1),
        )
        durations = slow.orderDurations()
        self.assertEqual(len(durations), 2)
        for duration in durations:
            self.assertLessEqual(duration, ORDER_TIMEOUT + REQUEST_TIMEOUT)


class SlowAnswers:
    """
    Delays every answer of a fake CA served through a
    C{RequestTraversalAgent}.
    """

    def __init__(self, server: FakeACMEServer, clock: Any, delay: float) -> None:
        self.server = server
        self.clock = clock
        self.delay = delay

    def install(self, resource: Any, case: Any) -> None:
        """
        Slow down the fake CA that C{resource} talks to, and note when each
        order starts and fails by the fake clock, for the rest of C{case}.
        """
        self.timeline: list[tuple[float, dict[str, Any]]] = []

        def note(event: dict[str, Any]) -> None:
            if event.get("event_id") in (20155, 20017):
                self.timeline.append((self.clock.seconds(), event))

        globalLogPublisher.addObserver(note)
        case.addCleanup(globalLogPublisher.removeObserver, note)
        agent = resource._owned.httpClient
        render = self.server.render

        def slowly(request: Request) -> Any:
            lost: list[bool] = []
            request.notifyFinish().addErrback(lambda _: lost.append(True))

            def answer() -> None:
                if lost:
                    return
                body = render(request)
                if body is not NOT_DONE_YET:
                    request.write(body)
                    request.finish()
                agent.flush()

            self.clock.callLater(self.delay, answer)
            return NOT_DONE_YET

        self.server.render = slowly  # type: ignore[method-assign]

    def orderDurations(self) -> list[float]:
        """
        For each 20017, the seconds since the 20155 that started its order.
        """
        started: dict[str, float] = {}
        durations = []
        for when, event in self.timeline:
            if event["event_id"] == 20155:
                started[event["domains"]] = when
            elif event["domains"] in started:
                durations.append(when - started.pop(event["domains"]))
        return durations


class StoreDirectoryTests(FaultCase):
    """
    The store directory cannot be written.
    """

    async def startBlocked(self) -> tuple[Any, dict[str, Any], str, str, Any]:
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        blocked = os.path.join(base, "exported")
        with open(blocked, "wb") as stream:
            stream.write(b"a file where the store directory should be\n")
        state = os.path.join(base, "state")
        resource, consumers = self.makeResource(
            testCA.directoryURL,
            testCA.caFile,
            challengePort,
            stateDirectory=state,
            storeDirectory=blocked,
        )
        self.startResource(resource)
        await resource.whenSettled()
        return resource, consumers, state, blocked, testCA

    async def test_exportFails(self) -> None:
        """
        20009 names the folder and why; the services get their new
        certificates anyway, the state directory holds them intact, and
        the resource goes on renewing.
        """
        resource, consumers, state, blocked, testCA = await self.startBlocked()
        texts = self.recorder.texts(20009)
        self.assertEqual(len(texts), len(consumers))
        for text in texts:
            self.assertIn(blocked, text)
            self.assertIn("is not a folder", text)
        issuers = await testCA.fetchIssuerPEM()
        self.assertIssued(consumers, issuers)
        stored = storedCertificates(state, self.SETS)
        for name, consumer in consumers.items():
            self.assertEqual(stored[name].certificate, consumer.received[-1].certificate)
        await resource.check(force=True)
        self.assertGreaterEqual(len(self.recorder.texts(20009)), 2 * len(consumers))
        self.assertIssued(consumers, issuers)
        self.assertNotIn(20017, self.recorder.ids())
        self.assertNoErrors()

    async def test_exportRetriedLater(self) -> None:
        """
        Once the store directory can be written again, the next retry of
        the failed writes exports the certificates in service (20185),
        without a new order.
        """
        shortRetries(self, 0.5)
        resource, consumers, state, blocked, _ = await self.startBlocked()
        os.remove(blocked)
        orders = self.recorder.ids().count(20155)

        def recovered():
            return self.recorder.ids().count(20185) >= len(consumers)

        self.assertTrue(await waitFor(recovered, 10))
        self.assertEqual(self.recorder.ids().count(20155), orders)
        for name, domains in self.SETS.items():
            folder = os.path.join(blocked, "_".join(domains))
            with open(os.path.join(folder, "cert.pem"), "rb") as stream:
                self.assertEqual(stream.read(), consumers[name].received[-1].certificatePEM)


class ChallengePortTakenTests(FaultCase):
    """
    Something else holds the challenge port.
    """

    async def test_clearErrorServicesRun(self) -> None:
        """
        20152 names the address, the port and the reason; every TLS
        service still listens and completes handshakes on its provisional
        certificate; orders fail with the CA's problem rather than hang.
        """
        challengePort = freeTCPPort()
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", challengePort))
        self.addCleanup(blocker.close)
        testCA = await self.startTestCA(challengePort)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "public"))
        with open(os.path.join(directory, "public", "hello.txt"), "wb") as stream:
            stream.write(HELLO)
        ports = [freeTCPPort() for _ in range(3)]
        configuration = parseConfiguration(
            CONFIGURATION.format(
                challengePort=challengePort,
                directoryURL=testCA.directoryURL,
                caFile=testCA.caFile,
                keyType="ecdsa-p256",
                ports=ports,
            ),
            directory,
        )
        server = ServerService(configuration, reactor)
        server.startService()
        self.addCleanup(server.stopService)
        await server.resource.whenSettled()
        [text] = self.recorder.texts(20152)
        self.assertIn(f"127.0.0.1 port {challengePort}", text)
        self.assertIn(os.strerror(errno.EADDRINUSE), text)
        signer = CertifiedKey.fromPEM(
            StateDirectory(os.path.join(directory, "state")).loadProvisionalSigner()
        )
        names = ["www.example.test", "files.example.test", "reports.example.test"]
        for port, name in zip(ports, names, strict=False):
            client = await connectTLS(reactor, port, name, signer.certificatePEM)
            try:
                await client.get("/hello.txt", HELLO)
                self.assertIn(name, certificateNames(client.peerCertificate()))
            finally:
                client.transport.loseConnection()
                await client.lost
        self.assertEqual(len(self.recorder.texts(20017)), 2)
        self.assertNoErrors()
