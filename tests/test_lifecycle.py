"""
The certificate lifecycle over simulated months: renewal policy, schedule,
ARI, profiles, warnings and retries, against the in-memory fake CA.
"""

from __future__ import annotations

from acme import messages

from letsencrypt_resource.acmeclient import certificateID
from letsencrypt_resource.policy import emergencyTime, planRenewal
from letsencrypt_resource.testing import advanceThrough, runUntilFired
from tests.helpers.resourcecase import DAY, ResourceTestCase

HOUR = 3600.0


class SimulatedMonthsTests(ResourceTestCase):
    """
    Months of simulated time for each lifetime.
    """

    def watch(self, days: float, step: float) -> list[tuple[object, float, float, float]]:
        """
        Advance C{days}, C{step} seconds at a time; check every consumer
        always holds a valid certificate, and return, for each certificate
        replaced, its names, notBefore, notAfter and when it was replaced.
        """
        replaced = []
        last = {name: c.received[-1] for name, c in self.consumers.items()}
        end = self.reactor.seconds() + days * DAY
        while self.reactor.seconds() < end:
            advanceThrough(self.reactor, step)
            now = self.reactor.seconds()
            for name, consumer in self.consumers.items():
                current = consumer.received[-1]
                self.assertGreater(current.notAfter.timestamp(), now, name)
                if current is not last[name]:
                    old = last[name]
                    if not old.provisional:
                        replaced.append(
                            (
                                frozenset(old.domains),
                                old.notBefore.timestamp(),
                                old.notAfter.timestamp(),
                                now,
                            )
                        )
                    last[name] = current
        return replaced

    def assertRenewedInTime(self, lifetime: float, days: float) -> None:
        self.server.validity = lifetime
        self.start()
        replaced = self.watch(days, lifetime / 200)
        self.assertGreater(len(replaced), 0)
        for _, notBefore, notAfter, at in replaced:
            self.assertLess(at, emergencyTime(notBefore, notAfter))
            self.assertGreaterEqual(at, planRenewal(notBefore, notAfter).at)
        # Two domain sets, one order per renewal: no storm of requests.
        renewals = len(self.server.orderTimes)
        self.assertEqual(renewals, 2 + len({r[:3] for r in replaced}))
        self.assertLess(len(self.server.requests), 12 * renewals + 10)
        self.assertNotIn(20114, self.eventIDs())
        self.assertNotIn(20017, self.eventIDs())

    def test_ninetyDays(self) -> None:
        """
        90-day certificates over seven months are renewed at 60 days.
        """
        self.assertRenewedInTime(90 * DAY, 210)

    def test_fortyFiveDays(self) -> None:
        """
        45-day certificates over four months.
        """
        self.assertRenewedInTime(45 * DAY, 120)

    def test_sixDays(self) -> None:
        """
        6-day certificates over a month, although the regular check runs
        once a day: the resource wakes up for each renewal.
        """
        self.assertRenewedInTime(6 * DAY, 30)

    def test_hourLong(self) -> None:
        """
        Certificates of an hour over half a day.
        """
        self.assertRenewedInTime(HOUR, 0.5)


class RenewalInformationTests(ResourceTestCase):
    """
    ACME Renewal Information (RFC 9773).
    """

    def setUp(self) -> None:
        super().setUp()
        self.server.offerRenewalInfo = True

    def test_renewsInsideWindowWithReplaces(self) -> None:
        """
        A renewal happens at the picked point of the CA's window, and the
        order names the certificate it replaces.
        """
        self.start()
        old = self.consumers["reports"].received[-1]
        identifier = certificateID(old.certificate)
        issued = old.notBefore.timestamp()
        self.server.renewalWindows[identifier] = (issued + 20 * DAY, issued + 22 * DAY)
        advanceThrough(self.reactor, 19 * DAY)
        self.assertIs(self.consumers["reports"].received[-1], old)
        advanceThrough(self.reactor, 4 * DAY)
        new = self.consumers["reports"].received[-1]
        self.assertIsNot(new, old)
        self.assertTrue(issued + 20 * DAY <= new.notBefore.timestamp() <= issued + 22 * DAY)
        replacing = [o for o in self.server.newOrders if o.replaces == identifier]
        self.assertEqual(len(replacing), 1)
        self.assertIn(20159, self.eventIDs())

    def test_windowMovedEarlier(self) -> None:
        """
        When the CA moves the window into the past (as for a revocation),
        the certificate is renewed at the next ARI check, as its
        Retry-After says.
        """
        self.server.ariRetryAfter = 3 * 3600
        self.start()
        old = self.consumers["reports"].received[-1]
        now = self.reactor.seconds()
        self.server.renewalWindows[certificateID(old.certificate)] = (now - 2 * HOUR, now - HOUR)
        advanceThrough(self.reactor, 3 * HOUR + 60)
        self.assertIsNot(self.consumers["reports"].received[-1], old)

    def test_emergencyWhateverARISays(self) -> None:
        """
        A window past the emergency threshold (15 days before expiry) does
        not delay the renewal past it, and no expiry warning is raised.
        """
        self.start()
        old = self.consumers["reports"].received[-1]
        issued = old.notBefore.timestamp()
        far = (issued + 89 * DAY, issued + 89.5 * DAY)
        self.server.renewalWindows[certificateID(old.certificate)] = far
        advanceThrough(self.reactor, 74 * DAY)
        self.assertIs(self.consumers["reports"].received[-1], old)
        advanceThrough(self.reactor, 2 * DAY)
        self.assertIsNot(self.consumers["reports"].received[-1], old)
        self.assertNotIn(20114, self.eventIDs())

    def test_ariFailureFallsBack(self) -> None:
        """
        When the renewal information cannot be fetched, 20161 says so and
        the lifetime rule still renews on time.
        """
        self.server.fail("/renewal-info/", 500, body=b"down", times=None)
        self.start()
        old = self.consumers["reports"].received[-1]
        advanceThrough(self.reactor, 61 * DAY)
        self.assertIsNot(self.consumers["reports"].received[-1], old)
        self.assertIn(20161, self.eventIDs())


class ProfileTests(ResourceTestCase):
    """
    Certificate profiles.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server.profiles = {"default": 90 * DAY, "shortlived": 6 * DAY}

    def test_profileRequested(self) -> None:
        """
        The configured profile is asked for in every order.
        """
        self.start(profile="shortlived")
        self.assertEqual({o.profile for o in self.server.newOrders}, {"shortlived"})
        certificate = self.consumers["reports"].received[-1]
        lifetime = certificate.notAfter - certificate.notBefore
        self.assertEqual(lifetime.total_seconds(), 6 * DAY)

    def test_profileNotOffered(self) -> None:
        """
        A profile the CA does not list fails with an error naming the
        option and the profiles offered, and no order is made.
        """
        self.start(profile="tlsserver")
        [text, _] = self.eventTexts(20017)
        self.assertIn("option 'profile'", text)
        self.assertIn("'tlsserver'", text)
        self.assertIn("default, shortlived", text)
        self.assertEqual(self.server.newOrders, [])


class KeyTests(ResourceTestCase):
    """
    Keys across renewals.
    """

    def test_newKeyEachTime(self) -> None:
        """
        By default each renewal has a new key.
        """
        resource = self.start()
        first = self.consumers["reports"].received[-1]
        runUntilFired(self.reactor, resource.check(force=True))
        second = self.consumers["reports"].received[-1]
        self.assertNotEqual(first.keyPEM, second.keyPEM)

    def test_reuseKey(self) -> None:
        """
        With C{reuse_key}, renewals keep the key, until the key type changes.
        """
        resource = self.start(reuseKey=True)
        first = self.consumers["reports"].received[-1]
        runUntilFired(self.reactor, resource.check(force=True))
        self.assertEqual(self.consumers["reports"].received[-1].keyPEM, first.keyPEM)
        resource.stopService()
        resource = self.start(reuseKey=True, keyType="ecdsa-p384")
        runUntilFired(self.reactor, resource.check(force=True))
        self.assertNotEqual(self.consumers["reports"].received[-1].keyPEM, first.keyPEM)


class FailureTests(ResourceTestCase):
    """
    Failures over time: warnings, retries, restarts.
    """

    def test_warnsUntilReplaced(self) -> None:
        """
        When renewals keep failing, 20114 is logged at each check once less
        than 15 days are left, with the last error, until a renewal works.
        """
        self.start()
        self.server.refuse.add("reports.example.test")
        advanceThrough(self.reactor, 74 * DAY)
        self.assertNotIn(20114, self.eventIDs())
        advanceThrough(self.reactor, 3 * DAY)
        warnings = self.eventTexts(20114)
        self.assertGreaterEqual(len(warnings), 3)
        self.assertIn("reports-https", warnings[-1])
        self.assertIn("unauthorized", warnings[-1])
        self.server.refuse.clear()
        advanceThrough(self.reactor, DAY)
        count = len(self.eventTexts(20114))
        advanceThrough(self.reactor, 3 * DAY)
        self.assertEqual(len(self.eventTexts(20114)), count)

    def test_retryStateSurvivesRestart(self) -> None:
        """
        A restart during a retry wait does not try again before the wait
        ends, so a restart loop cannot hammer the CA.
        """
        problem = messages.Error.with_code("rateLimited", detail="slow down")
        self.server.fail(
            "/new-order", 429, problem=problem, headers={"Retry-After": "7200"}, times=None
        )
        resource = self.start()
        orders = len(self.server.newOrders)
        for _ in range(5):
            resource.stopService()
            self.reactor.advance(60)
            resource = self.start()
        self.assertEqual(len(self.server.newOrders), orders)
        self.server.faults.clear()
        advanceThrough(self.reactor, 7200)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        self.assertIn(20160, self.eventIDs())
