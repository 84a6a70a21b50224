"""
The writes of a domain set made outside any order, under the set's lease
taken for the write alone: its renewal state, and a certificate whose
order's lease was taken over before it was stored.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from .certificates import CertifiedKey
from .coroutines import deferred
from .leasing import orderLease, underOwnLease
from .storage.interface import ILease, StorageError
from .storage.records import Records, certificateKey


@deferred
async def saveStateAlone(
    records: Records, log: Logger, domains: tuple[str, ...], state: dict[str, Any]
) -> None:
    """
    Save C{state} for C{domains} under the set's lease taken for it,
    unless another user of the storage holds that lease.
    """

    async def save(lease: ILease) -> None:
        await records.saveRenewalState(domains, state, lease)

    await underOwnLease(records.storage, orderLease(domains), log, save)


@deferred
async def storeIfNewer(
    records: Records, log: Logger, domains: tuple[str, ...], issued: CertifiedKey
) -> str:
    """
    Store C{issued} for C{domains} under the set's lease taken for it,
    unless the storage holds a certificate that ends no earlier.

    @raise StorageError: when another user of the storage holds the
        lease (the write is tried again at the retry pace).
    @raise Superseded: when the storage holds a newer certificate (the
        write is moot).
    """

    async def store(lease: ILease) -> str:
        try:
            stored = await records.loadCertificate(domains)
        except StorageError:
            stored = None
        if stored is not None and stored.notAfter >= issued.notAfter:
            raise Superseded(certificateKey(domains), "the storage holds a newer one")
        return await records.saveCertificate(domains, issued, lease)

    free, key = await underOwnLease(records.storage, orderLease(domains), log, store)
    if not free or key is None:
        raise StorageError(certificateKey(domains), "another user of the storage holds its lease")
    return key


class Superseded(StorageError):
    """
    A certificate was not stored: the storage holds one that ends no
    earlier.
    """
