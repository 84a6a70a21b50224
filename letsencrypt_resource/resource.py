"""
The C{lets-encrypt} resource: a Twisted service that keeps every
registered L{ICertificateConsumer} on a valid certificate.
"""

from __future__ import annotations

import datetime
import hashlib
import random
from functools import partial
from typing import Any, Callable, Collection, Hashable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredLock,
    gatherResults,
    inlineCallbacks,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import IResource
from zope.interface.registry import Components

from . import events, listening
from .account import connectAccount
from .acmeclient import ACMEClient, ACMEProblem, ACMEProtocolError, certificateID
from .certificates import CertifiedKey
from .challenge import ChallengeResponder, ChallengeSite, ChallengeTokens
from .config import ResourceOptions
from .httpclient import loadCABundle, makeHTTPClient
from .interfaces import ICertificateConsumer, ICertificateStore
from .issuer import PendingOrder, obtainCertificate, orderSurvives
from .keygen import generateKey
from .keys import keyType, publicKeyDigest
from .limiter import Limiter
from .listening import Listener
from .managed import NAMES_CHANGED, NO_CERTIFICATE, ManagedCertificate
from .policy import retryDelay
from .provisional import makeProvisional, makeSigner, signerProblem
from .store import AccountRecord, StoreError, exportCertificate
from .workers import BackgroundWorkers

#: Seconds between two regular checks of every certificate, by default.
CHECK_INTERVAL = 86400.0
#: When to ask for renewal information again without a Retry-After...
ARI_DEFAULT_RETRY = 6 * 3600.0
#: ...at the soonest after one...
ARI_MIN_RETRY = 60.0
#: ...and after a failed request.
ARI_ERROR_RETRY = 6 * 3600.0
DAY = 86400.0

#: What each renewal reason means, for events.
REASONS = {
    "lifetime": "most of its lifetime has passed",
    "ari": "inside the CA's suggested renewal window",
    "emergency": "close to expiry: less than 15 days, or a sixth of its lifetime, left",
    NO_CERTIFICATE: NO_CERTIFICATE,
    NAMES_CHANGED: NAMES_CHANGED,
    "forced": "renewal was asked for",
    "revoked": "its certificate was revoked",
}
#: How many orders run at once.
CONCURRENT_ORDERS = 2
#: How many provisional certificates are made at once at start.
PROVISIONAL_JOBS = 2

#: Runs a CPU-heavy function off the reactor thread.
Runner = Callable[..., Deferred]


def _accountForgotten(error: Exception) -> bool:
    """
    Whether C{error} says the CA does not know the account.
    """
    return isinstance(error, ACMEProblem) and error.code == "accountDoesNotExist"


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


class LetsEncryptResource(Service):
    """
    Obtains, renews and hands out certificates for the consumers found in
    a component registry.

    @ivar managed: The domain sets, by their set of names.
    """

    _log = Logger()

    def __init__(
        self,
        options: ResourceOptions,
        registry: Components,
        store: ICertificateStore,
        reactor: Any,
        httpClient: Any = None,
        *,
        runInThread: Runner | None = None,
        random: Callable[[], float] = random.random,
        automatic: bool = True,
    ):
        """
        @param httpClient: The C{twisted.web.iweb.IAgent} for the ACME server,
            left to its caller to close; by default, the resource's own, as
            L{letsencrypt_resource.httpclient.makeHTTPClient} makes it for
            C{options.acmeCAFile}, its connections closed with the service.

        @raise ValueError: when the resource makes its HTTP client and
            C{options.acmeCAFile} holds no certificate.
        @param runInThread: Runs key generation, signing and writes off the
            reactor thread; by default, in L{BackgroundWorkers} of a lower
            CPU priority, stopped with the service.
        @param random: Picks where in an ARI window to renew (0 to 1).
        @param automatic: Whether to provision, check and renew by itself;
            without, it only answers challenges for the orders asked of it,
            as the operations command needs.
        """
        self.options = options
        self.name = options.name
        self._registry = registry
        self.store = store
        self._reactor = reactor
        self._pool: HTTPConnectionPool | None = None
        if httpClient is None:
            trusted = loadCABundle(options.acmeCAFile) if options.acmeCAFile else None
            httpClient, self._pool = makeHTTPClient(reactor, trusted)
        self._http = httpClient
        self._workers: BackgroundWorkers | None = None
        if runInThread is None:
            self._workers = BackgroundWorkers(
                reactor, f"letsencrypt-resource-{options.name}"
            )
            runInThread = self._workers.run
        self.runInThread = runInThread
        self._checkInterval = options.checkInterval
        self._random = random
        self._automatic = automatic
        self.responder = ChallengeResponder()
        self.managed: dict[frozenset[str], ManagedCertificate] = {}
        # Sets a reload dropped while their attempt runs: taken back, with
        # that attempt, if a later reload adds them again before it ends.
        self._dropped: dict[frozenset[str], ManagedCertificate] = {}
        self._port: Listener | None = None
        self._client: ACMEClient | None = None
        self._accountLock = DeferredLock()
        self._checking: Deferred[None] | None = None
        self._learning: Deferred[ACMEClient] | None = None
        self._loop: LoopingCall | None = None
        self._wakeUp: IDelayedCall | None = None
        self._orders = Limiter(CONCURRENT_ORDERS)
        # Writes of renewal state and exports: in the background, one at a
        # time so that they land in the order they were made.
        self._writes = Limiter(1)
        self._writing: set[Deferred[bool]] = set()
        # Writes that failed, the latest per key, to be tried again at
        # _writeRetryAt; _writeRounds counts the rounds that failed.
        self._unwritten: dict[Hashable, _Write] = {}
        # The latest write of each key that has not ended (queued or running).
        self._inFlight: dict[Hashable, _Write] = {}
        self._writeRetryAt = 0.0
        self._writeRounds = 0
        self._signer: CertifiedKey | None = None
        self._signerLock = DeferredLock()
        self._started: Deferred[None] | None = None
        self._settled: list[Deferred[None]] | None = []

    # Life cycle

    def startService(self) -> None:
        super().startService()
        if self.options.upgradedFromURL:
            events.ACME_URL_UPGRADED.emit(
                self._log, old_url=self.options.upgradedFromURL, new_url=self.options.acmeURL
            )
        self._listen()
        self.load()
        if self._automatic:
            self._started = self._start()
            self._started.addErrback(self._unexpected)
        else:
            self._settle()

    def load(self) -> None:
        """
        Find the consumers in the registry and give each its stored
        certificate, if there is one; no network is used.
        """
        self.managed = self._collectConsumers()
        for certificate in self.managed.values():
            self._loadStored(certificate)

    def reloadConsumers(self) -> Deferred[None]:
        """
        Collect the consumers from the registry again, after a host added,
        removed or replaced some: sets still in use keep their certificate
        and renewal state, and new consumers of theirs get the certificate
        in service; sets no longer used are dropped (an order under way for
        one ends without delivering); new sets are loaded from the store,
        put on a provisional certificate when they have none, and checked.
        A set dropped while its attempt runs and added back before it ends
        is taken back as it was, so that its order is not placed twice.

        @return: A Deferred that fires once every new set has a
            certificate; the checks go on after it.
        """
        collected = self._collectConsumers()
        for key in set(self.managed) - set(collected):
            self._drop(key)
        added = []
        for key, fresh in collected.items():
            certificate = self.managed.get(key)
            if certificate is None and key in self._dropped:
                certificate = self.managed[key] = self._dropped.pop(key)
                added.append(certificate)
            if certificate is None:
                self.managed[key] = fresh
                self._loadStored(fresh)
                added.append(fresh)
                continue
            newcomers = [c for c in fresh.consumers if c not in certificate.consumers]
            certificate.consumers = fresh.consumers
            if certificate.current is not None and newcomers:
                self._deliver(certificate, certificate.current, newcomers)
        needProvisional = [c for c in added if c.current is None]
        provisioned = self._provision(needProvisional) if needProvisional else succeed(None)

        def checkAdded(_: object) -> None:
            if added:
                self.check(only=added)

        return provisioned.addCallback(checkAdded).addErrback(self._unexpected)

    def _drop(self, key: frozenset[str]) -> None:
        """
        Stop managing the set C{key}; keep it aside while its attempt runs.
        """
        certificate = self.managed.pop(key)
        certificate.consumers = []
        attempt = certificate.attempt
        if attempt is None:
            return
        self._dropped[key] = certificate

        def ended(result: object) -> object:
            if self._dropped.get(key) is certificate:
                del self._dropped[key]
            return result

        attempt.addBoth(ended)

    @inlineCallbacks
    def stopService(self) -> Deferred[None]:
        super().stopService()
        for pending in (self._started, self._checking, self._learning):
            if pending is not None:
                pending.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._cancelWakeUp()
        port, self._port = self._port, None
        if port is not None:
            yield port.stopListening()
        yield self.whenWritten()
        if self._workers is not None:
            yield self._workers.stop()
        if self._pool is not None:
            yield self._pool.closeCachedConnections()

    def _unexpected(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self._log.failure("Unexpected error in the lets-encrypt resource", failure)

    def challengeResource(self) -> IResource:
        """
        The resource that answers this resource's HTTP-01 challenges, for a
        host that serves port 80 itself to mount at
        C{/.well-known/acme-challenge/} in its own site; with
        C{challenge_site = no}, the resource opens no site of its own.
        """
        return ChallengeTokens(self.responder)

    def _listen(self) -> None:
        if not self.options.challengeSite:
            return
        site = ChallengeSite(self.responder, self.options.redirectURL)
        self._port = Listener(self._reactor, listening.description(self.options), site)

        def listened(port: IListeningPort) -> None:
            address, number = listening.listeningPlace(self.options, port)
            events.CHALLENGE_SITE_LISTENING.emit(self._log, address=address, port=number)

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError):
                return
            address, number = listening.place(self.options)
            events.CHALLENGE_SITE_FAILED.emit(
                self._log,
                address=address,
                port=number,
                details=listening.failureDetails(failure),
            )

        self._port.start().addCallbacks(listened, failed)

    def _collectConsumers(self) -> dict[frozenset[str], ManagedCertificate]:
        managed: dict[frozenset[str], ManagedCertificate] = {}
        settings = _settingsFingerprint(self.options)
        consumers = sorted(
            self._registry.getUtilitiesFor(ICertificateConsumer), key=lambda p: p[0]
        )
        for _, consumer in consumers:
            key = frozenset(consumer.domains)
            if key not in managed:
                managed[key] = ManagedCertificate(tuple(consumer.domains), settings)
            managed[key].consumers.append(consumer)
        return managed

    @inlineCallbacks
    def _start(self) -> Deferred[None]:
        """
        Put every consumer without a stored certificate on a provisional one,
        then start the regular checks, the first one at once.
        """
        needProvisional = [c for c in self.managed.values() if c.current is None]
        if needProvisional:
            try:
                yield self._provision(needProvisional)
            except CancelledError:
                raise
            except Exception:
                # Renewals go on: each set gets its certificate from the CA.
                self._log.failure("Cannot make provisional certificates")
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._reactor
        self._loop.start(self._checkInterval, now=True).addErrback(self._unexpected)
        yield self._checking
        self._settle()

    def whenWritten(self) -> Deferred[None]:
        """
        A Deferred that fires once the store writes started so far (renewal
        state, exports) have ended.
        """
        return gatherResults(list(self._writing)).addCallback(lambda _: None)

    def _write(self, key: Hashable, write: _Write) -> Deferred[bool]:
        """
        Run C{write} in a worker thread, after the writes before it.

        A L{StoreError} is event 20009, and the write is kept to be tried
        again at the retry pace (the latest one per C{key}: a newer write
        of the same thing replaces it, and while one is under way the
        failed one waits); a write that works after a failure of its
        C{key} is event 20185.

        @return: A Deferred that fires with whether it was written; it
            never fails, and cancelling it leaves the write to end (stopping
            waits for it).
        """

        def written(result: object) -> bool:
            # Writes run in order: one that worked makes any earlier failed
            # write of the same thing moot.
            earlier = self._unwritten.pop(key, None)
            if not self._unwritten:
                self._writeRounds = 0
            failed = write.failed or (earlier.failed if earlier is not None else None)
            if failed:
                events.STORE_RECOVERED.emit(self._log, domains=write.label, path=failed)
            write.done(result)
            return True

        def storeFailed(failure: Failure) -> bool:
            failure.trap(StoreError)
            error = failure.value
            events.STORE_FAILED.emit(
                self._log, domains=write.label, path=error.path, details=error.message
            )
            self._unwritten[key] = attrs.evolve(write, failed=error.path)
            self._writeRetryAt = self._reactor.seconds() + retryDelay(
                self._writeRounds + 1, self._checkInterval
            )
            self._scheduleWakeUp()
            return False

        def ended(result: bool) -> bool:
            self._writing.discard(writing)
            if self._inFlight.get(key) is write:
                del self._inFlight[key]
            return result

        self._inFlight[key] = write
        writing = self._writes.run(self.runInThread, write.function, *write.args)
        writing.addCallbacks(written, storeFailed)
        writing.addErrback(lambda failure: self._unexpected(failure) or False)
        self._writing.add(writing)
        writing.addBoth(ended)
        shielded: Deferred[bool] = Deferred()
        writing.chainDeferred(shielded)
        return shielded

    def _retryWrites(self, now: float) -> None:
        """
        Try the failed writes again, when it is time; one whose key has a
        newer write under way waits for it instead (run after it, it
        would put older data back): that write's end replaces it or makes
        it moot.
        """
        if now < self._writeRetryAt:
            return
        retrying = self._retryable()
        if retrying:
            self._writeRounds += 1
        for key, write in retrying.items():
            del self._unwritten[key]
            self._write(key, write)

    def _retryable(self) -> dict[Hashable, _Write]:
        """
        The failed writes with no newer write of their key under way.
        """
        return {k: w for k, w in self._unwritten.items() if k not in self._inFlight}

    def _settle(self) -> None:
        settled, self._settled = self._settled, None
        for waiting in settled or ():
            waiting.callback(None)

    def whenSettled(self) -> Deferred[None]:
        """
        A Deferred that fires once every consumer has a certificate and the
        first attempt to get a CA-issued one for each domain set has ended,
        in success or failure.
        """
        if self._settled is None:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._settled.append(waiting)
        return waiting

    def _loadStored(self, certificate: ManagedCertificate) -> None:
        """
        Take back the saved renewal state and the stored certificate of
        C{certificate}; a damaged file is reported and ignored, so the set
        is renewed.
        """
        try:
            state = self.store.loadRenewalState(certificate.domains)
        except StoreError as error:
            events.STORED_STATE_IGNORED.emit(
                self._log, domains=certificate.label, details=str(error)
            )
            state = None
        if state is not None:
            certificate.restore(state)
        self._loadStoredCertificate(certificate)
        now = self._reactor.seconds()
        saved = certificate.retryAt()
        if certificate.capWaits(now, self._checkInterval):
            events.STORED_WAIT_CAPPED.emit(
                self._log,
                domains=certificate.label,
                saved=_when(saved),
                when=_when(certificate.retryAt()),
            )

    def _loadStoredCertificate(self, certificate: ManagedCertificate) -> None:
        """
        Put C{certificate}'s stored certificate in service, when it is valid
        and for its names.
        """
        try:
            stored = self.store.loadCertificate(certificate.domains)
        except StoreError as error:
            events.STORED_STATE_IGNORED.emit(
                self._log, domains=certificate.label, details=str(error)
            )
            return
        if stored is None or stored.notAfter.timestamp() <= self._reactor.seconds():
            return
        if certificate.isCompromised(stored.key):
            events.COMPROMISED_CERTIFICATE_IGNORED.emit(self._log, domains=certificate.label)
            return
        if set(stored.domains) != set(certificate.domains):
            events.STORED_STATE_IGNORED.emit(
                self._log,
                domains=certificate.label,
                details=f"the stored certificate is for {', '.join(stored.domains)}",
            )
            return
        events.STORED_CERTIFICATE_LOADED.emit(
            self._log, domains=certificate.label, not_after=stored.notAfter.isoformat()
        )
        self._deliver(certificate, stored)
        self._export(certificate)

    @inlineCallbacks
    def _provision(self, certificates: list[ManagedCertificate]) -> Deferred[None]:
        now = _utc(self._reactor.seconds())
        signer = yield self._signerLock.run(self._currentSigner, now)
        # A few at a time, each delivered as it comes, so that the reactor
        # never builds hundreds of TLS contexts in one turn.
        making = Limiter(PROVISIONAL_JOBS)

        def provision(certificate: ManagedCertificate) -> Deferred[None]:
            made = self.runInThread(makeProvisional, signer, certificate.domains, now)
            return made.addCallback(
                lambda provisional: certificate.current is None
                and self._deliver(certificate, provisional)
            )

        yield gatherResults(
            [making.run(provision, c) for c in certificates], consumeErrors=True
        )

    @inlineCallbacks
    def _currentSigner(self, now: datetime.datetime) -> Deferred[CertifiedKey]:
        """
        The signer for provisional certificates of every set managed, made
        or loaded when the one in use may not sign for them; run under
        C{_signerLock}, so that overlapping provisions make one signer.
        """
        names = sorted({name for c in self.managed.values() for name in c.domains})
        if self._signer is None or signerProblem(self._signer, names, now):
            self._signer = yield self._loadOrMakeSigner(now, names)
        return self._signer

    @inlineCallbacks
    def _loadOrMakeSigner(
        self, now: datetime.datetime, names: list[str]
    ) -> Deferred[CertifiedKey]:
        """
        The stored signer when it may sign for C{names}, else a new one that
        may, stored in its place.
        """
        problem: str | None = "none was stored"
        try:
            pem = self.store.loadProvisionalSigner()
            if pem is not None:
                stored = CertifiedKey.fromPEM(pem)
                problem = signerProblem(stored, names, now)
                if problem is None:
                    return stored
        except (StoreError, ValueError) as error:
            events.STORED_STATE_IGNORED.emit(
                self._log, domains="the provisional signer", details=str(error)
            )
            problem = "the stored one is damaged"
        signer = yield self.runInThread(makeSigner, self.options.name, names, now)
        # Services start on it whether or not it can be saved now.
        self._write(
            "signer",
            _Write(
                "the provisional signer",
                self.store.saveProvisionalSigner,
                (signer.toPEM(),),
            ),
        )
        events.PROVISIONAL_SIGNER_MADE.emit(
            self._log,
            count=len(names),
            not_after=signer.notAfter.isoformat(),
            reason=problem,
        )
        return signer

    def _deliver(
        self,
        certificate: ManagedCertificate,
        certifiedKey: CertifiedKey,
        consumers: list[ICertificateConsumer] | None = None,
    ) -> None:
        certificate.current = certifiedKey
        for consumer in certificate.consumers if consumers is None else consumers:
            try:
                consumer.useCertificate(certifiedKey)
            except Exception:
                self._log.failure(
                    "Service {service} refused the certificate for {domains}",
                    service=consumer.name,
                    domains=certificate.label,
                )
                continue
            event = (
                events.PROVISIONAL_IN_USE
                if certifiedKey.provisional
                else events.CERTIFICATE_IN_USE
            )
            event.emit(self._log, service=consumer.name, domains=certificate.label)

    def _export(self, certificate: ManagedCertificate) -> None:
        """
        Write the certificate in service to the store directory, if one is
        configured; a failure is tried again at the write retry pace (see
        L{_write}).
        """
        directory = self.options.storeDirectory
        issued = certificate.issued
        if directory is None or issued is None:
            return
        self._write(
            ("export", certificate.domains),
            _Write(
                certificate.label,
                exportCertificate,
                (directory, certificate.domains, issued),
            ),
        )

    # Checks and orders

    def check(
        self,
        force: bool = False,
        only: Collection[ManagedCertificate] | None = None,
        reason: str = "forced",
    ) -> Deferred[None]:
        """
        Warn about certificates close to expiry, then ask for renewal
        information and renew what is due, now.

        @param force: Renew every certificate, due or not.
        @param only: Look at these domain sets only.
        @param reason: Why C{force} renews, a key of L{REASONS}.
        @return: A Deferred that fires when every attempt started has ended
            and what it wrote is on disk; it never fails.
        """
        self._cancelWakeUp()
        now = self._reactor.seconds()
        starting = [
            certificate
            for certificate in self.managed.values()
            if certificate.attempt is None
            and (only is None or certificate in only)
            and (force or certificate.nextEvent(self._checksARI) <= now)
        ]
        self._warnOfExpiry(now, starting)
        self._retryWrites(now)
        for certificate in starting:
            self._startAttempt(certificate, reason if force else None)
        attempts = [c.attempt for c in self.managed.values() if c.attempt is not None]
        self._checking = gatherResults(attempts, consumeErrors=True).addCallbacks(
            lambda _: self._scheduleWakeUp(), lambda failure: None
        )
        self._checking.addCallback(lambda _: self.whenWritten())
        self._checking.addCallback(lambda _: self._learnRenewalInfo())
        return self._checking

    def _learnRenewalInfo(self) -> None:
        """
        Connect to the CA, when CA-issued certificates are in service and no
        order did, to learn whether it offers renewal information; if it
        does, the next wake-up asks it about each certificate.
        """
        if self._client is not None or self._learning is not None:
            return
        if not any(c.issued is not None for c in self.managed.values()):
            return
        self._learning = self.acmeClient()

        def learnt(result: object) -> None:
            self._learning = None
            self._scheduleWakeUp()

        self._learning.addBoth(learnt)

    def _warnOfExpiry(self, now: float, starting: list[ManagedCertificate]) -> None:
        """
        Warn about each certificate in service close to expiry, unless its
        first renewal attempt is starting now (a failure is warned about at
        the next check); at a bounded rate (see L{ManagedCertificate.warnNow}).
        """
        for certificate in self.managed.values():
            current = certificate.current
            if current is None or current.provisional:
                continue
            if certificate in starting and certificate.failures == 0:
                continue
            if not certificate.warnNow(now):
                continue
            notAfter = current.notAfter.timestamp()
            details = (
                f"renewal failed {certificate.failures} times, last: "
                f"{certificate.lastError}"
                if certificate.lastError
                else f"renewal is due {_when(certificate.plan().at)}"
            )
            events.EXPIRY_WARNING.emit(
                self._log,
                component=", ".join(c.name for c in certificate.consumers),
                domains=certificate.label,
                days=f"{max(notAfter - now, 0) / DAY:.1f}",
                details=details,
            )

    def _startAttempt(self, certificate: ManagedCertificate, forced: str | None) -> None:
        def ended(result: object) -> object:
            certificate.attempt = None
            return result

        certificate.attempt = self._orders.run(self._attempt, certificate, forced)
        certificate.attempt.addBoth(ended)

    def _cancelWakeUp(self) -> None:
        if self._wakeUp is not None and self._wakeUp.active():
            self._wakeUp.cancel()
        self._wakeUp = None

    def _scheduleWakeUp(self) -> None:
        """
        Schedule an early check when a renewal, a retry or an ARI check
        falls before the next regular one.
        """
        if self._loop is None or not self._loop.running:
            return
        # Sets whose attempt is under way are looked at when it ends.
        times = [
            c.nextEvent(self._checksARI) for c in self.managed.values() if c.attempt is None
        ]
        if self._retryable():
            times.append(self._writeRetryAt)
        if not times:
            return
        delay = min(times) - self._reactor.seconds()
        if delay < self._checkInterval:
            self._cancelWakeUp()
            self._wakeUp = self._reactor.callLater(max(delay, 0), self.check)

    @property
    def _checksARI(self) -> bool:
        """
        Whether the CA is known to offer renewal information.
        """
        return self._client is not None and self._client.offersRenewalInfo

    def acmeClient(self) -> Deferred[ACMEClient]:
        """
        The ACME client, connected and registered once and shared by every
        order; after a failure the next caller tries again.
        """
        return self._accountLock.run(self._connect)

    def forgetAccount(self) -> None:
        """
        Drop the connected account: the next request connects again, with
        the account the store then holds.
        """
        self._client = None

    @inlineCallbacks
    def _connect(self) -> Deferred[ACMEClient]:
        if self._client is None:
            # The account file an earlier attempt rewrote must be on disk.
            yield self.whenWritten()
            self._client = yield connectAccount(
                self._http, self._reactor, self.options, self.store, self.runInThread
            )
        return self._client

    @inlineCallbacks
    def _attempt(self, certificate: ManagedCertificate, forced: str | None) -> Deferred[None]:
        """
        Refresh the renewal information of C{certificate} when it is time,
        then renew it if it is due, or if C{forced} gives a reason to.

        When only the renewal information was due, not reaching the CA is
        a warning (20161) and no failed attempt.  When the CA no longer
        knows the account, the same key is registered again and the attempt
        goes on once more with it.
        """
        due = forced is not None or certificate.plan().at <= self._reactor.seconds()
        try:
            try:
                yield self._attemptOnce(certificate, forced, due)
            except ACMEProblem as error:
                if not _accountForgotten(error):
                    raise
                self._accountLost()
                yield self._attemptOnce(certificate, forced, due)
        except CancelledError:
            raise
        except Exception as error:
            if _accountForgotten(error):
                self._accountLost()
            self._failed(certificate, error)

    @inlineCallbacks
    def _attemptOnce(
        self, certificate: ManagedCertificate, forced: str | None, due: bool
    ) -> Deferred[None]:
        """
        The work of L{_attempt}, with the account as the store holds it.
        """
        try:
            client = yield self.acmeClient()
        except CancelledError:
            raise
        except Exception as error:
            if due:
                raise
            self._renewalInfoFailed(certificate, error)
            return
        now = self._reactor.seconds()
        issued = certificate.issued
        if issued is not None and client.offersRenewalInfo:
            if certificate.ariNextCheck <= now:
                yield self._refreshRenewalInfo(client, certificate, issued)
        plan = certificate.plan()
        if forced is None and plan.at > self._reactor.seconds():
            self._announce(certificate)
            return
        yield self._checkWritable(certificate)
        yield self._renew(client, certificate, forced or plan.reason)

    def _accountLost(self) -> None:
        """
        The CA no longer knows our account (a test CA restarted, a staging
        reset): register the same key again at the next connection.
        """
        try:
            record = self.store.loadAccount(self.options.acmeURL)
        except StoreError:
            # The next connection reports it, as a failed attempt.
            record = None
        if record is not None and record.url is not None:
            self._write(
                "account",
                _Write(
                    "the ACME account",
                    self.store.saveAccount,
                    (self.options.acmeURL, AccountRecord(record.key)),
                ),
            )
        self.forgetAccount()

    def _renewalInfoFailed(self, certificate: ManagedCertificate, error: Exception) -> None:
        now = self._reactor.seconds()
        certificate.ariNextCheck = now + min(ARI_ERROR_RETRY, self._checkInterval)
        events.RENEWAL_INFO_FAILED.emit(
            self._log, domains=certificate.label, details=str(error) or repr(error)
        )

    @inlineCallbacks
    def _refreshRenewalInfo(
        self, client: ACMEClient, certificate: ManagedCertificate, issued: CertifiedKey
    ) -> Deferred[None]:
        now = self._reactor.seconds()
        try:
            info, retryAfter = yield client.renewalInfo(issued.certificate)
        except (ACMEProblem, ACMEProtocolError, ValueError) as error:
            self._renewalInfoFailed(certificate, error)
            return
        window = info.suggested_window
        start, end = window.start.timestamp(), window.end.timestamp()
        if certificate.ariWindow != (start, end):
            certificate.ariWindow = (start, end)
            certificate.ariPick = self._random()
        wait = retryAfter if retryAfter is not None else ARI_DEFAULT_RETRY
        certificate.ariNextCheck = now + min(max(wait, ARI_MIN_RETRY), self._checkInterval)
        self.saveState(certificate)

    def _announce(self, certificate: ManagedCertificate) -> None:
        """
        Tell when C{certificate} is due, once per plan.
        """
        plan = certificate.plan()
        if plan != certificate.announced:
            certificate.announced = plan
            events.RENEWAL_PLANNED.emit(
                self._log,
                domains=certificate.label,
                when=_when(plan.at),
                reason=REASONS.get(plan.reason, plan.reason),
            )

    @inlineCallbacks
    def _renew(
        self, client: ACMEClient, certificate: ManagedCertificate, reason: str
    ) -> Deferred[None]:
        events.ORDER_STARTED.emit(
            self._log,
            domains=certificate.label,
            acme_url=self.options.acmeURL,
            reason=REASONS.get(reason, reason),
        )
        profile = self.options.profile
        if profile is not None and profile not in client.profiles:
            raise ProfileNotOffered(profile, sorted(client.profiles))
        self._refuseCompromisedAccountKey(client)
        issued = certificate.issued
        resume = certificate.pendingOrder
        if resume is not None and not self._mayUse(certificate, resume.key):
            resume = certificate.pendingOrder = None
        if resume is not None:
            key = resume.key
        elif self.options.reuseKey and issued and self._mayUse(certificate, issued.key):
            key = issued.key
        else:
            key = yield self.runInThread(generateKey, self.options.keyType)

        def created(order: PendingOrder) -> Deferred[bool]:
            certificate.pendingOrder = order
            return self.saveState(certificate)

        replaces = self._replaces(client, certificate)
        order = partial(
            obtainCertificate,
            client,
            self.responder,
            self._reactor,
            certificate.domains,
            key,
            profile=profile,
            created=created,
        )
        try:
            try:
                new = yield order(replaces=replaces, resume=resume)
            except ACMEProblem as problem:
                # Any refusal of a request (not a failed validation) may be
                # about the certificate named: ask once more without it.
                if replaces is None or problem.status is None:
                    raise
                events.REPLACES_REFUSED.emit(
                    self._log, domains=certificate.label, details=str(problem)
                )
                new = yield order()
        except Exception as error:
            if not orderSurvives(error):
                certificate.pendingOrder = None
            raise
        yield self._issued(certificate, new, _orderedBy(new, self.options.acmeURL, client))

    def _replaces(self, client: ACMEClient, certificate: ManagedCertificate) -> str | None:
        """
        The RFC 9773 identifier of the certificate a renewal of
        C{certificate} replaces, when the CA may take it: it offers
        renewal information, the certificate has not expired, and it is
        known to have been ordered by this account at this CA (a CA
        refuses to let an account replace another's certificate).
        """
        issued = certificate.issued
        if issued is None or not client.offersRenewalInfo:
            return None
        if issued.notAfter.timestamp() <= self._reactor.seconds():
            return None
        orderedBy = _orderedBy(issued, self.options.acmeURL, client)
        if orderedBy is None or orderedBy != certificate.orderedBy:
            return None
        return orderedBy[0]

    def _mayUse(self, certificate: ManagedCertificate, key: Any) -> bool:
        """
        Whether an order of C{certificate} may be for C{key}: it is of the
        configured type and was never revoked as compromised.
        """
        return keyType(key) == self.options.keyType and not certificate.isCompromised(key)

    def _refuseCompromisedAccountKey(self, client: ACMEClient) -> None:
        """
        @raise CompromisedAccountKey: when the account key is a key revoked
            as compromised, for any domain set.
        """
        digest: str | None = None
        for certificate in self.managed.values():
            if not certificate.compromisedKeys:
                continue
            # Digested once, and only when some key was revoked: this runs
            # before every order, over every set.
            digest = digest or publicKeyDigest(client.accountKey.key)
            if digest in certificate.compromisedKeys:
                raise CompromisedAccountKey(certificate.label, self.options.accountKeyFile)

    def _failed(self, certificate: ManagedCertificate, error: Exception) -> None:
        delay = certificate.failed(
            self._reactor.seconds(),
            self._checkInterval,
            getattr(error, "retryAfter", None),
            str(error) or type(error).__name__,
        )
        events.ISSUANCE_FAILED.emit(
            self._log, domains=certificate.label, details=certificate.lastError
        )
        events.RETRY_SCHEDULED.emit(
            self._log,
            domains=certificate.label,
            when=_when(certificate.nextAttempt),
            delay=f"{delay:.0f}",
            failures=certificate.failures,
        )
        self.saveState(certificate)

    @inlineCallbacks
    def _checkWritable(self, certificate: ManagedCertificate) -> Deferred[None]:
        """
        Check, in a thread, that a new certificate for C{certificate} can be
        stored, so that no order is placed whose result would be lost; a
        failure is event 20009, and the attempt fails.
        """
        try:
            yield self.runInThread(self.store.checkCertificateWritable, certificate.domains)
        except StoreError as error:
            events.STORE_FAILED.emit(
                self._log, domains=certificate.label, path=error.path, details=error.message
            )
            raise

    @inlineCallbacks
    def _issued(
        self,
        certificate: ManagedCertificate,
        issued: CertifiedKey,
        orderedBy: tuple[str, str, str] | None,
    ) -> Deferred[None]:
        """
        Store C{issued} (in a thread, after the writes before it), then put
        it in service.  When it cannot be stored, it goes in service all
        the same and the write is tried again: it is valid, and ordering
        anew would spend the CA's limits on a certificate already issued.

        The order that got it stays in the saved renewal state until the
        certificate is stored (see L{ManagedCertificate.unstoredOrder}), so
        that a restart before then downloads it from that order again
        instead of placing another.
        """
        order = certificate.unstoredOrder = certificate.pendingOrder
        certificate.succeeded()
        certificate.orderedBy = orderedBy

        def stored(path: object) -> None:
            events.CERTIFICATE_STORED.emit(self._log, domains=certificate.label, path=path)
            if certificate.unstoredOrder is order:
                certificate.unstoredOrder = None
                self.saveState(certificate)

        written = yield self._write(
            ("certificate", certificate.domains),
            _Write(
                certificate.label,
                self.store.saveCertificate,
                (certificate.domains, issued),
                done=stored,
            ),
        )
        if not written:
            self.saveState(certificate)
        self._deliver(certificate, issued)
        self._export(certificate)
        if not self._checksARI:
            self._announce(certificate)

    def saveState(self, certificate: ManagedCertificate) -> Deferred[bool]:
        """
        Save the renewal state of C{certificate} as it is now, after the
        writes before it.

        @return: A Deferred that fires with whether it was written (a
            failure is event 20009, and the write is tried again later); it
            never fails.
        """
        return self._write(
            ("state", certificate.domains),
            _Write(
                certificate.label,
                self.store.saveRenewalState,
                (certificate.domains, certificate.state()),
            ),
        )


class CompromisedAccountKey(Exception):
    """
    The account key is a key revoked as compromised: no order is placed
    with it.
    """

    def __init__(self, domains: str, accountKeyFile: str | None):
        super().__init__(domains, accountKeyFile)
        self.domains = domains
        self.accountKeyFile = accountKeyFile

    def __str__(self) -> str:
        where = (
            f"option 'account_key': {self.accountKeyFile} holds"
            if self.accountKeyFile
            else "the stored account key is"
        )
        fix = (
            "name another key's account"
            if self.accountKeyFile
            else "run the operations command's 'account rollover'"
        )
        return (
            f"{where} the key of a certificate for {self.domains} that was "
            f"revoked as compromised; {fix}"
        )


@attrs.frozen
class _Write:
    """
    One write to the store, run in a worker thread.

    @ivar label: What it is for, for events.
    @ivar function: Does it, with C{args}; raises L{StoreError}.
    @ivar done: Called with what C{function} returned, once it worked.
    @ivar failed: The path of its last failure, if it failed before.
    """

    label: str
    function: Callable[..., object]
    args: tuple[object, ...]
    done: Callable[[object], object] = lambda result: None
    failed: str | None = None


def _orderedBy(
    issued: CertifiedKey, acmeURL: str, client: ACMEClient
) -> tuple[str, str, str] | None:
    """
    The certificate ID of C{issued} with the CA and account of C{client},
    as L{ManagedCertificate.orderedBy} keeps them; C{None} when the
    certificate has no ID or the account no URL.
    """
    try:
        identifier = certificateID(issued.certificate)
    except ValueError:
        return None
    if client.accountURL is None:
        return None
    return (identifier, acmeURL, client.accountURL)


class ProfileNotOffered(Exception):
    """
    The configured profile is not one the CA offers.
    """

    def __init__(self, profile: str, offered: list[str]):
        super().__init__(profile, offered)
        self.profile = profile
        self.offered = offered

    def __str__(self) -> str:
        offered = ", ".join(self.offered) if self.offered else "none"
        return (
            f"option 'profile': the CA offers no profile {self.profile!r} "
            f"(it offers: {offered})"
        )


def _settingsFingerprint(options: ResourceOptions) -> str:
    """
    A digest of the options that orders depend on: when they change, a
    saved retry wait no longer applies.
    """
    settings = (
        options.acmeURL,
        options.keyType,
        options.profile,
        options.agreeTOS,
        options.contacts,
        options.accountKeyFile,
        options.eabKid,
        options.eabHMACKey,
    )
    return hashlib.sha256(repr(settings).encode("utf-8")).hexdigest()[:16]


def _when(seconds: float) -> str:
    return _utc(seconds).isoformat(timespec="seconds")
