"""
What the operator's C{status} says of one domain set: its row, made the
same way by the running server (L{letsencrypt_resource.operations}) and
by the operations command when no server runs
(L{letsencrypt_resource.statusreader}).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from zope.interface import implementer

from .certificates import CertifiedKey
from .config import ResourceOptions
from .interfaces import ICertificateConsumer
from .managed import REASONS, ManagedCertificate, issuingCA

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


class RowBase:
    """
    The part of a set's status row that the time does not change, and what
    the rest is made of at a given time (see L{timedRow}).
    """

    __slots__ = ("row", "notAfter", "planAt", "planText", "reason", "retryAt", "retryText", "why")

    def __init__(
        self, certificate: ManagedCertificate, options: ResourceOptions, serverRunning: bool
    ):
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
            "forced": certificate.forcedReason,
        }
        if serverRunning:
            served = "provisional" if row["provisional"] else "ca"
            row["serving"] = dict.fromkeys(row["services"], served)
        self.notAfter: float | None = None
        if current is not None and not current.provisional:
            self.notAfter = current.validity[1]
            row.update(
                issuer=current.issuerText,
                ca=issuingCA(certificate, options),
                not_after=isoTime(self.notAfter),
            )
        plan = certificate.plan()
        self.row = row
        self.planAt = plan.at
        self.planText = isoTime(plan.at)
        self.reason = plan.reason
        self.why = REASONS.get(plan.reason, plan.reason)
        self.retryAt = certificate.retryAt()
        # A retry no later than the plan never shows: the plan comes first.
        self.retryText = isoTime(self.retryAt) if self.retryAt > plan.at else ""


def timedRow(base: RowBase, now: float) -> dict[str, Any]:
    """
    The status row of C{base} at C{now}, a new dictionary.
    """
    row = base.row.copy()
    if base.notAfter is not None:
        row["days_left"] = round((base.notAfter - now) / DAY, 1)
    retry = row["retry"] = base.retryAt > max(base.planAt, now)
    row["reason"] = base.reason
    if retry:
        row["next_check"] = base.retryText
        row["why"] = f"retry after {row['failures']} failed attempts"
    else:
        row["next_check"] = base.planText if base.planAt >= now else isoTime(now)
        row["why"] = base.why
    return row


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
    return timedRow(RowBase(certificate, options, serverRunning), now)


#: The fields of a set that its row shows nothing of: a change of theirs
#: keeps its kept row (see L{RowCache}).  Any other field, one added later
#: too, makes it again when it changes.
UNSHOWN = frozenset(
    {"attempt", "lease", "announced", "warned", "pendingOrder", "unstoredOrder", "deployPending"}
)


def _shown(certificate: ManagedCertificate) -> tuple[Any, ...]:
    """
    The fields of C{certificate} but L{UNSHOWN}, those changed in place
    (lists, sets) copied.
    """
    return tuple(
        tuple(value)
        if isinstance(value, list)
        else frozenset(value)
        if isinstance(value, set)
        else value
        for name, value in vars(certificate).items()
        if name not in UNSHOWN
    )


class RowCache:
    """
    The part of each set's status row that the time does not change
    (L{RowBase}), kept until the set changes: a server asked for its status
    again and again makes again the rows of the sets that changed alone.
    """

    def __init__(self) -> None:
        self._kept: weakref.WeakKeyDictionary[
            ManagedCertificate, tuple[tuple[Any, ...], RowBase]
        ] = weakref.WeakKeyDictionary()

    def row(
        self,
        certificate: ManagedCertificate,
        options: ResourceOptions,
        now: float,
        serverRunning: bool,
    ) -> dict[str, Any]:
        """
        The status row of C{certificate} at C{now}, as L{statusRow} makes
        it: a new dictionary, whose lists and dictionaries are the kept
        row's, to read, not to change.
        """
        state = (options, serverRunning, *_shown(certificate))
        kept = self._kept.get(certificate)
        if kept is None or kept[0] != state:
            kept = (state, RowBase(certificate, options, serverRunning))
            self._kept[certificate] = kept
        return timedRow(kept[1], now)
