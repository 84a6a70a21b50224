"""
The resource's Prometheus metrics, in a C{CollectorRegistry} of its own
(never the process-wide one, so that two resources in one process, or a
host's own metrics, do not clash).

The names follow Prometheus conventions, with the prefix C{letsencrypt_}:
times are Unix timestamps in seconds, counters end in C{_total}, and
cert-manager's C{certmanager_certificate_expiration_timestamp_seconds} is
the model of the expiry gauge.  The only per-certificate label is
C{domains}, the set's names as events show them, so the number of series
is bounded by the domain sets configured.  The certificates' gauges are
read from the sets in service at each scrape (L{CertificatesCollector}):
nothing is recorded as they change, and a set no longer used is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IAgent
from zope.interface import implementer

from .certificates import CertifiedKey

#: The names of the certificates' gauges.
EXPIRY = "letsencrypt_certificate_expiration_timestamp_seconds"
STATE = "letsencrypt_certificate_state"
FAILURES = "letsencrypt_certificate_renewal_failures"
#: The serving states of a certificate.
STATES = ("provisional", "issued")
#: How renewal attempts end.
RENEWAL_RESULTS = ("issued", "failed")
#: How challenge requests are answered.
CHALLENGE_RESULTS = ("answered", "not_found")
#: The ACME request methods.
ACME_METHODS = ("GET", "HEAD", "POST")
#: The buckets of the ACME request latency, in seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


#: Sets' labels, the certificate each has in service, if any, and its
#: renewal attempts failed in a row.
InService = Callable[[], Iterable[tuple[str, CertifiedKey | None, int]]]


class CertificatesCollector(Collector):
    """
    The expiry time and serving state of each set's certificate in
    service, and the set's renewal attempts failed in a row, read at each
    scrape.
    """

    def __init__(self, inService: InService):
        self._inService = inService

    def collect(self) -> Iterator[Metric]:
        expiry = GaugeMetricFamily(
            EXPIRY,
            "The time the certificate in service for a domain set expires.",
            labels=["domains"],
        )
        state = GaugeMetricFamily(
            STATE,
            "1 for the serving state of a domain set: provisional or issued (CA-issued).",
            labels=["domains", "state"],
        )
        failures = GaugeMetricFamily(
            FAILURES,
            "Renewal attempts failed in a row for a domain set; 0 since its last success.",
            labels=["domains"],
        )
        for domains, current, failed in self._inService():
            failures.add_metric([domains], float(failed))
            if current is None:
                continue
            expiry.add_metric([domains], current.notAfter.timestamp())
            serving = STATES[0] if current.provisional else STATES[1]
            for each in STATES:
                state.add_metric([domains, each], 1.0 if each == serving else 0.0)
        yield expiry
        yield state
        yield failures


class Metrics:
    """
    The metrics of one resource.

    @ivar registry: Where they are collected.
    """

    def __init__(self, inService: InService = lambda: ()):
        """
        @param inService: The sets and their certificates in service; it is
            called at each scrape, in the thread that serves it.
        """
        registry = self.registry = CollectorRegistry()
        registry.register(CertificatesCollector(inService))
        self._renewals = Counter(
            "letsencrypt_renewal_attempts",
            "Renewal attempts that ended, by result.",
            ["result"],
            registry=registry,
        )
        self._latency = Histogram(
            "letsencrypt_acme_request_duration_seconds",
            "Time from sending an ACME request to its response's headers, or its failure.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._challenges = Counter(
            "letsencrypt_challenge_requests",
            "HTTP-01 challenge requests answered, by result.",
            ["result"],
            registry=registry,
        )
        self._lastCheck = Gauge(
            "letsencrypt_last_successful_check_timestamp_seconds",
            "The time the last check ended while no domain set's last renewal attempt had failed.",
            registry=registry,
        )
        for result in RENEWAL_RESULTS:
            self._renewals.labels(result)
        for result in CHALLENGE_RESULTS:
            self._challenges.labels(result)

    def renewalEnded(self, result: str) -> None:
        """
        A renewal attempt ended with C{result}, one of L{RENEWAL_RESULTS}.
        """
        self._renewals.labels(result).inc()

    def challengeRequest(self, result: str) -> None:
        """
        A challenge request was answered with C{result}, one of
        L{CHALLENGE_RESULTS}.
        """
        self._challenges.labels(result).inc()

    def acmeRequest(self, method: str, seconds: float) -> None:
        """
        An ACME request by C{method} took C{seconds}.
        """
        self._latency.labels(method if method in ACME_METHODS else "other").observe(seconds)

    def checkSucceeded(self, when: float) -> None:
        """
        A check ended at C{when} while no set's last renewal attempt had
        failed.
        """
        self._lastCheck.set(when)


@implementer(IAgent)
class TimedAgent:
    """
    An C{IAgent} that tells how long each request of the agent it wraps
    took, until its response's headers came or it failed.
    """

    def __init__(self, agent: Any, clock: IReactorTime, observe: Callable[[str, float], None]):
        """
        @param observe: Called with the method and the seconds taken.
        """
        self._agent = agent
        self._clock = clock
        self._observe = observe

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        started = self._clock.seconds()

        def ended(result: object) -> object:
            self._observe(method.decode("ascii", "replace"), self._clock.seconds() - started)
            return result

        return self._agent.request(method, uri, headers, bodyProducer).addBoth(ended)
