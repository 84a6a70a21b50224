"""
Fallback CAs against two real pebbles: while the first is stopped, the
certificate comes from the second, with an account of its own, shown by
the account command at that CA and counted under its URL; once the first
is back, the next renewal orders from it again.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from zope.interface.registry import Components

from letsencrypt_resource.caoptions import CAOptions
from letsencrypt_resource.display import formatStatus
from letsencrypt_resource.httpclient import loadCABundle, makeHTTPClient
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.keys import keyToPEM
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.pebble import RunningTestCA, freeTCPPort, startTestCA
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.testing import RecordingConsumer
from tests.helpers.pebblecase import TestCACase
from tests.helpers.resourcecase import resourceOptions

DOMAINS = ("reports.example.test",)


def ordersIn(testCA: RunningTestCA) -> int:
    """
    How many orders C{testCA} created since it last started.
    """
    with open(os.path.join(testCA.directory, "pebble.log")) as stream:
        return stream.read().count("Added order")


class FallbackCATests(TestCACase):
    """
    A resource whose first CA is down, with a second one as fallback.
    """

    def assertStatusCA(self, resource: LetsEncryptResource, acmeURL: str) -> None:
        """
        The C{status} row of the one set, and its table, name C{acmeURL} as
        the CA that issued its certificate.
        """
        [row] = Operations(resource, reactor).status()
        self.assertEqual(row["ca"], acmeURL)
        self.assertIn(acmeURL, formatStatus([row], True, resource.options.stateDirectory))

    async def test_outageThenBack(self) -> None:
        """
        With the first pebble stopped, the attempt with it fails; the next
        attempt orders from the second pebble (event 20265), which issues
        the certificate in service, recorded as its; each pebble has its
        own account (C{account show --ca cas/second} shows the second's);
        C{status} names the second as the CA; the metrics count the failed
        attempt under the first's URL, the issued one under the second's.
        Once the first
        pebble is back, a renewal orders from it again (event 20266), and
        C{status} names the first.
        """
        challengePort = freeTCPPort()
        firstDirectory = self.mktemp()
        first = await startTestCA(reactor, firstDirectory, challengePort)
        firstPort = urlsplit(first.directoryURL).port
        await first.stop()
        second = await self.startTestCA(challengePort)
        options = resourceOptions(
            port=challengePort,
            acmeURL=first.directoryURL,
            acmeCAFile=first.caFile,
            stateDirectory=os.path.abspath(self.mktemp()),
            fallbackAfter=1,
            fallbackCAs=(
                CAOptions(
                    section="cas/second",
                    acmeURL=second.directoryURL,
                    acmeCAFile=second.caFile,
                    agreeTOS=True,
                ),
            ),
        )
        registry = Components()
        consumer = RecordingConsumer("reports-https", DOMAINS)
        registry.registerUtility(consumer, ICertificateConsumer, name="reports")
        http, pool = makeHTTPClient(reactor, loadCABundle(first.caFile))
        self.addCleanup(pool.closeCachedConnections)
        storage = DirectoryStorage(options.stateDirectory, reactor)
        resource = LetsEncryptResource(options, registry, storage, reactor, http, closeStorage=True)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        resource.startService()
        self.addCleanup(resource.stopService)
        await resource.whenSettled()
        [certificate] = resource.managed.values()
        self.assertEqual(certificate.failures, 1)
        self.assertTrue(consumer.received[-1].provisional)

        await resource.check(force=True)
        self.assertEqual(certificate.failures, 0, certificate.lastError)
        self.assertFalse(consumer.received[-1].provisional)
        assert certificate.orderedBy is not None
        self.assertEqual(certificate.orderedBy[1], second.directoryURL)
        self.assertEqual(ordersIn(second), 1)
        ids = [e.get("event_id") for e in events]
        self.assertEqual(ids.count(20265), 1)
        self.assertNotIn(20266, ids)
        self.assertStatusCA(resource, second.directoryURL)
        sample = resource.metrics.registry.get_sample_value
        attempts = "letsencrypt_renewal_attempts_total"
        self.assertEqual(sample(attempts, {"ca": first.directoryURL, "result": "failed"}), 1.0)
        self.assertEqual(sample(attempts, {"ca": second.directoryURL, "result": "issued"}), 1.0)
        shown = await Operations(resource, reactor).accountShow("cas/second")
        self.assertEqual((shown["acme_url"], shown["status"]), (second.directoryURL, "valid"))

        first = await startTestCA(reactor, firstDirectory, challengePort, acmePort=firstPort)
        self.addCleanup(first.stop)
        fromSecond = consumer.received[-1]
        await resource.check(force=True)
        self.assertEqual(certificate.failures, 0, certificate.lastError)
        self.assertIsNot(consumer.received[-1], fromSecond)
        assert certificate.orderedBy is not None
        self.assertEqual(certificate.orderedBy[1], first.directoryURL)
        self.assertEqual(ordersIn(first), 1)
        self.assertEqual(ordersIn(second), 1)
        ids = [e.get("event_id") for e in events]
        self.assertEqual(ids.count(20265), 1)
        self.assertEqual(ids.count(20266), 1)
        self.assertNotIn(20114, ids)
        self.assertStatusCA(resource, first.directoryURL)
        firstAccount = await resource.records.loadAccount(first.directoryURL)
        secondAccount = await resource.records.loadAccount(second.directoryURL)
        assert firstAccount is not None and secondAccount is not None
        self.assertNotEqual(firstAccount.url, secondAccount.url)
        self.assertEqual(shown["url"], secondAccount.url)
        self.assertNotEqual(keyToPEM(firstAccount.key), keyToPEM(secondAccount.key))
