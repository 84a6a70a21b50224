"""
The parts of a L{letsencrypt_resource.resource.LetsEncryptResource}, made
and wired together, every one logging as the resource:
L{DomainSets} (the sets, loaded from the registry and the storage),
L{Scheduler} (when to look at them), L{Renewer} (the attempts, with
L{RenewalInfo} and L{Outcomes}, and the orders of
L{letsencrypt_resource.ordering.Ordering}), L{Provisioning} (provisional
certificates, delivery and export), L{ChallengeSiteService} (the challenge
site), L{ChallengeSweeper} (challenges left in the storage),
L{DeployHooks} (the deploy command after each new certificate),
L{Metrics} (what the parts count, served by L{MetricsSiteService}),
L{AccountConnection} (the account) and L{WriteQueue} (every write to the
storage, in order).  The services among them are the resource's children,
started in that order: the deploy hooks, the metrics site, the challenge
site, the sets, the scheduler, the sweeper, then the reading of the deploy
runs due (once the sets are loaded).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.logger import Logger
from zope.interface.registry import Components

from .acmeloading import LoadAtStart
from .ariissuers import IssuerConnections
from .carotation import CARotation
from .challenge import ChallengeResponder
from .challengesite import ChallengeSiteService
from .challengesweep import ChallengeSweeper
from .config import ResourceOptions
from .connection import AccountConnection
from .deploy import DeployHooks
from .deployflags import DeployFlags, DueAtStart, markOthersDue, recordsNode
from .domainsets import DomainSets
from .managed import ManagedCertificate, issuingCA
from .metrics import Metrics, TimedAgent
from .metricssite import MetricsSiteService
from .outcomes import Outcomes
from .provisioning import Provisioning
from .renewalinfo import RenewalInfo
from .renewer import Renewer
from .scheduler import Scheduler
from .storage.interface import IStorage
from .storage.records import Records
from .storedchanges import StoredChanges
from .writequeue import Runner, WriteQueue

#: Checks, in a worker thread, that a domain set's certificate can be
#: stored, before it is ordered; raises
#: L{letsencrypt_resource.storage.interface.StorageError} when it cannot.
WriteCheck = Callable[[tuple[str, ...]], None]


@attrs.frozen
class Parts:
    """
    The parts of a resource.

    @ivar metrics: The resource's Prometheus metrics.
    @ivar cas: The resource's CA and its fallback CAs.
    @ivar services: The parts that are services, in the order they start:
        the deploy hooks, the metrics site, the challenge site, the sets,
        the scheduler, the challenge sweeper, the reading of the deploy
        runs due.
    """

    writes: WriteQueue
    connection: AccountConnection
    scheduler: Scheduler
    sets: DomainSets
    challengeSite: ChallengeSiteService
    metrics: Metrics
    services: tuple[Service, ...]
    provisioning: Provisioning
    cas: CARotation


def isIssued(certificate: ManagedCertificate) -> bool:
    """
    Whether the certificate in service for C{certificate} is a CA-issued
    one (for its names or not): read at each scrape, in a thread.
    """
    current = certificate.current
    return current is not None and not current.provisional


def compose(
    options: ResourceOptions,
    registry: Components,
    storage: IStorage,
    records: Records,
    responder: ChallengeResponder,
    httpClient: Any,
    reactor: Any,
    runWrite: Runner,
    inThread: Runner,
    random: Callable[[], float],
    automatic: bool,
    checkWritable: WriteCheck | None,
    log: Logger,
    clientFor: Callable[[str | None], Any],
) -> Parts:
    """
    Make the parts of a resource of C{options}, over C{records} on
    C{storage}, that answers challenges with C{responder}; the other
    arguments are the resource's (see its constructor), and C{log} its
    logger; C{clientFor} makes the HTTP client trusting a fallback CA's
    C{acme_ca_file}: never C{httpClient}, which the embedder chose for the
    resource's own CA only.
    """
    interval = options.checkInterval
    managed: dict[frozenset[str], ManagedCertificate] = {}

    def writeFailed() -> None:
        # Wake up in time to try the write again.
        scheduler.scheduleWakeUp()

    metrics = Metrics(
        lambda: [(c.label, c.current, c.failures) for c in list(managed.values())],
        (options.acmeURL, *(ca.acmeURL for ca in options.fallbackCAs)),
        lambda: [(c.label, issuingCA(c, options)) for c in list(managed.values()) if isIssued(c)],
    )
    responder.counted = metrics.challengeRequest
    httpClient = TimedAgent(httpClient, reactor, metrics.acmeRequest)
    writes = WriteQueue(records, runWrite, inThread, reactor, interval, log, failed=writeFailed)
    connection = AccountConnection(options, records, writes, httpClient, reactor, inThread)

    def timedClientFor(caFile: str | None, acmeURL: str) -> Any:
        def observe(method: str, seconds: float) -> None:
            metrics.acmeRequest(method, seconds, acmeURL)

        return TimedAgent(clientFor(caFile), reactor, observe)

    cas = CARotation(options, connection, timedClientFor, log)
    flags = DeployFlags(storage, recordsNode(options.nodeName, records.sharesChallenges), log)
    if records.sharesChallenges:
        # Before each certificate stored, the other nodes' runs are due.
        records.beforeCertificate = functools.partial(
            markOthersDue, storage, options.nodeName, reactor.seconds
        )
    deploys = DeployHooks(
        options, reactor, log, managed, flags.save, writes.whenWritten, recorded=flags
    )
    provisioning = Provisioning(
        options, managed, records, writes, inThread, reactor, log, deploys, automatic
    )
    changes = StoredChanges(options, records, managed, provisioning, reactor, log)
    renewer = Renewer(
        options,
        managed,
        storage,
        checkWritable,
        writes,
        cas,
        RenewalInfo(writes, reactor, interval, random, log),
        Outcomes(writes, provisioning, connection, reactor, interval, log, metrics),
        responder,
        inThread,
        reactor,
        log,
        changes.adopt,
    )
    scheduler = Scheduler(
        managed, renewer, provisioning, connection, writes, reactor, interval, log, automatic
    )
    sets = DomainSets(
        options, registry, records, managed, provisioning, scheduler, changes, reactor, log
    )
    scheduler.loaded = sets.whenLoaded
    scheduler.issuers = IssuerConnections(cas.connectionOf)
    scheduler.atCheck.append(deploys.retry)
    if options.storeDirectory is not None:
        # A run due again follows a new export: the files may be gone.
        deploys.again = lambda certificate: provisioning.export(certificate, deploy=True)
    provisioning.unusableListeners.append(lambda certificate: scheduler.check(only=[certificate]))

    def checked(attempted: list[ManagedCertificate]) -> None:
        # Not while a set fails: a check in which it waits out its retry
        # delay attempts nothing, and must not look like a success.
        if all(certificate.failures == 0 for certificate in list(managed.values())):
            metrics.checkSucceeded(reactor.seconds())

    scheduler.afterCheck.append(checked)
    challengeSite = ChallengeSiteService(options, responder, reactor, log)
    sweeper = ChallengeSweeper(records, reactor, interval, log)
    metricsSite = MetricsSiteService(options, metrics, reactor, log)
    services: tuple[Service, ...] = (deploys, metricsSite, challengeSite, sets, scheduler, sweeper)
    services += (DueAtStart(sets.whenLoaded, deploys.readRecorded, log),)
    if automatic:
        services += (LoadAtStart(sets.whenLoaded, connection.loadModules),)
    return Parts(
        writes, connection, scheduler, sets, challengeSite, metrics, services, provisioning, cas
    )
