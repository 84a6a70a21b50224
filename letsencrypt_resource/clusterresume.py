"""
Work resumed when a node's cluster database is back: the domain sets whose
attempt failed while it could not be reached are tried again at once,
rather than at the end of their back-off, unless the CA asked to wait.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from .resource import LetsEncryptResource
from .storage.cluster import ClusterStorage
from .storage.interface import IStorage


def resumeWhenBack(resource: LetsEncryptResource, storage: IStorage, clock: IReactorTime) -> None:
    """
    When C{storage} is a cluster node's, retry C{resource}'s sets that
    failed during each outage of its database, once it is back.
    """
    if isinstance(storage, ClusterStorage):
        storage.backListeners.append(lambda lostSince: resume(resource, clock, lostSince))


def resume(resource: Any, clock: IReactorTime, lostSince: float) -> Deferred[None]:
    """
    Make the sets of C{resource} whose last attempt failed since
    C{lostSince}, and that no CA's Retry-After holds, due now, and check
    them.

    @return: The check's Deferred, which never fails.
    """
    now = clock.seconds()
    failed = [
        certificate
        for certificate in resource.managed.values()
        if certificate.attempt is None
        and certificate.failures
        and certificate.lastFailure >= lostSince
        and certificate.holdUntil <= now < certificate.nextAttempt
    ]
    if not failed:
        return succeed(None)
    for certificate in failed:
        certificate.nextAttempt = now
    result: Deferred[None] = resource.check(only=failed)
    return result
