"""
What the operator's C{status} says of one domain set: its row, made the
same way by the running server (L{letsencrypt_resource.operations}) and
by the operations command when no server runs
(L{letsencrypt_resource.statusreader}).
"""

from __future__ import annotations

import time
from typing import Any

from zope.interface import implementer

from .carotation import issuingCA
from .certificates import CertifiedKey
from .config import ResourceOptions
from .interfaces import ICertificateConsumer
from .managed import ManagedCertificate
from .outcomes import REASONS

DAY = 86400.0


@implementer(ICertificateConsumer)
class NoConsumer:
    """
    Stands for a configured service when the operations command runs
    without the server: it takes certificates and does nothing with them.
    """

    def __init__(self, name: str, domains: tuple[str, ...]):
        self.name = name
        self.domains = domains

    def useCertificate(self, certifiedKey: CertifiedKey) -> None:
        """
        Nothing serves it.
        """


def isoTime(seconds: float) -> str:
    """
    C{seconds} since the epoch as an ISO 8601 UTC time to the second, as
    C{datetime.isoformat} writes it, in half its time.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(seconds))


def statusRow(
    certificate: ManagedCertificate, options: ResourceOptions, now: float, serverRunning: bool
) -> dict[str, Any]:
    """
    The status row of C{certificate} at C{now}: names, issuer, the
    directory URL of the CA that issued it (C{ca}), expiry, next check and
    why, what each service serves (nothing when no server runs), and the
    last error.

    @param options: The resource's options.
    @param serverRunning: Whether the set is the running server's, whose
        services serve its certificate.
    """
    current = certificate.current
    row: dict[str, Any] = {
        "names": list(certificate.domains),
        "services": [c.name for c in certificate.consumers],
        "issuer": None,
        "ca": None,
        "not_after": None,
        "days_left": None,
        "provisional": current is None or current.provisional,
        "server_running": serverRunning,
        "serving": {},
        "failures": certificate.failures,
        "last_error": certificate.lastError,
    }
    if serverRunning:
        served = "provisional" if row["provisional"] else "ca"
        row["serving"] = dict.fromkeys(row["services"], served)
    if current is not None and not current.provisional:
        notAfter = current.validity[1]
        row.update(
            issuer=current.issuerText,
            ca=issuingCA(certificate, options),
            not_after=isoTime(notAfter),
            days_left=round((notAfter - now) / DAY, 1),
        )
    plan = certificate.plan()
    retry = certificate.retryAt()
    row["retry"] = retry > max(plan.at, now)
    row["reason"] = plan.reason
    if row["retry"]:
        row["next_check"] = isoTime(retry)
        row["why"] = f"retry after {certificate.failures} failed attempts"
    else:
        row["next_check"] = isoTime(max(plan.at, now))
        row["why"] = REASONS.get(plan.reason, plan.reason)
    return row
