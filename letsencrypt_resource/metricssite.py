"""
The Prometheus metrics endpoint, as a service: when C{metrics_address} and
C{metrics_port} (or C{metrics_endpoint}) are set, it serves
C{GET /metrics} from the resource's own registry with
C{prometheus_client}'s exposition, through a C{twisted.web} site with the
limits of L{letsencrypt_resource.httplimits}; any other path is 404 and
any other method 405.  The exposition is rendered in a thread of the
service's own (see L{letsencrypt_resource.metricsexposition}), started and
stopped with it.

The metrics name every domain set: listen on loopback or a private
interface.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web import http
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from . import events
from .config import ResourceOptions
from .httplimits import ALLOWED_METHODS, LimitedSite, notFound, refuseMethod
from .listenerservice import ListenerService
from .metrics import Metrics
from .metricsexposition import Exposition, SharedRender

#: The path the metrics are served at.
METRICS_PATH = b"metrics"


@attrs.frozen
class MetricsPlace:
    """
    Where the metrics listener listens, as L{listening} takes it.
    """

    address: str
    port: int
    endpoint: str | None

    @classmethod
    def of(cls, options: ResourceOptions) -> MetricsPlace | None:
        """
        The metrics listener of C{options}, or C{None} when it is off.
        """
        if options.metricsEndpoint is None and options.metricsPort is None:
            return None
        return cls(options.metricsAddress, options.metricsPort or 0, options.metricsEndpoint)


class _Refused(Resource):
    """
    Answers every request with 405 (a method other than GET and HEAD) or
    404 (a path other than C{/metrics}).
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        if request.method not in ALLOWED_METHODS:
            return refuseMethod(request)
        return notFound(request)


class MetricsRoot(Resource):
    """
    The root of the metrics site: C{/metrics} is C{exposition}, for GET
    and HEAD only; everything else is refused.
    """

    def __init__(self, exposition: IResource):
        super().__init__()
        self._exposition = exposition
        self._refused = _Refused()

    def getChildWithDefault(self, path: bytes, request: Request) -> Any:
        if request.method in ALLOWED_METHODS and path == METRICS_PATH and not request.postpath:
            return self._exposition
        return self._refused

    def render(self, request: Request) -> bytes:
        return self._refused.render(request)


class MetricsSite(LimitedSite):
    """
    The metrics site, with its access log off: scrapes come every few
    seconds.
    """

    def log(self, request: http.Request) -> None:
        """
        Write no access log.
        """


class MetricsSiteService(ListenerService):
    """
    Serves the metrics while the resource runs, when the options say where.
    """

    def __init__(self, options: ResourceOptions, metrics: Metrics, reactor: Any, log: Logger):
        """
        @param log: Where events go.
        """
        place = MetricsPlace.of(options)
        super().__init__(place, reactor, log, events.METRICS_LISTENING, events.METRICS_FAILED)
        self._pool = ThreadPool(1, 1, "letsencrypt-metrics")
        render = SharedRender(metrics.registry, reactor, self._pool)
        self._exposition = Exposition(render, log)

    def factory(self) -> MetricsSite:
        return MetricsSite(MetricsRoot(self._exposition))

    def startService(self) -> None:
        if self._place is not None:
            self._pool.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, then, once the connections open have ended (a
        scrape under way is answered), end the rendering thread (it is
        joined: a render under way, a second or two at 10,000 sets, is
        waited for).
        """
        stopped = super().stopService()
        if self._pool.started:
            stopped.addCallback(lambda _: self._pool.stop())
        return stopped
