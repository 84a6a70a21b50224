"""
Tests for how L{StoredChanges} finds the domain set of a certificate
another node stored: through an index of the sets by key, not by comparing
each change with every set (10,000 changes caught up after an outage, at
10,000 sets, made 10^8 comparisons).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import storedchanges
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.storage.memory import MemoryStorage
from letsencrypt_resource.storage.records import Records, certificateKey
from letsencrypt_resource.storedchanges import StoredChanges
from letsencrypt_resource.testing import MemoryStore


def names(index: int) -> tuple[str, ...]:
    """
    The names of set C{index}.
    """
    return (f"set{index}.example.com", f"www.set{index}.example.com")


class ChangeIndexTests(SynchronousTestCase):
    """
    Changes reported by the watch, mapped to the sets they are about.
    """

    def setUp(self) -> None:
        self.managed: dict[frozenset[str], ManagedCertificate] = {}
        for index in range(200):
            self.add(index)
        store = MemoryStore()
        self.changes = StoredChanges(
            Any,  # type: ignore[arg-type]
            Records(store),
            self.managed,
            Any,  # type: ignore[arg-type]
            Clock(),
            Logger(),
        )
        self.loaded: list[tuple[str, ...]] = []
        self.changes._loadWatched = lambda c: self.loaded.append(c.domains)  # type: ignore[method-assign]
        self.other = MemoryStorage(store.shared)
        self.changes.start()
        self.addCleanup(self.changes.stop)

    def add(self, index: int) -> ManagedCertificate:
        """
        Manage set C{index}.
        """
        certificate = self.managed[frozenset(names(index))] = ManagedCertificate(names(index))
        return certificate

    def storedElsewhere(self, index: int) -> None:
        """
        Another node stores a value at the certificate key of set C{index}.
        """
        self.successResultOf(self.other.store(certificateKey(names(index)), b"pem"))

    def test_linear(self) -> None:
        """
        A change to each of N sets computes N keys in all (the index, made
        once), not N per change; each change reaches its set only.
        """
        computed: list[tuple[str, ...]] = []

        def counting(domains: tuple[str, ...]) -> str:
            computed.append(domains)
            return certificateKey(domains)

        self.patch(storedchanges, "certificateKey", counting)
        for index in range(200):
            self.storedElsewhere(index)
        self.assertEqual(self.loaded, [names(i) for i in range(200)])
        self.assertEqual(len(computed), 200)

    def test_otherKeysIgnored(self) -> None:
        """
        A change to a set this node does not manage reaches no set.
        """
        self.storedElsewhere(999)
        self.assertEqual(self.loaded, [])

    def test_setsChanged(self) -> None:
        """
        After the sets changed (a reload), a set added is found, and a set
        dropped is not loaded, even before the index is made again.
        """
        self.storedElsewhere(0)
        del self.managed[frozenset(names(1))]
        self.storedElsewhere(1)
        self.add(500)
        self.changes.setsChanged()
        self.storedElsewhere(500)
        self.assertEqual(self.loaded, [names(0), names(500)])
