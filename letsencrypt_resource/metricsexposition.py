"""
The exposition of the metrics at C{/metrics}, built so that scrapes cannot
stall the reactor nor the ACME client: the text is rendered in a thread of
its own (never the reactor's pool, which resolves the ACME server's name),
one render at a time, shared by every scrape that arrives while it runs;
past L{MAX_SCRAPES} scrapes in flight (rendering, or their answer still
being sent), a scrape is answered 503 at once.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .reporting import unexpected

#: The most scrapes in flight; one more is answered 503.
MAX_SCRAPES = 4
#: The text format C{generate_latest} writes: every name here is a
#: classic Prometheus name, so the 0.0.4 format every Prometheus reads.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
#: Seconds a scrape answered 503 is asked to wait.
RETRY_AFTER = b"5"


class SharedRender:
    """
    Renders a registry in a thread pool of one thread, one render at a
    time: the callers that ask while one runs get its result.
    """

    def __init__(self, registry: CollectorRegistry, reactor: Any, pool: ThreadPool):
        self._registry = registry
        self._reactor = reactor
        self._pool = pool
        self._waiting: list[Deferred[bytes]] = []

    def render(self) -> Deferred[bytes]:
        """
        The exposition text of the registry, from the render under way or
        a new one.
        """
        waiter: Deferred[bytes] = Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            rendering = deferToThreadPool(
                self._reactor, self._pool, generate_latest, self._registry
            )
            rendering.addBoth(self._rendered)
        return waiter

    def _rendered(self, result: bytes | Failure) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


class Exposition(Resource):
    """
    C{/metrics}: the text of a L{SharedRender}, for GET and HEAD, within
    L{MAX_SCRAPES} scrapes in flight.
    """

    isLeaf = True

    def __init__(self, render: SharedRender, log: Logger):
        super().__init__()
        self._render = render
        self._log = log
        self._inFlight = 0

    def render_GET(self, request: Request) -> bytes | int:
        if self._inFlight >= MAX_SCRAPES:
            request.setResponseCode(503)
            request.setHeader(b"retry-after", RETRY_AFTER)
            return b"Too many scrapes at once.\n"
        self._inFlight += 1
        gone: list[object] = []

        def finished(result: object) -> None:
            self._inFlight -= 1
            gone.append(result)

        request.notifyFinish().addBoth(finished)

        def send(body: bytes) -> None:
            if gone:
                return
            request.setHeader(b"content-type", CONTENT_TYPE)
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            unexpected(self._log, failure)
            if not gone:
                request.setResponseCode(500)
                request.finish()

        self._render.render().addCallbacks(send, failed)
        return NOT_DONE_YET
