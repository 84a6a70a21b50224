"""
ARI refresh timing: asking the CA that issued a certificate for its
renewal information (RFC 9773), keeping the window it suggests, and when
to ask again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from . import events
from .acmeerrors import ACMEProblem, ACMEProtocolError
from .carotation import CA
from .certificates import CertifiedKey
from .coroutines import deferred
from .managed import ManagedCertificate
from .writequeue import WriteQueue

if TYPE_CHECKING:
    from .acmeclient import ACMEClient

#: When to ask for renewal information again without a Retry-After...
ARI_DEFAULT_RETRY = 6 * 3600.0
#: ...at the soonest after one...
ARI_MIN_RETRY = 60.0
#: ...and after a failed request.
ARI_ERROR_RETRY = 6 * 3600.0


class RenewalInfo:
    """
    Keeps the renewal information of each set up to date.
    """

    def __init__(
        self,
        writes: WriteQueue,
        reactor: Any,
        checkInterval: float,
        random: Callable[[], float],
        log: Logger,
    ):
        """
        @param checkInterval: The longest wait before asking again.
        @param random: Picks where in a window to renew (0 to 1).
        @param log: Where events go.
        """
        self._writes = writes
        self._reactor = reactor
        self._checkInterval = checkInterval
        self._random = random
        self._log = log

    def failed(self, certificate: ManagedCertificate, error: Exception) -> None:
        """
        The renewal information of C{certificate} could not be had: a
        warning (20161), and another try later.
        """
        now = self._reactor.seconds()
        certificate.ariNextCheck = now + min(ARI_ERROR_RETRY, self._checkInterval)
        events.RENEWAL_INFO_FAILED.emit(
            self._log, domains=certificate.label, details=str(error) or repr(error)
        )

    @deferred
    async def refreshAt(
        self,
        issuer: CA | None,
        chosen: CA,
        client: ACMEClient,
        certificate: ManagedCertificate,
        issued: CertifiedKey,
    ) -> None:
        """
        Ask C{issuer}, the CA that issued C{issued} (the certificate of
        C{certificate}), for its renewal information: through C{client}
        when it is C{chosen}, the CA of the attempt under way, else through
        its own account connection (not reaching it is a warning, as in
        L{failed}).  When it is a CA no longer configured, or it offers no
        renewal information, another CA than C{chosen} is asked nothing
        until the next regular check, so that the set is not due again at
        once.
        """
        if issuer is not None and issuer is not chosen:
            try:
                client = await issuer.connection.acmeClient()
            except CancelledError:
                raise
            except Exception as error:
                self.failed(certificate, error)
                return
        if issuer is not None and client.offersRenewalInfo:
            await self.refresh(client, certificate, issued)
        elif issuer is not chosen:
            certificate.ariNextCheck = self._reactor.seconds() + self._checkInterval

    @deferred
    async def refresh(
        self, client: ACMEClient, certificate: ManagedCertificate, issued: CertifiedKey
    ) -> None:
        """
        Ask the CA for the renewal information of C{issued}, the
        certificate of C{certificate}, and save what it changes.
        """
        now = self._reactor.seconds()
        try:
            info, retryAfter = await client.renewalInfo(issued.certificate)
        except (ACMEProblem, ACMEProtocolError, ValueError) as error:
            self.failed(certificate, error)
            return
        window = info.suggested_window
        start, end = window.start.timestamp(), window.end.timestamp()
        if certificate.ariWindow != (start, end):
            certificate.ariWindow = (start, end)
            certificate.ariPick = self._random()
        wait = retryAfter if retryAfter is not None else ARI_DEFAULT_RETRY
        certificate.ariNextCheck = now + min(max(wait, ARI_MIN_RETRY), self._checkInterval)
        self._writes.saveState(certificate)
