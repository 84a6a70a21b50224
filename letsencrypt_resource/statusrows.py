"""
What the operator's C{status} says of one domain set: its row, made the
same way by the running server (L{letsencrypt_resource.operations}) and
by the operations command when no server runs
(L{letsencrypt_resource.statusreader}).
"""

from __future__ import annotations

import operator
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from zope.interface import implementer

from .certificates import CertifiedKey
from .config import ResourceOptions
from .interfaces import ICertificateConsumer
from .managed import REASONS, ManagedCertificate, issuingCA
from .rowjson import DAY, RowJSON
from .startupcollection import pausedCollection


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
        services = [c.name for c in certificate.consumers]
        provisional = current is None or current.provisional
        # One dictionary made whole, in the fields' order: no update after.
        issuer: str | None = None
        ca: str | None = None
        notAfterText: str | None = None
        self.notAfter: float | None = None
        if current is not None and not provisional:
            self.notAfter = current.validity[1]
            issuer = current.issuerText
            ca = issuingCA(certificate, options)
            notAfterText = isoTime(self.notAfter)
        served = "provisional" if provisional else "ca"
        row: dict[str, Any] = {
            "names": list(certificate.domains),
            "services": services,
            "issuer": issuer,
            "ca": ca,
            "not_after": notAfterText,
            "days_left": None,
            "provisional": provisional,
            "server_running": serverRunning,
            "serving": dict.fromkeys(services, served) if serverRunning else {},
            "failures": certificate.failures,
            "last_error": certificate.lastError,
            "forced": certificate.forcedReason,
        }
        plan = certificate.plan()
        self.row = row
        self.planAt = plan.at
        self.planText = isoTime(plan.at)
        self.reason = plan.reason
        self.why = REASONS.get(plan.reason, plan.reason)
        self.retryAt = certificate.retryAt()
        # A retry no later than the plan never shows: the plan comes first.
        self.retryText = isoTime(self.retryAt) if self.retryAt > plan.at else ""

    def json(self) -> RowJSON:
        """
        The row's JSON text at any time (see L{timedRow}).
        """
        texts = (self.reason, self.planText, self.why, self.retryText)
        return RowJSON(self.row, self.notAfter, self.planAt, self.retryAt, texts)


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


#: The field of a set's certificate (with its private key), which a kept
#: row compares by identity through a weak reference: a renewed or revoked
#: set's old key is not kept alive by its kept row.
CURRENT = "current"


class _Reader:
    """
    How the shown fields of the sets with the same fields are read: the
    fields' values at once (but L{CURRENT}'s), and a copy of those that
    change in place (lists, sets), whose copies are compared.
    """

    __slots__ = ("containers", "names", "read")

    def __init__(self, fields: dict[str, Any]):
        self.names = tuple(fields)
        shown = [name for name in fields if name not in UNSHOWN and name != CURRENT]
        self.read = operator.itemgetter(*shown)
        # A set's copy is a frozenset: equal to it, and smaller.
        self.containers = [
            (name, list if isinstance(fields[name], list) else frozenset)
            for name in shown
            if isinstance(fields[name], (list, set))
        ]


class _Kept:
    """
    A set's kept row (L{RowBase}, and its JSON text once made), and
    what its shown fields were when it was made (see L{_Reader}), compared
    with the set's at each call in a few operations.
    """

    __slots__ = ("base", "certificate", "copies", "json", "reader", "values")

    def __init__(self, fields: dict[str, Any], reader: _Reader, base: RowBase):
        self.reader = reader
        self.values = reader.read(fields)
        certificate = fields.get(CURRENT)
        self.certificate = None if certificate is None else weakref.ref(certificate)
        self.copies = [kind(fields[name]) for name, kind in reader.containers]
        self.base = base
        self.json: RowJSON | None = None

    def current(self, fields: dict[str, Any]) -> bool:
        """
        Whether no shown field of the set of C{fields} changed since.
        """
        certificate = fields.get(CURRENT)
        return (
            (
                certificate is None
                if self.certificate is None
                else certificate is not None and self.certificate() is certificate
            )
            and self.reader.read(fields) == self.values
            and [fields[name] for name, _ in self.reader.containers] == self.copies
            and tuple(fields) == self.reader.names
        )


class RowCache:
    """
    The part of each set's status row that the time does not change
    (L{RowBase}), kept until the set changes: a server asked for its status
    again and again makes again the rows of the sets that changed alone.
    """

    def __init__(self) -> None:
        self._kept: weakref.WeakKeyDictionary[ManagedCertificate, _Kept] = (
            weakref.WeakKeyDictionary()
        )
        self._made: tuple[ResourceOptions, bool] | None = None
        self._readers: dict[tuple[str, ...], _Reader] = {}

    def _base(
        self, certificate: ManagedCertificate, options: ResourceOptions, serverRunning: bool
    ) -> _Kept:
        """
        The kept row of C{certificate}, made again when it changed (or the
        options, or whether the server runs).
        """
        if self._made != (options, serverRunning):
            self._kept.clear()
            self._made = (options, serverRunning)
        fields = vars(certificate)
        kept = self._kept.get(certificate)
        if kept is None or not kept.current(fields):
            names = tuple(fields)
            reader = self._readers.get(names)
            if reader is None:
                reader = self._readers[names] = _Reader(fields)
            kept = _Kept(fields, reader, RowBase(certificate, options, serverRunning))
            self._kept[certificate] = kept
        return kept

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
        return timedRow(self._base(certificate, options, serverRunning).base, now)

    def encoded(
        self,
        certificates: Iterable[ManagedCertificate],
        options: ResourceOptions,
        now: float,
        serverRunning: bool,
    ) -> str:
        """
        The JSON text of the list of the status rows of C{certificates} at
        C{now}: the same text as C{json.dumps} of the rows L{row} gives,
        made of the kept rows' texts (L{RowJSON}).  A row whose text is
        not kept yet (a status asked right at start-up, before L{keep} made
        them all) has it made and kept: with the encoder made once
        (L{rowjson.dumps <letsencrypt_resource.rowjson.dumps>}), that costs
        less than encoding the row at that time alone.  Automatic
        collections are paused meanwhile (see L{pausedCollection}): what it
        makes is kept rows, which live on, and the answer's parts, which
        make no cycle; a status asked right at start-up, with nothing kept,
        makes about 100,000 objects at 10,000 sets, over which the
        collector went again and again.
        """
        nowJSON = '"' + isoTime(now) + '"'
        texts: list[str] = []
        with pausedCollection():
            for certificate in certificates:
                kept = self._base(certificate, options, serverRunning)
                if kept.json is None:
                    kept.json = kept.base.json()
                texts.append(kept.json.at(now, nowJSON))
        return "[" + ", ".join(texts) + "]"

    def keep(
        self,
        certificates: Iterable[ManagedCertificate],
        options: ResourceOptions,
        serverRunning: bool,
        failed: Callable[[ManagedCertificate, Exception], None],
    ) -> Iterator[None]:
        """
        Make the kept row and text of each of C{certificates} that has
        none, one set at each step: what the first L{encoded} call would
        make, made ahead, a few at a time (see C{twisted.internet.task.cooperate}).

        @param failed: Called with each set whose row cannot be made and
            the error; the others are made all the same, and that set's is
            left to the first L{encoded} call, which fails as it did.
        """
        for certificate in certificates:
            try:
                kept = self._base(certificate, options, serverRunning)
                if kept.json is None:
                    kept.json = kept.base.json()
            except Exception as error:
                failed(certificate, error)
            yield None
