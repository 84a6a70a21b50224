"""
What the end of a renewal attempt does: an issued certificate is stored,
put in service and exported; a failure sets the retry; either way the
plan that follows is announced.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from . import events
from .certificates import CertifiedKey
from .connection import AccountConnection
from .coroutines import deferred
from .managed import REASONS, ManagedCertificate
from .metrics import Metrics
from .provisioning import Provisioning
from .reporting import when
from .retrywaits import recordFailure
from .writequeue import WriteQueue


class Outcomes:
    """
    Records how attempts end.
    """

    def __init__(
        self,
        writes: WriteQueue,
        provisioning: Provisioning,
        connection: AccountConnection,
        reactor: Any,
        checkInterval: float,
        log: Logger,
        metrics: Metrics | None = None,
    ):
        """
        @param checkInterval: The longest wait after a failure.
        @param log: Where events go.
        @param metrics: Counts the attempts by how they end.
        """
        self._writes = writes
        self._provisioning = provisioning
        self._connection = connection
        self._reactor = reactor
        self._checkInterval = checkInterval
        self._log = log
        self._metrics = metrics or Metrics()

    def announce(self, certificate: ManagedCertificate) -> None:
        """
        Tell when C{certificate} is due, once per plan.
        """
        plan = certificate.plan()
        if plan != certificate.announced:
            certificate.announced = plan
            events.RENEWAL_PLANNED.emit(
                self._log,
                domains=certificate.label,
                when=when(plan.at),
                reason=REASONS.get(plan.reason, plan.reason),
            )

    def failed(
        self, certificate: ManagedCertificate, error: Exception, switchAt: float | None
    ) -> None:
        """
        An attempt for C{certificate} failed with C{error}: set when to try
        again (see L{recordFailure}, for C{switchAt}), and save that.
        """
        delay = recordFailure(
            certificate,
            self._reactor.seconds(),
            self._checkInterval,
            getattr(error, "retryAfter", None),
            str(error) or type(error).__name__,
            switchAt,
        )
        self._metrics.renewalEnded("failed", certificate.caStreak.url)
        events.ISSUANCE_FAILED.emit(
            self._log, domains=certificate.label, details=certificate.lastError
        )
        events.RETRY_SCHEDULED.emit(
            self._log,
            domains=certificate.label,
            when=when(certificate.nextAttempt),
            delay=f"{delay:.0f}",
            failures=certificate.failures,
        )
        self._writes.saveState(certificate)

    @deferred
    async def issued(
        self,
        certificate: ManagedCertificate,
        issued: CertifiedKey,
        orderedBy: tuple[str, str, str] | None,
    ) -> None:
        """
        Store C{issued} (after the writes before it), then put
        it in service.  When it cannot be stored, it goes in service all
        the same and the write is tried again: it is valid, and ordering
        anew would spend the CA's limits on a certificate already issued.

        The order that got it stays in the saved renewal state until the
        certificate is stored (see L{ManagedCertificate.unstoredOrder}), so
        that a restart before then downloads it from that order again
        instead of placing another.
        """
        self._metrics.renewalEnded("issued", certificate.caStreak.url)
        order = certificate.unstoredOrder = certificate.pendingOrder
        certificate.succeeded()
        certificate.orderedBy = orderedBy

        def stored(path: object) -> None:
            events.CERTIFICATE_STORED.emit(self._log, domains=certificate.label, path=path)
            self._provisioning.stored(certificate, issued)
            if certificate.unstoredOrder is order:
                certificate.unstoredOrder = None
                self._writes.saveState(certificate)

        written = await self._writes.saveCertificate(certificate, issued, stored)
        if not written:
            self._writes.saveState(certificate)
        self._provisioning.deliver(certificate, issued)
        self._provisioning.export(certificate, deploy=True)
        if not self._connection.checksARI:
            self.announce(certificate)
