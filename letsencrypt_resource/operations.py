"""
What an operator can ask of the resource: the status of every certificate,
renewals, revocations and account changes.

The same L{Operations} serve the running server (through its control
socket, see L{letsencrypt_resource.control}) and the operations command
when no server runs.  Each returns JSON-ready data.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from . import events
from .accountcommands import AccountCommands
from .carotation import issuingCA
from .certificates import CertifiedKey
from .clusterview import addClusterView
from .coroutines import deferred
from .interfaces import ICertificateConsumer
from .keys import PublicKey
from .managed import ManagedCertificate
from .noderecord import serialHex
from .operationerror import OperationError
from .outcomes import REASONS
from .resource import LetsEncryptResource
from .storage.cluster import ClusterStorage

DAY = 86400.0

#: RFC 5280 revocation reasons an operator may give.
REVOCATION_REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}


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


def _iso(seconds: float) -> str:
    """
    C{seconds} since the epoch as an ISO 8601 UTC time to the second, as
    C{datetime.isoformat} writes it, in half its time.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(seconds))


@functools.lru_cache(maxsize=64)
def issuerText(issuer: x509.Name) -> str:
    """
    The RFC 4514 text of C{issuer}, made once for the many certificates of
    one issuer: a status of thousands of sets made it for each.
    """
    return issuer.rfc4514_string()


def _errors(failed: list[ManagedCertificate]) -> str:
    return "; ".join(f"{c.label}: {c.lastError}" for c in failed)


class Operations:
    """
    The operator's requests, on a loaded L{LetsEncryptResource}.
    """

    _log = Logger()

    def __init__(
        self, resource: LetsEncryptResource, clock: IReactorTime, serverRunning: bool = True
    ):
        """
        @param serverRunning: Whether the resource is the running server's,
            whose services serve its certificates, or the operations
            command's own, with no server running.
        """
        self._resource = resource
        self._clock = clock
        self._serverRunning = serverRunning

    def status(self) -> list[dict[str, Any]]:
        """
        One row per domain set: names, issuer, the directory URL of the CA
        that issued it (C{ca}), expiry, next check and why,
        what each service serves (nothing when no server runs), and the last
        error.
        """
        return [self._row(c) for c in self._resource.managed.values()]

    @deferred
    async def fullStatus(self) -> list[dict[str, Any]]:
        """
        The L{status} rows and, on a cluster node, the cluster view of each
        (see L{addClusterView}), read from the cluster's database.
        """
        rows = self.status()
        storage = self._resource.storage
        if isinstance(storage, ClusterStorage):
            await addClusterView(rows, storage, self._clock)
        return rows

    def _row(self, certificate: ManagedCertificate) -> dict[str, Any]:
        now = self._clock.seconds()
        current = certificate.current
        row: dict[str, Any] = {
            "names": list(certificate.domains),
            "services": [c.name for c in certificate.consumers],
            "issuer": None,
            "ca": None,
            "not_after": None,
            "days_left": None,
            "provisional": current is None or current.provisional,
            "server_running": self._serverRunning,
            "serving": {},
            "failures": certificate.failures,
            "last_error": certificate.lastError,
            "forced": certificate.forcedReason,
        }
        if self._serverRunning:
            served = "provisional" if row["provisional"] else "ca"
            row["serving"] = dict.fromkeys(row["services"], served)
        if current is not None and not current.provisional:
            issuer = issuerText(current.certificate.issuer)
            notAfter = current.validity[1]
            row.update(
                issuer=issuer,
                ca=issuingCA(certificate, self._resource.options),
                not_after=_iso(notAfter),
                days_left=round((notAfter - now) / DAY, 1),
            )
        plan = certificate.plan()
        retry = certificate.retryAt()
        row["retry"] = retry > max(plan.at, now)
        row["reason"] = plan.reason
        if row["retry"]:
            row["next_check"] = _iso(retry)
            row["why"] = f"retry after {certificate.failures} failed attempts"
        else:
            row["next_check"] = _iso(max(plan.at, now))
            row["why"] = REASONS.get(plan.reason, plan.reason)
        return row

    def select(self, names: list[str]) -> list[ManagedCertificate]:
        """
        The domain sets holding any of C{names}; all when C{names} is empty.

        @raise OperationError: when a name is in no configured set.
        """
        managed = list(self._resource.managed.values())
        if not names:
            return managed
        holding: dict[str, list[ManagedCertificate]] = {}
        for certificate in managed:
            for domain in certificate.domains:
                holding.setdefault(domain, []).append(certificate)
        chosen: dict[ManagedCertificate, None] = {}
        for name in names:
            matches = holding.get(name.lower())
            if not matches:
                raise OperationError(f"no configured service has the domain {name}")
            chosen.update(dict.fromkeys(matches))
        return list(chosen)

    @deferred
    async def renew(self, names: list[str], force: bool) -> list[dict[str, Any]]:
        """
        Renew the sets holding C{names} (all when empty): those due, or
        every one with C{force}.

        @return: The status row of each set, with its C{outcome}:
            C{"renewed"}, or C{"not due"} when nothing was ordered.
        """
        chosen = self.select(names)
        before = {certificate: certificate.current for certificate in chosen}
        failed = await self._check(chosen, force)
        if failed:
            raise OperationError(
                f"the renewal failed for {len(failed)} of the {len(chosen)} sets "
                f"asked for: {_errors(failed)}"
            )
        rows = []
        for certificate in chosen:
            renewed = certificate.current is not before[certificate]
            rows.append({**self._row(certificate), "outcome": "renewed" if renewed else "not due"})
        return rows

    async def _check(
        self, chosen: list[ManagedCertificate], force: bool, reason: str = "forced"
    ) -> list[ManagedCertificate]:
        """
        Check C{chosen} now, renewing those due (every one with C{force},
        for C{reason}); return those whose attempt failed.
        """
        before = {certificate: certificate.failures for certificate in chosen}
        await self._resource.check(force=force, only=chosen, reason=reason)
        return [c for c in chosen if c.failures > before[c]]

    @deferred
    async def revoke(self, name: str, reason: str) -> dict[str, Any]:
        """
        Revoke the CA-issued certificate of the set holding C{name}, with
        the account at the CA that issued it, then replace it at once.

        For C{keyCompromise}, the key is first recorded as compromised in
        the renewal state (20193), so that it is never used again; when
        that record cannot be written, nothing is revoked, and the key is
        not marked either, unless it was before (the state is saved again
        without the mark, in place of the write that failed).
        """
        if reason not in REVOCATION_REASONS:
            raise OperationError(
                f"unknown reason {reason!r}; use one of {', '.join(REVOCATION_REASONS)}"
            )
        [certificate] = self.select([name])
        issued = certificate.issued
        if issued is None:
            raise OperationError(f"{certificate.label} has no CA-issued certificate")
        client = await self._resource.cas.clientFor(certificate)
        if reason == "keyCompromise":
            # The certificate's public key: its private key may not parse.
            key = issued.certificate.public_key()
            assert isinstance(key, PublicKey)
            recorded = certificate.isCompromised(key)
            certificate.markCompromised(key)
            written = await self._resource.saveState(certificate)
            if not written:
                if not recorded:
                    certificate.unmarkCompromised(key)
                    self._resource.saveState(certificate)
                raise OperationError(
                    f"nothing was revoked: the key of {certificate.label} cannot "
                    "be recorded as compromised (event 20009 says why)"
                )
            events.KEY_COMPROMISED.emit(self._log, domains=certificate.label)
        await client.revoke(issued.certificate, REVOCATION_REASONS[reason])
        serial = serialHex(issued.certificate.serial_number)
        failed = await self._check([certificate], force=True, reason="revoked")
        if failed:
            raise OperationError(
                f"the certificate with serial {serial} of {certificate.label} is revoked "
                f"({reason}), but its replacement failed: {_errors(failed)}; the "
                "services keep the revoked certificate until a retry succeeds"
            )
        # The set's row as status gives it, where "reason" is the revocation's.
        return {**self._row(certificate), "revoked": serial, "reason": reason}

    def _accounts(self) -> AccountCommands:
        """
        The account commands on the resource's CAs, read when asked (the
        resource may still be loading when these operations are made).
        """
        resource = self._resource
        return AccountCommands(resource.cas, resource.records, resource.runInThread)

    def accountShow(self, ca: str | None = None) -> Deferred[dict[str, Any]]:
        """
        The account at the CA C{ca} as it knows it (see L{AccountCommands}).
        """
        return self._accounts().show(ca)

    def accountRollover(self, ca: str | None = None) -> Deferred[dict[str, Any]]:
        """
        Replace the key of the account at the CA C{ca} (see L{AccountCommands}).
        """
        return self._accounts().rollover(ca)

    def accountDeactivate(self, ca: str | None = None) -> Deferred[dict[str, Any]]:
        """
        Deactivate the account at the CA C{ca} (see L{AccountCommands}).
        """
        return self._accounts().deactivate(ca)
