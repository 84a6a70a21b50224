"""
What an operator can ask of the resource: the status of every certificate,
renewals, revocations and account changes.

The same L{Operations} serve the running server (through its control
socket, see L{letsencrypt_resource.control}) and the operations command
when no server runs.  Each returns JSON-ready data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import CooperativeTask
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .acmeloading import loadACME
from .clusterview import addClusterView
from .controlsocket import EncodedJSON
from .coroutines import deferred
from .keys import PublicKey
from .managed import ManagedCertificate
from .noderecord import serialHex
from .operationerror import OperationError
from .reporting import unexpected
from .resource import LetsEncryptResource
from .statusrows import RowCache
from .storage.cluster import ClusterStorage

if TYPE_CHECKING:
    from .accountcommands import AccountCommands

#: RFC 5280 revocation reasons an operator may give.
REVOCATION_REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}


def _errors(failed: list[ManagedCertificate]) -> str:
    return "; ".join(f"{c.label}: {c.lastError}" for c in failed)


async def _cooperated(
    cooperate: Callable[[Iterator[None]], CooperativeTask], steps: Iterator[None]
) -> None:
    """
    Run C{steps} with C{cooperate} until they end; cancelled, stop them.
    """
    task = cooperate(steps)
    try:
        await task.whenDone()
    except CancelledError:
        task.stop()
        raise


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
        self._rows = RowCache()

    def status(self) -> list[dict[str, Any]]:
        """
        One row per domain set: names, issuer, the directory URL of the CA
        that issued it (C{ca}), expiry, next check and why,
        what each service serves (nothing when no server runs), and the last
        error.
        """
        options, now = self._resource.options, self._clock.seconds()
        return [
            self._rows.row(c, options, now, self._serverRunning)
            for c in self._resource.managed.values()
        ]

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

    @deferred
    async def encodedStatus(self) -> EncodedJSON | list[dict[str, Any]]:
        """
        The L{fullStatus} rows, encoded by the kept rows' texts
        (L{RowCache.encoded}) on a server alone; as rows on a cluster node.
        """
        resource = self._resource
        if isinstance(resource.storage, ClusterStorage):
            return await self.fullStatus()
        return EncodedJSON(
            self._rows.encoded(
                resource.managed.values(),
                resource.options,
                self._clock.seconds(),
                self._serverRunning,
            )
        )

    @deferred
    async def keepRows(self, cooperate: Callable[[Iterator[None]], CooperativeTask]) -> None:
        """
        Make the kept row of every set ahead, a few sets at a time (with
        C{cooperate}, C{twisted.internet.task.cooperate} or another
        C{Cooperator}'s), so that the first C{status} is answered from kept
        rows as the later ones are (see L{RowCache.keep}): from the end of
        the load, the rows of the sets on a certificate then (the rest are
        put on provisional ones first), so that a status asked right at
        start-up finds them; once the resource has settled (every set
        loaded and checked once), the rows of every set, made again only
        for those that changed since.  A set whose row cannot be made is
        logged, once, and the others made.  Cancelled, it stops.  Nothing is made
        on a cluster node, whose status is not made of the kept rows'
        texts (see L{encodedStatus}).
        """
        resource = self._resource
        if isinstance(resource.storage, ClusterStorage):
            return
        await resource.whenLoaded()
        failed: set[ManagedCertificate] = set()

        def logged(certificate: ManagedCertificate, error: Exception) -> None:
            failed.add(certificate)
            unexpected(self._log, Failure(error))

        async def keep(sets: list[ManagedCertificate]) -> None:
            if sets:
                steps = self._rows.keep(sets, resource.options, self._serverRunning, logged)
                await _cooperated(cooperate, steps)

        await keep([c for c in resource.managed.values() if c.current is not None])
        await resource.whenSettled()
        await keep([c for c in resource.managed.values() if c not in failed])

    def _row(self, certificate: ManagedCertificate) -> dict[str, Any]:
        return self._rows.row(
            certificate, self._resource.options, self._clock.seconds(), self._serverRunning
        )

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

    async def _accounts(self) -> AccountCommands:
        """
        The account commands on the resource's CAs, read when asked (the
        resource may still be loading when these operations are made), once
        the modules that speak ACME are loaded off the reactor thread (see
        L{letsencrypt_resource.acmeloading}).
        """
        resource = self._resource
        await loadACME(resource.runInThread, self._clock)
        from .accountcommands import AccountCommands

        return AccountCommands(resource.cas, resource.records, resource.runInThread)

    @deferred
    async def accountShow(self, ca: str | None = None) -> dict[str, Any]:
        """
        The account at the CA C{ca} as it knows it (see L{AccountCommands}).
        """
        return await (await self._accounts()).show(ca)

    @deferred
    async def accountRollover(self, ca: str | None = None) -> dict[str, Any]:
        """
        Replace the key of the account at the CA C{ca} (see L{AccountCommands}).
        """
        return await (await self._accounts()).rollover(ca)

    @deferred
    async def accountDeactivate(self, ca: str | None = None) -> dict[str, Any]:
        """
        Deactivate the account at the CA C{ca} (see L{AccountCommands}).
        """
        return await (await self._accounts()).deactivate(ca)
