"""
The certificate lifecycle against a real pebble 2.10, which offers renewal
information (ARI) and profiles: short-lived certificates renewed on time in
a real run, and an ARI renewal whose order names what it replaces.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from zope.interface.registry import Components

from letsencrypt_resource.httpclient import loadCABundle, makeHTTPClient
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.pebble import RunningTestCA, freeTCPPort
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.testing import RecordingConsumer
from letsencrypt_resource.testing.pebble import setRenewalInfo
from tests.helpers.pebblecase import TestCACase
from tests.helpers.resourcecase import resourceOptions as makeOptions

#: Lifetime of the short-lived profile's certificates, in seconds.
SHORT = 8


def profiles(defaultValidity: int) -> dict[str, Any]:
    """
    Pebble 2.10's profiles: validity comes only from them.
    """
    return {
        "profiles": {
            "default": {"description": "default", "validityPeriod": defaultValidity},
            "shortlived": {"description": "short", "validityPeriod": SHORT},
        }
    }


class ModernPebbleTests(TestCACase):
    """
    A resource with one consumer, against pebble 2.10.
    """

    async def startResource(
        self, defaultValidity: int = 7776000, **options: Any
    ) -> tuple[LetsEncryptResource, RecordingConsumer, RunningTestCA]:
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(
            challengePort, modern=True, extraConfig=profiles(defaultValidity)
        )
        registry = Components()
        consumer = RecordingConsumer("reports-https", ("reports.example.test",))
        registry.registerUtility(consumer, ICertificateConsumer, name="reports")
        http, pool = makeHTTPClient(reactor, loadCABundle(testCA.caFile))
        self.addCleanup(pool.closeCachedConnections)
        resourceOptions = makeOptions(
            port=challengePort,
            acmeURL=testCA.directoryURL,
            stateDirectory=os.path.abspath(self.mktemp()),
            acmeCAFile=testCA.caFile,
            **options,
        )
        resource = LetsEncryptResource(
            resourceOptions,
            registry,
            DirectoryStorage(resourceOptions.stateDirectory, reactor),
            reactor,
            http,
            closeStorage=True,
        )
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        resource.startService()
        self.addCleanup(resource.stopService)
        await resource.whenSettled()
        return resource, consumer, testCA

    def setUp(self) -> None:
        super().setUp()
        self.requireModern()

    async def test_shortLivedRenewedOnTime(self) -> None:
        """
        With the short-lived profile, certificates of a few seconds are
        renewed at half their lifetime, again and again, so the consumer is
        never without a valid certificate, with no warning and no failure.
        """
        resource, consumer, _ = await self.startResource(profile="shortlived")
        first = consumer.received[-1]
        lifetime = (first.notAfter - first.notBefore).total_seconds()
        self.assertTrue(SHORT - 1 <= lifetime <= SHORT, lifetime)
        end = reactor.seconds() + 2.5 * SHORT
        while reactor.seconds() < end:
            await deferLater(reactor, 0.25, lambda: None)
            current = consumer.received[-1]
            self.assertGreater(current.notAfter.timestamp(), reactor.seconds())
        renewed = [c for c in consumer.received if not c.provisional]
        self.assertGreaterEqual(len(renewed), 4)
        ids = [e.get("event_id") for e in self.events]
        self.assertNotIn(20114, ids)
        self.assertNotIn(20017, ids)

    async def test_ariRenewalReplaces(self) -> None:
        """
        When pebble's renewal window for the certificate has come, the next
        ARI check renews it with an order that names the old certificate.
        """
        resource, consumer, testCA = await self.startResource()
        old = consumer.received[-1]
        now = datetime.datetime.now(datetime.timezone.utc)
        await setRenewalInfo(
            testCA,
            old.certificatePEM,
            now - datetime.timedelta(hours=2),
            now - datetime.timedelta(hours=1),
        )
        [managed] = resource.managed.values()
        self.assertGreater(managed.ariNextCheck, reactor.seconds())
        managed.ariNextCheck = 0
        await resource.check()
        self.assertIsNot(consumer.received[-1], old)
        with open(os.path.join(testCA.directory, "pebble.log")) as stream:
            log = stream.read()
        self.assertIn("is a replacement of", log)
