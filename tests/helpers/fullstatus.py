"""
The status of a stored state as a whole resource gives it, not running:
what the operations command printed without a server before it read the
state itself (L{letsencrypt_resource.statusreader}), for the tests that
compare both.
"""

from __future__ import annotations

from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from zope.interface.registry import Components

from letsencrypt_resource.config import ResourceOptions, ServiceOptions
from letsencrypt_resource.coroutines import deferred
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.statusrows import NoConsumer
from letsencrypt_resource.storage.interface import IStorage
from letsencrypt_resource.testing import FakeACMEServer
from tests.helpers.resourcecase import synchronously


@deferred
async def resourceStatus(
    options: ResourceOptions,
    services: tuple[ServiceOptions, ...],
    storage: IStorage,
    reactor: Any,
) -> list[dict[str, Any]]:
    """
    The status rows of a resource on C{storage}, loaded, not running, its
    consumers the C{services}, each registered under its section's name.
    """
    registry = Components()
    for service in services:
        registry.registerUtility(
            NoConsumer(service.name, service.domains), ICertificateConsumer, name=service.section
        )
    resource = LetsEncryptResource(
        options,
        registry,
        storage,
        reactor,
        RequestTraversalAgent(FakeACMEServer(reactor)),
        runInThread=synchronously,
        automatic=False,
    )
    loaded: Deferred[None] = resource.load()
    await loaded
    rows: list[dict[str, Any]] = await Operations(
        resource, reactor, serverRunning=False
    ).fullStatus()
    return rows
