"""
An order cut short by a restart, against a real pebble: the next start
resumes it, and the CA sees one order.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from zope.interface.registry import Components

from letsencrypt_resource.config import ResourceOptions
from letsencrypt_resource.httpclient import loadCABundle, makeHTTPClient
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.pebble import RunningTestCA, freeTCPPort
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.testing import RecordingConsumer
from tests.helpers.pebblecase import TestCACase
from tests.helpers.resourcecase import resourceOptions

DOMAINS = ("reports.example.test",)


class CutOrderTests(TestCACase):
    """
    A resource stopped right after pebble created its order.
    """

    def makeResource(
        self, options: ResourceOptions, testCA: RunningTestCA
    ) -> tuple[LetsEncryptResource, RecordingConsumer]:
        registry = Components()
        consumer = RecordingConsumer("reports-https", DOMAINS)
        registry.registerUtility(consumer, ICertificateConsumer, name="reports")
        http, pool = makeHTTPClient(reactor, loadCABundle(testCA.caFile))
        self.addCleanup(pool.closeCachedConnections)
        storage = DirectoryStorage(options.stateDirectory, reactor)
        resource = LetsEncryptResource(options, registry, storage, reactor, http, closeStorage=True)
        return resource, consumer

    def cutOnceOrdered(self, resource: LetsEncryptResource) -> Deferred[None]:
        """
        Make C{resource} stop as soon as it saved the order pebble created,
        or resumed the order an earlier start saved, before it answers any
        challenge.

        @return: fires once it has stopped.
        """
        stopped: Deferred[None] = Deferred()
        run = resource.runWrite

        def cut() -> None:
            if resource.running:
                reactor.callLater(0, lambda: resource.stopService().chainDeferred(stopped))

        def runThenCut(function: Any, *args: Any) -> Deferred[Any]:
            done = run(function, *args)
            if function.__name__ == "saveRenewalState" and args[1].get("pending_order"):
                done.addCallback(lambda result: (cut(), result)[1])
            return done

        def cutOnResume(event: dict[str, Any]) -> None:
            if event.get("event_id") == 20191:
                cut()

        resource.runWrite = runThenCut
        globalLogPublisher.addObserver(cutOnResume)
        stopped.addBoth(lambda result: (globalLogPublisher.removeObserver(cutOnResume), result)[1])
        return stopped

    async def test_restartResumesOrder(self) -> None:
        """
        Three starts cut once pebble created the order or once they resumed
        it, then a start that runs on: each start after the first resumes
        the order (20191), with no failure and no retry wait, the last one
        gets the certificate, and pebble created a single order.
        """
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        options = resourceOptions(
            port=challengePort,
            acmeURL=testCA.directoryURL,
            stateDirectory=os.path.abspath(self.mktemp()),
            acmeCAFile=testCA.caFile,
        )
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for _ in range(3):
            resource, _ = self.makeResource(options, testCA)
            stopped = self.cutOnceOrdered(resource)
            resource.startService()
            await stopped
        resource, consumer = self.makeResource(options, testCA)
        resource.startService()
        self.addCleanup(resource.stopService)
        await resource.whenSettled()
        self.assertFalse(consumer.received[-1].provisional)
        ids = [e.get("event_id") for e in events]
        self.assertEqual(ids.count(20191), 3)
        self.assertNotIn(20192, ids)
        self.assertNotIn(20017, ids)
        with open(os.path.join(testCA.directory, "pebble.log")) as stream:
            log = stream.read()
        self.assertEqual(log.count("Added order"), 1, log[-3000:])
