"""
In-memory fakes of the package's interfaces: L{RecordingConsumer} is an
L{ICertificateConsumer} that remembers what it was given; L{MemoryStore} is
an L{ICertificateStore} in a dictionary.
"""

from __future__ import annotations

import json
from typing import Any

from zope.interface import implementer

from ..certificates import CertifiedKey
from ..interfaces import ICertificateConsumer, ICertificateStore
from ..store import AccountRecord, StoreError


@implementer(ICertificateConsumer)
class RecordingConsumer:
    """
    An L{ICertificateConsumer} that records every certificate it is given.

    @ivar received: The certificates, in order.
    """

    def __init__(self, name: str, domains: tuple[str, ...]):
        self.name = name
        self.domains = domains
        self.received: list[CertifiedKey] = []

    def useCertificate(self, certifiedKey: CertifiedKey) -> None:
        self.received.append(certifiedKey)


@implementer(ICertificateStore)
class MemoryStore:
    """
    An L{ICertificateStore} in memory, that keeps what a file would hold.

    @ivar failWrites: When true, every save raises L{StoreError}.
    @ivar unwritable: Domain sets whose certificate cannot be stored, as
        a name too long for a file system: their saves and
        L{checkCertificateWritable} raise L{StoreError}.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, bytes] = {}
        self.certificates: dict[tuple[str, ...], bytes] = {}
        self.states: dict[tuple[str, ...], str] = {}
        self.signer: bytes | None = None
        self.failWrites = False
        self.unwritable: set[frozenset[str]] = set()

    def _checkWritable(self, what: str, domains: tuple[str, ...] = ()) -> None:
        if self.failWrites:
            raise StoreError(f"memory:{what}", "cannot be written: disk full")
        if frozenset(domains) in self.unwritable:
            raise StoreError(f"memory:{what}", "cannot be written: file name too long")

    def loadAccount(self, acmeURL: str) -> AccountRecord | None:
        data = self.accounts.get(acmeURL)
        return AccountRecord.fromJSON(data) if data is not None else None

    def saveAccount(self, acmeURL: str, record: AccountRecord) -> None:
        self._checkWritable("account")
        self.accounts[acmeURL] = record.toJSON()

    def loadCertificate(self, domains: tuple[str, ...]) -> CertifiedKey | None:
        pem = self.certificates.get(domains)
        return CertifiedKey.fromPEM(pem) if pem is not None else None

    def saveCertificate(self, domains: tuple[str, ...], certifiedKey: CertifiedKey) -> str:
        self._checkWritable("_".join(domains), domains)
        self.certificates[domains] = certifiedKey.toPEM()
        return "memory:" + "_".join(domains)

    def checkCertificateWritable(self, domains: tuple[str, ...]) -> None:
        self._checkWritable("_".join(domains), domains)

    def loadRenewalState(self, domains: tuple[str, ...]) -> dict[str, Any] | None:
        text = self.states.get(domains)
        return json.loads(text) if text is not None else None

    def saveRenewalState(self, domains: tuple[str, ...], state: dict[str, Any]) -> None:
        self._checkWritable("state", domains)
        self.states[domains] = json.dumps(state)

    def loadProvisionalSigner(self) -> bytes | None:
        return self.signer

    def saveProvisionalSigner(self, pem: bytes) -> None:
        self._checkWritable("signer")
        self.signer = pem
