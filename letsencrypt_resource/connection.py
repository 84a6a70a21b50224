"""
The connection to the CA that every order shares: the account connected
and registered once, and connected again when the CA no longer knows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredLock

from .acmeerrors import ACMEProblem
from .acmeloading import loadACME
from .config import ResourceOptions
from .coroutines import deferred
from .storage.interface import StorageError
from .storage.records import Records
from .writequeue import Runner, WriteQueue

if TYPE_CHECKING:
    from .acmeclient import ACMEClient


def accountForgotten(error: Exception) -> bool:
    """
    Whether C{error} says the CA does not know the account.
    """
    return isinstance(error, ACMEProblem) and error.code == "accountDoesNotExist"


class AccountConnection:
    """
    The connected ACME client, if any.
    """

    def __init__(
        self,
        options: ResourceOptions,
        records: Records,
        writes: WriteQueue,
        http: Any,
        reactor: Any,
        runInThread: Runner,
    ):
        """
        @param http: The C{twisted.web.iweb.IAgent} for the ACME server.
        """
        self._options = options
        self._records = records
        self._writes = writes
        self._http = http
        self._reactor = reactor
        self._runInThread = runInThread
        self._client: ACMEClient | None = None
        self._lock = DeferredLock()

    def forCA(self, options: ResourceOptions, http: Any) -> AccountConnection:
        """
        A connection to the CA of C{options}, with the account stored for
        it, through the same storage, and the HTTP client C{http}.
        """
        return AccountConnection(
            options, self._records, self._writes, http, self._reactor, self._runInThread
        )

    @property
    def connected(self) -> bool:
        """
        Whether a client is connected.
        """
        return self._client is not None

    @property
    def checksARI(self) -> bool:
        """
        Whether the CA is known to offer renewal information.
        """
        return self._client is not None and self._client.offersRenewalInfo

    def acmeClient(self) -> Deferred[ACMEClient]:
        """
        The ACME client, connected and registered once and shared by every
        order; after a failure the next caller tries again.
        """
        return self._lock.run(self._connect)

    def forget(self) -> None:
        """
        Drop the connected account: the next request connects again, with
        the account the storage then holds.
        """
        self._client = None

    def loadModules(self) -> Deferred[None]:
        """
        Load the modules that speak ACME off the reactor thread, if not yet
        (see L{loadACME}).
        """
        return loadACME(self._runInThread, self._reactor)

    @deferred
    async def _connect(self) -> ACMEClient:
        if self._client is None:
            # The account an earlier attempt rewrote must be stored.
            await self._writes.whenWritten()
            await self.loadModules()
            from .account import connectAccount

            self._client = await connectAccount(
                self._http, self._reactor, self._options, self._records, self._runInThread
            )
        return self._client

    @deferred
    async def lost(self) -> None:
        """
        The CA no longer knows our account (a test CA restarted, a staging
        reset): register the same key again at the next connection.
        """
        try:
            record = await self._records.loadAccount(self._options.acmeURL)
        except StorageError:
            # The next connection reports it, as a failed attempt.
            record = None
        if record is not None and record.url is not None:
            self._writes.forgetAccount(self._options.acmeURL, record.key)
        self.forget()
