"""
Tests for how L{LetsEncryptResource} is composed of its parts: the order
in which they start and stop, and the logger their events go to.
"""

from __future__ import annotations

from twisted.application.service import MultiService

from letsencrypt_resource.challengesite import ChallengeSiteService
from letsencrypt_resource.challengesweep import ChallengeSweeper
from letsencrypt_resource.domainsets import DomainSets
from letsencrypt_resource.scheduler import Scheduler
from letsencrypt_resource.testing import runUntilFired
from tests.helpers.resourcecase import ResourceTestCase

#: Challenge site listening, stored certificate loaded, certificate in use.
LISTENING, LOADED, IN_USE = 20151, 20158, 20016


class CompositionTests(ResourceTestCase):
    """
    The resource is a C{MultiService} of its parts, and behaves as one
    service.
    """

    def test_children(self) -> None:
        """
        Its child services are the challenge site, the domain sets, the
        scheduler and the sweeper of challenges left in the storage, in
        that order: each starts after the one before it.
        """
        resource = self.makeResource()
        self.assertIsInstance(resource, MultiService)
        self.assertEqual(
            [type(child) for child in resource],
            [ChallengeSiteService, DomainSets, Scheduler, ChallengeSweeper],
        )

    def test_startOrder(self) -> None:
        """
        At start, the challenge site listens (20151) before the stored
        certificates are loaded (20158) and handed to their consumers
        (20016).
        """
        first = self.start()
        runUntilFired(self.reactor, first.stopService())
        before = len(self.eventIDs())
        self.start()
        ids = [i for i in self.eventIDs()[before:] if i in (LISTENING, LOADED, IN_USE)]
        self.assertEqual(ids[:2], [LISTENING, LOADED], ids)
        self.assertEqual(ids.count(LOADED), 2, ids)
        self.assertEqual(ids.count(IN_USE), 3, ids)

    def test_eventsFromTheResource(self) -> None:
        """
        Every event of every part is logged as the resource's: its
        namespace and source are the resource's, whichever part emits it
        (the account module, which the parts use, logs as itself).
        """
        resource = self.start()
        logged = [
            e
            for e in self.events
            if "event_id" in e and e["log_namespace"] != "letsencrypt_resource.account"
        ]
        self.assertTrue({LISTENING, IN_USE, 20015} <= {e["event_id"] for e in logged})
        for event in logged:
            self.assertEqual(
                event["log_namespace"],
                "letsencrypt_resource.resource.LetsEncryptResource",
            )
            self.assertIs(event["log_source"], resource)

    def test_stopStopsEveryPart(self) -> None:
        """
        Stopping the resource stops each child service, and ends once the
        challenge site no longer listens.
        """
        resource = self.start()
        self.assertEqual(len(self.reactor.tcpServers), 1)
        runUntilFired(self.reactor, resource.stopService())
        self.assertFalse(resource.running)
        self.assertFalse(any(child.running for child in resource))
