"""
An L{IStorage} that seals every value it stores in another one (see
L{sealing}): what the other store keeps, a database and its dumps, holds
no value in clear, and a value that was not sealed with this key for its
storage key is refused when read.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from .interface import ILease, IStorage, StorageError, checkKey, checkValue
from .sealing import Sealer, Unsealable

#: What C{loadMany} gives (see L{IStorage.loadMany}).
_Found = dict[str, bytes | StorageError | None]


class SealedValueRefused(StorageError):
    """
    A stored value does not open with this node's key: it was sealed with
    another key file, changed, or moved from another key.
    """


@implementer(IStorage)
class SealedStorage:
    """
    Seals the values stored in C{inner}, and opens those read from it; the
    rest (keys, leases, watches) is C{inner}'s own.
    """

    def __init__(
        self,
        inner: IStorage,
        sealer: Sealer,
        opened: Callable[[str, str], None] = lambda key, node: None,
    ):
        """
        @param opened: Called with the key and the name of the node that
            sealed it, for each value opened.
        """
        self._inner = inner
        self._sealer = sealer
        self._opened = opened
        self.exclusive = getattr(inner, "exclusive", False)

    def _open(self, key: str, data: bytes | None) -> bytes | None:
        if data is None:
            return None
        try:
            node, value = self._sealer.unseal(key, data)
        except Unsealable as error:
            raise SealedValueRefused(key, str(error)) from None
        self._opened(key, node)
        return value

    def load(self, key: str) -> Deferred[bytes | None]:
        return self._inner.load(key).addCallback(lambda data: self._open(key, data))

    def loadMany(self, keys: Collection[str]) -> Deferred[dict[str, bytes | StorageError | None]]:
        def opened(
            found: dict[str, bytes | StorageError | None],
        ) -> dict[str, bytes | StorageError | None]:
            return {
                key: data if isinstance(data, StorageError) else self._open(key, data)
                for key, data in found.items()
            }

        return self._inner.loadMany(keys).addCallback(opened)

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        try:
            data = checkValue(checkKey(key), value)
        except StorageError:
            return fail()
        return self._inner.store(key, self._sealer.seal(key, data), fence)

    def delete(self, key: str, fence: ILease | None = None) -> Deferred[None]:
        return self._inner.delete(key, fence)

    def list(self, prefix: str) -> Deferred[list[str]]:
        return self._inner.list(prefix)

    def lease(self, name: str, seconds: float) -> Deferred[ILease | None]:
        return self._inner.lease(name, seconds)

    def watch(self, prefix: str, callback: Callable[[str], object]) -> Deferred[Callable[[], None]]:
        return self._inner.watch(prefix, callback)

    def close(self) -> Deferred[None]:
        return self._inner.close()
