"""
What a resource owns, to close at its stop: the HTTP client and the worker
threads it made for itself when it was given none, and its storage when it
was told to close it.
"""

from __future__ import annotations

from typing import Any

from twisted.web.client import HTTPConnectionPool

from .config import ResourceOptions
from .coroutines import deferred
from .httpclient import loadCABundle, makeHTTPClient
from .storage.interface import IStorage
from .workers import BackgroundWorkers
from .writequeue import Runner


class Owned:
    """
    The HTTP client and thread runner a resource uses, and what of them,
    and of its storage, it closes.

    @ivar httpClient: The C{twisted.web.iweb.IAgent} for the ACME server.
    @ivar runInThread: Runs functions off the reactor thread.
    """

    def __init__(
        self,
        options: ResourceOptions,
        reactor: Any,
        storage: IStorage,
        httpClient: Any,
        runInThread: Runner | None,
        closeStorage: bool,
    ):
        """
        @param httpClient: The HTTP client given for the resource's own CA
            (not its fallback CAs), left to its caller to close; when
            C{None}, one is made for C{options.acmeCAFile}, its connections
            closed by L{close}.
        @param runInThread: The runner given; when C{None},
            L{BackgroundWorkers} of a lower CPU priority, stopped by
            L{close}.
        @param closeStorage: Whether L{close} closes C{storage}.

        @raise ValueError: when an HTTP client is made and
            C{options.acmeCAFile} holds no certificate.
        """
        self._storage = storage if closeStorage else None
        self._reactor = reactor
        self._pools: list[HTTPConnectionPool] = []
        self._clients: dict[str | None, Any] = {}
        self.httpClient = (
            httpClient if httpClient is not None else self.clientFor(options.acmeCAFile)
        )
        self._workers: BackgroundWorkers | None = None
        if runInThread is None:
            self._workers = BackgroundWorkers(reactor, f"letsencrypt-resource-{options.name}")
            runInThread = self._workers.run
        self.runInThread: Runner = runInThread

    def clientFor(self, caFile: str | None) -> Any:
        """
        The HTTP client trusting the PEM bundle C{caFile} (the system's
        trust store when C{None}), made at its first use, its connections
        closed by L{close}.  Never the one given to the constructor: that
        one is for the resource's own CA, and a fallback CA's server is
        trusted as its own C{acme_ca_file} says, not as the embedder chose
        for another CA.

        @raise ValueError: when C{caFile} holds no certificate.
        """
        client = self._clients.get(caFile)
        if client is None:
            trusted = loadCABundle(caFile) if caFile else None
            client, pool = makeHTTPClient(self._reactor, trusted)
            self._pools.append(pool)
            self._clients[caFile] = client
        return client

    @deferred
    async def close(self) -> None:
        """
        Close the storage (when owned), then end the worker threads and
        the HTTP connections made here.
        """
        if self._storage is not None:
            await self._storage.close()
        if self._workers is not None:
            await self._workers.stop()
        for pool in self._pools:
            await pool.closeCachedConnections()
