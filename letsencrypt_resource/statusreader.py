"""
The operations command's C{status} when no server runs, without a
resource: the domain sets are made from the configured services and take
back their stored records by the rules the resource loads them by (see
L{letsencrypt_resource.setloading}), and each row is made as the server
makes it (L{statusRow}).  No consumer is registered, no private key is
parsed but where those rules read one, no certificate is put in service
(or exported), and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .certificates import CertifiedKey
from .clusterview import addClusterView
from .config import ResourceOptions, ServiceOptions
from .coroutines import deferred
from .managed import ManagedCertificate
from .setloading import SetLoader, collectSets, settingsFingerprint, storedRefusal
from .startupcollection import pausedCollection
from .statusrows import NoConsumer, statusRow
from .storage.cluster import ClusterStorage
from .storage.interface import IStorage, StorageError
from .storage.records import Records


class _Reading:
    """
    What the status reader does with the records it reads (a
    L{StoredTaker <letsencrypt_resource.setloading.StoredTaker>}): it keeps
    the certificate that the resource would put in service.
    """

    def __init__(self, clock: IReactorTime):
        self._clock = clock

    def ignored(self, certificate: ManagedCertificate, error: StorageError) -> None:
        """
        The set is shown as the resource loads it, without the record; the
        server reports the damaged record (event 20163) when it loads it.
        """

    def acceptable(self, certificate: ManagedCertificate, stored: CertifiedKey) -> bool:
        """
        Whether the resource would put C{stored} in service (see
        L{storedRefusal <letsencrypt_resource.setloading.storedRefusal>}).
        """
        return storedRefusal(certificate, stored, self._clock.seconds()) is None

    def putInService(self, certificate: ManagedCertificate, stored: CertifiedKey) -> None:
        """
        Make C{stored} the set's certificate, as the resource does before
        it hands it to the services.
        """
        certificate.current = stored


@deferred
async def offlineStatus(
    options: ResourceOptions,
    services: Iterable[ServiceOptions],
    storage: IStorage,
    clock: IReactorTime,
) -> list[dict[str, Any]]:
    """
    The C{status} rows of the resource of C{options} and its C{services},
    read from C{storage} at the time C{clock} gives, as a resource loaded
    on it, not running, gives them (see
    L{Operations.fullStatus <letsencrypt_resource.operations.Operations.fullStatus>}):
    with the cluster view on a cluster node.
    """
    consumers = [(s.section, NoConsumer(s.name, s.domains)) for s in services]
    managed = collectSets(consumers, settingsFingerprint(options))
    certificates = list(managed.values())
    loader = SetLoader(Records(storage), _Reading(clock), clock, options.checkInterval, Logger())
    await loader.loadAll(certificates)
    now = clock.seconds()
    # Thousands of rows are made and none is garbage: the collector's
    # automatic collections would go through all of them again.
    with pausedCollection():
        rows = [statusRow(certificate, options, now, False) for certificate in certificates]
    if isinstance(storage, ClusterStorage):
        await addClusterView(rows, storage, clock)
    return rows
