"""
In-memory fakes of the package's interfaces: L{RecordingConsumer} is an
L{ICertificateConsumer} that remembers what it was given; L{MemoryStore} is
an L{IStorage} in memory whose writes can be made to fail, read and
written at once by tests through its records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from ..certificates import CertifiedKey
from ..interfaces import ICertificateConsumer
from ..storage.interface import ILease, StorageError
from ..storage.memory import MemoryStorage, SharedMemory
from ..storage.records import SIGNER_KEY, Records, accountKey, certificateKey


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


def fired(result: Deferred[Any]) -> Any:
    """
    What C{result}, a Deferred already fired (as those of a
    L{MemoryStorage} are), holds; its failure is raised.
    """
    outcome: list[Any] = []
    result.addBoth(outcome.append)
    [value] = outcome
    if isinstance(value, Failure):
        value.raiseException()
    return value


class MemoryStore(MemoryStorage):
    """
    A L{MemoryStorage} of its own, whose writes fail when told to, for the
    resource's tests.  Every method of L{Records} is also offered here,
    answering at once (C{store.loadRenewalState(domains)}), for tests to
    look at and change what is stored.

    @ivar failWrites: When true, every write fails with L{StorageError}.
    @ivar unwritable: Domain sets whose certificate and renewal state
        cannot be stored, as a name too long for a file system: their
        writes and L{checkCertificateWritable} fail with L{StorageError}.
    @ivar values: What is stored, by key.
    @ivar shared: Its place: a L{MemoryStorage} on it is another node.
    """

    def __init__(self, clock: IReactorTime | None = None):
        """
        @param clock: What times the leases; by default a clock of its own
            that never moves, so that no lease expires.
        """
        self.shared = SharedMemory(Clock() if clock is None else clock)
        super().__init__(self.shared)
        self.values = self.shared.values
        self.records = Records(self)
        self.failWrites = False
        self.unwritable: set[frozenset[str]] = set()

    def writeProblem(self, key: str) -> str | None:
        """
        Why C{key} cannot be written now, or C{None}.
        """
        if self.failWrites:
            return "cannot be written: disk full"
        if _domainsOf(key) in self.unwritable:
            return "cannot be written: file name too long"
        return None

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        problem = self.writeProblem(key)
        if problem is not None:
            return fail(StorageError(f"memory:{key}", problem))
        return super().store(key, value, fence)

    def checkCertificateWritable(self, domains: tuple[str, ...]) -> None:
        """
        Fail as writes of C{domains}'s certificate would.

        @raise StorageError: when they would.
        """
        problem = self.writeProblem(certificateKey(domains))
        if problem is not None:
            raise StorageError(f"memory:{'_'.join(domains)}", problem)

    def keys(self, prefix: str) -> list[str]:
        """
        The keys stored under C{prefix}.
        """
        return sorted(k for k in self.values if k.startswith(prefix))

    def accountURLs(self, *acmeURLs: str) -> list[str]:
        """
        Those of C{acmeURLs} that have a stored account, when every
        account stored is for one of them.

        @raise AssertionError: when some account stored is for another.
        """
        found = [u for u in acmeURLs if accountKey(u) in self.values]
        if len(found) != len(self.keys("accounts/")):
            raise AssertionError("an account is stored for another ACME directory")
        return found

    def clear(self, prefix: str) -> None:
        """
        Remove every value stored under C{prefix}, without telling anyone.
        """
        for key in self.keys(prefix):
            del self.values[key]

    @property
    def signer(self) -> bytes | None:
        """
        The provisional signer stored, if any.
        """
        return self.values.get(SIGNER_KEY)

    @signer.setter
    def signer(self, pem: bytes) -> None:
        self.values[SIGNER_KEY] = pem

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """
        The method C{name} of L{Records}, answering at once.
        """
        if name.startswith("_") or not hasattr(Records, name):
            raise AttributeError(name)
        method = getattr(self.records, name)
        return lambda *args, **kwargs: fired(method(*args, **kwargs))


def _domainsOf(key: str) -> frozenset[str] | None:
    """
    The domain set whose certificate or renewal state C{key} holds, if any
    (no domain name holds C{_}).
    """
    folder, _, name = key.partition("/")
    if folder not in ("certificates", "renewal"):
        return None
    return frozenset(name.rsplit(".", 1)[0].split("_"))
