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
The C{ca} label, the directory URL of a CA (the resource's own or a
fallback CA), takes only the values configured, and C{other}: the
renewal attempts are counted by CA, so are the ACME request times, and
one gauge per set names the CA that issued its certificate.
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
from .config import canonicalURL

#: The names of the certificates' gauges.
EXPIRY = "letsencrypt_certificate_expiration_timestamp_seconds"
STATE = "letsencrypt_certificate_state"
FAILURES = "letsencrypt_certificate_renewal_failures"
ISSUER = "letsencrypt_certificate_ca_info"
#: The C{ca} label of a CA that is not configured.
OTHER_CA = "other"
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
#: Sets' labels, each with the CA that issued the CA-issued certificate it
#: has in service.
IssuedBy = Callable[[], Iterable[tuple[str, str]]]


class CertificatesCollector(Collector):
    """
    The expiry time and serving state of each set's certificate in
    service, and the set's renewal attempts failed in a row, read at each
    scrape.
    """

    def __init__(self, inService: InService, issuedBy: IssuedBy = lambda: ()):
        self._inService = inService
        self._issuedBy = issuedBy

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
        issuer = GaugeMetricFamily(
            ISSUER,
            "1 for the CA (its directory URL) that issued a domain set's certificate in service.",
            labels=["domains", "ca"],
        )
        for domains, ca in self._issuedBy():
            issuer.add_metric([domains, ca], 1.0)
        yield expiry
        yield state
        yield failures
        yield issuer


class Metrics:
    """
    The metrics of one resource.

    @ivar registry: Where they are collected.
    """

    def __init__(
        self,
        inService: InService = lambda: (),
        cas: tuple[str, ...] = (),
        issuedBy: IssuedBy = lambda: (),
    ):
        """
        @param inService: The sets and their certificates in service; it is
            called at each scrape, in the thread that serves it.
        @param cas: The directory URLs of the CAs, the resource's own first.
        @param issuedBy: The sets with a CA-issued certificate in service,
            each with the directory URL of the CA that issued it; called
            as C{inService} is.
        """
        self._cas = cas
        self._byKey = {canonicalURL(url): url for url in reversed(cas)}
        registry = self.registry = CollectorRegistry()
        registry.register(
            CertificatesCollector(
                inService, lambda: [(domains, self.caLabel(url)) for domains, url in issuedBy()]
            )
        )
        self._renewals = Counter(
            "letsencrypt_renewal_attempts",
            "Renewal attempts that ended, by result and CA.",
            ["result", "ca"],
            registry=registry,
        )
        self._latency = Histogram(
            "letsencrypt_acme_request_duration_seconds",
            "Time from sending an ACME request to its response's headers, or its failure.",
            ["method", "ca"],
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
            for ca in cas or (OTHER_CA,):
                self._renewals.labels(result, ca)
        for result in CHALLENGE_RESULTS:
            self._challenges.labels(result)

    def caLabel(self, url: str | None) -> str:
        """
        The C{ca} label of the CA at the directory URL C{url}: the URL as
        configured, in whichever equivalent form it is given (C{None}: the
        resource's own CA); L{OTHER_CA} for a CA not configured.
        """
        if url is None:
            return self._cas[0] if self._cas else OTHER_CA
        return self._byKey.get(canonicalURL(url), OTHER_CA)

    def renewalEnded(self, result: str, ca: str | None = None) -> None:
        """
        A renewal attempt with the CA at the directory URL C{ca} (C{None}:
        the resource's own) ended with C{result}, one of
        L{RENEWAL_RESULTS}.
        """
        self._renewals.labels(result, self.caLabel(ca)).inc()

    def challengeRequest(self, result: str) -> None:
        """
        A challenge request was answered with C{result}, one of
        L{CHALLENGE_RESULTS}.
        """
        self._challenges.labels(result).inc()

    def acmeRequest(self, method: str, seconds: float, ca: str | None = None) -> None:
        """
        An ACME request by C{method} to the CA at the directory URL C{ca}
        (C{None}: the resource's own) took C{seconds}.
        """
        method = method if method in ACME_METHODS else "other"
        self._latency.labels(method, self.caLabel(ca)).observe(seconds)

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
