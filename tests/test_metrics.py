"""
Tests for the Prometheus metrics: what is counted, the agent that times
ACME requests, the metrics site, its options, and what a running resource
reports.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import attrs
from prometheus_client import REGISTRY, generate_latest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import Data
from twisted.web.test.requesthelper import DummyRequest

from letsencrypt_resource import cli, host
from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.challenge import ChallengeResponder, ChallengeTokens
from letsencrypt_resource.config import ConfigurationError, parseConfiguration
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.metrics import Metrics, TimedAgent
from letsencrypt_resource.metricsexposition import (
    CONTENT_TYPE,
    MAX_SCRAPES,
    Exposition,
    SharedRender,
)
from letsencrypt_resource.metricssite import MetricsPlace, MetricsRoot, MetricsSiteService
from tests.helpers import connectInMemory, selfSigned
from tests.helpers.configuration import resource, service
from tests.helpers.resourcecase import (
    ACME_URL,
    DAY,
    RefusingReactor,
    ResourceTestCase,
    resourceOptions,
)

#: The directory URLs of a resource's CAs: its own, and a fallback CA.
FIRST = "https://first.example/directory"
SECOND = "https://second.example/directory"


def configure(**options: str) -> Any:
    """
    A configuration whose resource sets C{options}.
    """
    return parseConfiguration(resource(**options), "/etc/le")


EXPIRY = "letsencrypt_certificate_expiration_timestamp_seconds"


def exposed(metrics: Metrics) -> str:
    """
    The text a scrape of C{metrics} gets.
    """
    return generate_latest(metrics.registry).decode("utf-8")


def state(metrics: Metrics, domains: str) -> dict[str, float | None]:
    """
    The value of each serving state of the set C{domains}.
    """
    name = "letsencrypt_certificate_state"
    return {
        each: metrics.registry.get_sample_value(name, {"domains": domains, "state": each})
        for each in ("provisional", "issued")
    }


def failures(metrics: Metrics, domains: str) -> float | None:
    """
    The renewal attempts failed in a row of the set C{domains}.
    """
    return metrics.registry.get_sample_value(
        "letsencrypt_certificate_renewal_failures", {"domains": domains}
    )


class MetricsTests(SynchronousTestCase):
    """
    L{Metrics} records what the parts tell it, in its own registry.
    """

    def test_certificatesInService(self) -> None:
        """
        Each set's expiry time and serving state are gauges labelled by
        the set's names, read from the sets in service at each scrape: a
        set without a certificate, or no longer there, has none.
        """
        issued = selfSigned(("a.example", "b.example"))
        provisional = attrs.evolve(selfSigned(("c.example",)), provisional=True)
        inService: list[tuple[str, CertifiedKey | None, int]] = [
            ("a.example, b.example", issued, 0),
            ("c.example", provisional, 2),
            ("d.example", None, 1),
        ]
        metrics = Metrics(lambda: inService)
        self.assertEqual(
            metrics.registry.get_sample_value(EXPIRY, {"domains": "a.example, b.example"}),
            issued.notAfter.timestamp(),
        )
        self.assertEqual(
            state(metrics, "a.example, b.example"), {"issued": 1.0, "provisional": 0.0}
        )
        self.assertEqual(state(metrics, "c.example"), {"issued": 0.0, "provisional": 1.0})
        self.assertEqual(
            [
                failures(metrics, each)
                for each in ("a.example, b.example", "c.example", "d.example")
            ],
            [0.0, 2.0, 1.0],
        )
        self.assertIsNone(metrics.registry.get_sample_value(EXPIRY, {"domains": "d.example"}))
        del inService[:]
        self.assertNotIn("example", exposed(metrics))

    def test_counters(self) -> None:
        """
        Renewal attempts and challenge requests are counted by result, each
        result shown from the start; the last successful check is a time.
        """
        metrics = Metrics()
        text = exposed(metrics)
        for line in (
            'letsencrypt_renewal_attempts_total{ca="other",result="issued"} 0.0',
            'letsencrypt_renewal_attempts_total{ca="other",result="failed"} 0.0',
            'letsencrypt_challenge_requests_total{result="answered"} 0.0',
            'letsencrypt_challenge_requests_total{result="not_found"} 0.0',
            "letsencrypt_last_successful_check_timestamp_seconds 0.0",
        ):
            self.assertIn(line, text)
        metrics.renewalEnded("failed")
        metrics.challengeRequest("answered")
        metrics.checkSucceeded(1_800_000_000.0)
        text = exposed(metrics)
        self.assertIn('letsencrypt_renewal_attempts_total{ca="other",result="failed"} 1.0', text)
        self.assertIn('letsencrypt_challenge_requests_total{result="answered"} 1.0', text)
        self.assertIn("letsencrypt_last_successful_check_timestamp_seconds 1.8e+09", text)

    def test_latency(self) -> None:
        """
        ACME request times go in a histogram by method and CA (the
        resource's own by default); an unknown method is C{other}, and so
        is a CA not configured, so that the series stay bounded.
        """
        metrics = Metrics(cas=(FIRST, SECOND))
        metrics.acmeRequest("POST", 0.3)
        metrics.acmeRequest("BREW", 0.01, SECOND)
        metrics.acmeRequest("GET", 0.01, "https://elsewhere.example/dir")
        text = exposed(metrics)
        self.assertIn(
            "letsencrypt_acme_request_duration_seconds_bucket"
            f'{{ca="{FIRST}",le="0.5",method="POST"}} 1.0',
            text,
        )
        self.assertIn(
            "letsencrypt_acme_request_duration_seconds_bucket"
            f'{{ca="{FIRST}",le="0.25",method="POST"}} 0.0',
            text,
        )
        self.assertIn(
            f'letsencrypt_acme_request_duration_seconds_count{{ca="{SECOND}",method="other"}} 1.0',
            text,
        )
        self.assertIn(
            'letsencrypt_acme_request_duration_seconds_count{ca="other",method="GET"} 1.0', text
        )

    def test_ownRegistry(self) -> None:
        """
        Two resources' metrics do not clash, and neither is in the
        process-wide registry.
        """
        Metrics().renewalEnded("issued")
        Metrics().renewalEnded("issued")
        self.assertIsNone(REGISTRY.get_sample_value("letsencrypt_renewal_attempts_total"))


class FakeAgent:
    """
    An agent whose requests wait for the test.
    """

    def __init__(self) -> None:
        self.requests: list[Deferred[Any]] = []

    def request(self, method: bytes, uri: bytes, headers: Any, bodyProducer: Any) -> Deferred[Any]:
        self.requests.append(Deferred())
        return self.requests[-1]


class TimedAgentTests(SynchronousTestCase):
    """
    L{TimedAgent} tells how long each request took.
    """

    def test_timed(self) -> None:
        """
        The time from the request to its response, or to its failure,
        which goes on to the caller, is observed with the method.
        """
        clock = Clock()
        agent = FakeAgent()
        observed: list[tuple[str, float]] = []
        timed = TimedAgent(agent, clock, lambda *args: observed.append(args))
        answered: list[object] = []
        timed.request(b"POST", b"https://ca.test/new-order").addCallback(answered.append)
        failed = timed.request(b"GET", b"https://ca.test/directory")
        clock.advance(0.25)
        agent.requests[0].callback("response")
        clock.advance(1)
        agent.requests[1].errback(ConnectionError("refused"))
        self.failureResultOf(failed, ConnectionError)
        self.assertEqual(answered, ["response"])
        self.assertEqual(observed, [("POST", 0.25), ("GET", 1.25)])


class ChallengeCountTests(SynchronousTestCase):
    """
    The challenge tokens resource counts what it answers.
    """

    def test_counted(self) -> None:
        """
        A pending token is counted as answered; an unknown token, or a path
        that is no token, as not found.
        """
        responder = ChallengeResponder()
        counted: list[str] = []
        responder.counted = counted.append
        responder.add("tok-1", "tok-1.thumb")
        tokens = ChallengeTokens(responder)
        for path in (b"tok-1", b"tok-2", b"../etc"):
            request = DummyRequest([path])
            request.site = SimpleNamespace(reactor=Clock())
            tokens.render_GET(request)
        self.assertEqual(counted, ["answered", "not_found", "not_found"])


class MetricsRootTests(SynchronousTestCase):
    """
    The metrics site serves C{/metrics} to GET and HEAD, and nothing else.
    """

    def render(self, method: bytes, path: list[bytes]) -> tuple[int, bytes]:
        root = MetricsRoot(Data(b"exposition", "text/plain"))
        request = DummyRequest(path[1:])
        request.method = method
        resource = root.getChildWithDefault(path[0], request) if path else root
        body = resource.render(request)
        return request.responseCode or 200, body

    def test_routes(self) -> None:
        """
        C{GET /metrics} is the exposition; another path is 404, another
        method 405.
        """
        self.assertEqual(self.render(b"GET", [b"metrics"]), (200, b"exposition"))
        self.assertEqual(self.render(b"GET", [b"metrics", b"x"])[0], 404)
        self.assertEqual(self.render(b"GET", [b"other"])[0], 404)
        self.assertEqual(self.render(b"GET", [])[0], 404)
        self.assertEqual(self.render(b"POST", [b"metrics"])[0], 405)
        self.assertEqual(self.render(b"DELETE", [])[0], 405)


class FakePool:
    """
    A thread pool that runs its jobs when told, in the test's thread.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any, tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, onResult: Any, function: Any, *args: Any) -> None:
        self.jobs.append((onResult, function, args))

    def runAll(self) -> None:
        jobs, self.jobs = self.jobs, []
        for onResult, function, args in jobs:
            onResult(True, function(*args))


class ThreadReactor(MemoryReactorClock):
    """
    A memory reactor whose C{callFromThread} calls at once.
    """

    def callFromThread(self, function: Any, *args: Any) -> None:
        function(*args)


class ExpositionTests(SynchronousTestCase):
    """
    L{Exposition} renders in its own thread, one render shared by the
    scrapes waiting for it, within L{MAX_SCRAPES} scrapes in flight.
    """

    def setUp(self) -> None:
        self.pool = FakePool()
        metrics = Metrics()
        metrics.renewalEnded("issued")
        render = SharedRender(metrics.registry, ThreadReactor(), self.pool)  # type: ignore[arg-type]
        self.exposition = Exposition(render, Logger())

    def scrape(self) -> DummyRequest:
        request = DummyRequest([b"metrics"])
        self.assertEqual(self.exposition.render(request), NOT_DONE_YET)
        return request

    def test_sharedRender(self) -> None:
        """
        Scrapes that arrive while a render runs share it: one job in the
        pool for all of them; a scrape after it gets a new render.
        """
        first, second = self.scrape(), self.scrape()
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.runAll()
        for request in (first, second):
            self.assertEqual(request.finished, 1)
            self.assertIn(
                b'letsencrypt_renewal_attempts_total{ca="other",result="issued"} 1.0',
                b"".join(request.written),
            )
            self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [CONTENT_TYPE])
        self.scrape()
        self.assertEqual(len(self.pool.jobs), 1)

    def test_tooManyScrapes(self) -> None:
        """
        Past L{MAX_SCRAPES} scrapes in flight, a scrape is 503 at once, with
        C{Retry-After}; once they end, scrapes are taken again.
        """
        waiting = [self.scrape() for _ in range(MAX_SCRAPES)]
        refused = DummyRequest([b"metrics"])
        self.assertEqual(self.exposition.render(refused), b"Too many scrapes at once.\n")
        self.assertEqual(refused.responseCode, 503)
        self.assertEqual(refused.responseHeaders.getRawHeaders(b"retry-after"), [b"5"])
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.runAll()
        self.assertEqual([request.finished for request in waiting], [1] * MAX_SCRAPES)
        self.scrape()

    def test_goneBeforeRendered(self) -> None:
        """
        A scrape whose connection is lost before the render ends is not
        written to, and no longer counts as in flight.
        """
        gone = [self.scrape() for _ in range(MAX_SCRAPES)]
        for request in gone:
            request.processingFailed(Failure(ConnectionDone()))
        kept = self.scrape()
        self.pool.runAll()
        self.assertEqual([request.written for request in gone], [[]] * MAX_SCRAPES)
        self.assertEqual(kept.finished, 1)


class MetricsSiteServiceTests(SynchronousTestCase):
    """
    The metrics site listens where the options say, or not at all.
    """

    def test_listens(self) -> None:
        """
        With an address and a port, it listens there (20250) while it runs.
        """
        reactor = MemoryReactorClock()
        options = resourceOptions(metricsAddress="127.0.0.1", metricsPort=9464)
        service = MetricsSiteService(options, Metrics(), reactor, Logger())
        with self.assertLogs(20250) as logged:
            service.startService()
        [(port, _, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (9464, "127.0.0.1"))
        self.assertEqual(logged, ["127.0.0.1 port 9464"])
        self.successResultOf(service.stopService())

    def test_failed(self) -> None:
        """
        When it cannot listen, 20251 says where and why.
        """
        options = resourceOptions(metricsAddress="127.0.0.1", metricsPort=9464)
        service = MetricsSiteService(options, Metrics(), RefusingReactor(), Logger())
        with self.assertLogs(20251) as logged:
            service.startService()
        self.assertEqual(logged, ["127.0.0.1 port 9464: [Errno 98] Address already in use"])
        self.successResultOf(service.stopService())

    def test_renderThreadKeptWhileDraining(self) -> None:
        """
        A connection open as it stops keeps the render thread running until
        its client has closed it (a scrape that comes meanwhile is
        answered); then the thread is stopped.
        """
        reactor = MemoryReactorClock()
        options = resourceOptions(metricsAddress="127.0.0.1", metricsPort=9464)
        service = MetricsSiteService(options, Metrics(), reactor, Logger())
        service.startService()
        # A thread left running would keep the test process from exiting.
        self.addCleanup(lambda: service._pool.stop() if service._pool.started else None)
        [(_, factory, _, _)] = reactor.tcpServers
        connection = connectInMemory(factory, clock=reactor)
        stopped = service.stopService()
        self.assertNoResult(stopped)
        self.assertTrue(service._pool.started)
        connection.collector.transport.loseConnection()
        connection.pump.flush()
        self.successResultOf(stopped)
        self.assertFalse(service._pool.started)

    def test_off(self) -> None:
        """
        Without metrics options, it listens nowhere.
        """
        reactor = MemoryReactorClock()
        self.assertIsNone(MetricsPlace.of(resourceOptions()))
        MetricsSiteService(resourceOptions(), Metrics(), reactor, Logger()).startService()
        self.assertEqual(reactor.tcpServers, [])

    def assertLogs(self, eventID: int) -> Any:
        """
        A context that collects the address, port and details of the
        events C{eventID}.
        """

        @contextmanager
        def collecting() -> Any:
            logged: list[str] = []

            def observe(event: dict[str, Any]) -> None:
                if event.get("event_id") == eventID:
                    details = f": {event['details']}" if "details" in event else ""
                    logged.append(f"{event['address']} port {event['port']}{details}")

            globalLogPublisher.addObserver(observe)
            try:
                yield logged
            finally:
                globalLogPublisher.removeObserver(observe)

        return collecting()


class MetricsOptionTests(SynchronousTestCase):
    """
    The metrics options as the file has them.
    """

    def test_addressAndPort(self) -> None:
        """
        The listener is C{metrics_address} with C{metrics_port}, or
        C{metrics_endpoint}; off without either.
        """
        resource = configure(metrics_address="127.0.0.1", metrics_port="9464").resource
        self.assertEqual(MetricsPlace.of(resource), MetricsPlace("127.0.0.1", 9464, None))
        resource = configure(metrics_endpoint="unix:/run/le-metrics.sock").resource
        self.assertEqual(
            MetricsPlace.of(resource), MetricsPlace("", 0, "unix:/run/le-metrics.sock")
        )
        self.assertIsNone(MetricsPlace.of(configure().resource))

    def test_notForCommandLineRuns(self) -> None:
        """
        An operation the command line runs without a server (C{renew})
        opens no metrics listener: it builds its resource without one.
        """
        built: list[Any] = []

        def makeResource(options: Any, *args: Any, **kwargs: Any) -> Any:
            built.append(options)
            raise RuntimeError("built")

        self.patch(host, "makeResource", makeResource)
        configuration = configure(metrics_address="127.0.0.1", metrics_port="9464")
        running = ensureDeferred(cli._runAlone(MemoryReactorClock(), configuration, "renew", {}))
        self.failureResultOf(running, RuntimeError)
        [options] = built
        self.assertIsNone(MetricsPlace.of(options))

    def test_refused(self) -> None:
        """
        An address without a port, a port without an address, and either
        beside an endpoint are refused, naming the option.
        """
        for options, option in [
            ({"metrics_address": "127.0.0.1"}, "metrics_port"),
            ({"metrics_port": "9464"}, "metrics_address"),
            ({"metrics_endpoint": "tcp:9464", "metrics_port": "9464"}, "metrics_port"),
            ({"metrics_endpoint": "ssl:9464"}, "metrics_endpoint"),
        ]:
            with self.assertRaises(ConfigurationError) as raised:
                configure(**options)
            self.assertEqual(raised.exception.option, option, options)

    def test_portClash(self) -> None:
        """
        A metrics listener on the address and port of the challenge site,
        or of a service, is refused, naming the metrics option.
        """
        for options, option in [
            (
                {"address": "127.0.0.1", "port": "80", "metrics_address": "127.0.0.1"},
                "metrics_port",
            ),
            ({"metrics_endpoint": "tcp:80:interface=0.0.0.0"}, "metrics_endpoint"),
        ]:
            if "metrics_endpoint" not in options:
                options["metrics_port"] = "80"
            with self.assertRaises(ConfigurationError) as raised:
                configure(**options)
            self.assertEqual(raised.exception.option, option, options)
        text = resource(metrics_address="127.0.0.1", metrics_port="8443") + service(port="8443")
        with self.assertRaises(ConfigurationError) as raised:
            parseConfiguration(text, "/etc/le")
        self.assertEqual(raised.exception.option, "metrics_port")


class ResourceMetricsTests(ResourceTestCase):
    """
    What a running resource's metrics report.
    """

    def test_afterIssuance(self) -> None:
        """
        Once its certificates are issued, each set's expiry is that of the
        certificate its consumers have, in the issued state; the attempts
        are counted, the ACME requests timed, and the check recorded.
        """
        resource = self.start()
        text = exposed(resource.metrics)
        served = self.consumers["reports"].received[-1]
        self.assertEqual(
            resource.metrics.registry.get_sample_value(EXPIRY, {"domains": "reports.example.test"}),
            served.notAfter.timestamp(),
        )
        self.assertEqual(state(resource.metrics, "reports.example.test")["issued"], 1.0)
        self.assertIn(
            f'letsencrypt_renewal_attempts_total{{ca="{ACME_URL}",result="issued"}} 2.0', text
        )
        self.assertIn(
            f'letsencrypt_acme_request_duration_seconds_count{{ca="{ACME_URL}",method="POST"}}',
            text,
        )
        self.assertEqual(
            resource.metrics.registry.get_sample_value(
                "letsencrypt_last_successful_check_timestamp_seconds"
            ),
            self.reactor.seconds(),
        )

    def test_failedAttempt(self) -> None:
        """
        A failed attempt is counted, the set stays provisional, and the
        check is not recorded as successful.
        """
        self.server.refuse.add("reports.example.test")
        resource = self.start()
        text = exposed(resource.metrics)
        self.assertIn(
            f'letsencrypt_renewal_attempts_total{{ca="{ACME_URL}",result="failed"}} 1.0', text
        )
        self.assertEqual(state(resource.metrics, "reports.example.test")["provisional"], 1.0)
        self.assertIn("letsencrypt_last_successful_check_timestamp_seconds 0.0", text)

    def test_failingSetKeepsCheckStale(self) -> None:
        """
        While a set keeps failing, the last successful check stays where it
        was, even through the checks in which it only waits out its retry
        delay; its failures in a row are a gauge of its own.
        """
        self.server.refuse.add("reports.example.test")
        resource = self.start()
        for _ in range(4):
            self.reactor.advance(DAY)
        last = "letsencrypt_last_successful_check_timestamp_seconds"
        self.assertEqual(resource.metrics.registry.get_sample_value(last), 0.0)
        self.assertGreaterEqual(failures(resource.metrics, "reports.example.test") or 0, 2)
        self.assertEqual(failures(resource.metrics, "files.example.test, www.example.test"), 0.0)

    def test_droppedSet(self) -> None:
        """
        A set no longer used after a reload of the consumers loses its
        series.
        """
        resource = self.start()
        self.registry.unregisterUtility(self.consumers["reports"], ICertificateConsumer, "reports")
        self.successResultOf(resource.reloadConsumers())
        text = exposed(resource.metrics)
        self.assertNotIn("reports.example.test", text)
        self.assertIn("files.example.test", text)
