"""
Tests for L{letsencrypt_resource.managed}: what follows from a set's
certificate in service is worked out once per certificate, and follows
every change.
"""

from __future__ import annotations

import datetime
import gc
import math
import weakref
from collections.abc import Iterable

import attrs
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import managed
from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.managed import NAMES_CHANGED, NO_CERTIFICATE, ManagedCertificate
from letsencrypt_resource.policy import RenewalPlan, emergencyTime, planRenewal, warningLevel
from letsencrypt_resource.provisional import makeProvisional

from .helpers import newSigner, provisionalFor, utcNow

DOMAINS = ("a.example.com",)


def issued(signer: CertifiedKey) -> CertifiedKey:
    """
    A certificate for L{DOMAINS}, valid now, taken for a CA-issued one.
    """
    return attrs.evolve(provisionalFor(signer, DOMAINS), provisional=False)


class KeptAnswersTests(SynchronousTestCase):
    """
    L{ManagedCertificate.issued}, L{ManagedCertificate.plan} and
    L{ManagedCertificate.urgentSince} are worked out once for the
    certificate in service, its renewal window and pick.
    """

    def setUp(self) -> None:
        self.signer = newSigner()

    def test_workedOutOnce(self) -> None:
        """
        Looking at a set again and again (each check looks at every set
        twice) plans its renewal and finds its emergency time once.
        """
        planned: list[object] = []
        emergencies: list[object] = []

        def countedPlan(*args: object) -> RenewalPlan:
            planned.append(args)
            return planRenewal(*args)  # type: ignore[arg-type]

        def countedEmergency(notBefore: float, notAfter: float) -> float:
            emergencies.append((notBefore, notAfter))
            return emergencyTime(notBefore, notAfter)

        self.patch(managed, "planRenewal", countedPlan)
        self.patch(managed, "emergencyTime", countedEmergency)
        certificate = ManagedCertificate(DOMAINS)
        certificate.current = issued(self.signer)
        events = {certificate.nextEvent(False) for _ in range(5)}
        self.assertEqual(len(events), 1)
        self.assertEqual((len(planned), len(emergencies)), (1, 1))

    def test_followsChanges(self) -> None:
        """
        The answers follow each change of the certificate in service, of
        the renewal window and of where in it to renew.
        """
        certificate = ManagedCertificate(DOMAINS)
        self.assertIsNone(certificate.issued)
        self.assertEqual(certificate.plan(), RenewalPlan(0.0, NO_CERTIFICATE))
        self.assertEqual(certificate.urgentSince(), 0.0)
        first = issued(self.signer)
        certificate.current = first
        self.assertIs(certificate.issued, first)
        self.assertEqual(certificate.plan(), planRenewal(*first.validity))
        self.assertEqual(certificate.urgentSince(), emergencyTime(*first.validity))
        window = (first.validity[0] + 10.0, first.validity[0] + 20.0)
        certificate.ariWindow = window
        self.assertEqual(certificate.plan(), planRenewal(*first.validity, window, 0.5))
        certificate.ariPick = 0.0
        self.assertEqual(certificate.plan(), planRenewal(*first.validity, window, 0.0))
        moved = (window[0] + 5.0, window[1])
        certificate.ariWindow = moved
        self.assertEqual(certificate.plan(), planRenewal(*first.validity, moved, 0.0))
        certificate.ariWindow = None
        later = attrs.evolve(
            makeProvisional(self.signer, DOMAINS, utcNow() + datetime.timedelta(days=30)),
            provisional=False,
        )
        certificate.current = later
        self.assertIs(certificate.issued, later)
        self.assertNotEqual(later.validity, first.validity)
        self.assertEqual(certificate.plan(), planRenewal(*later.validity))
        self.assertEqual(certificate.urgentSince(), emergencyTime(*later.validity))
        certificate.current = attrs.evolve(
            provisionalFor(self.signer, ("b.example.com",)), provisional=False
        )
        self.assertIsNone(certificate.issued)
        self.assertEqual(certificate.urgentSince(), 0.0)
        certificate.current = provisionalFor(self.signer, DOMAINS)
        self.assertIsNone(certificate.issued)
        self.assertEqual(certificate.plan(), RenewalPlan(0.0, NO_CERTIFICATE))
        certificate.current = first
        certificate.forcedReason = "forced"
        self.assertEqual(certificate.plan(), RenewalPlan(0.0, "forced"))
        certificate.forcedReason = None
        self.assertEqual(certificate.plan(), planRenewal(*first.validity))

    def test_replacedFreed(self) -> None:
        """
        The answers kept do not keep a replaced certificate (and its
        private key) alive until the next look at the set.
        """
        certificate = ManagedCertificate(DOMAINS)
        first = issued(self.signer)
        certificate.current = first
        certificate.nextEvent(False)
        old = weakref.ref(first)
        del first
        certificate.current = issued(self.signer)
        gc.collect()
        self.assertIsNone(old())
        self.assertIs(certificate.issued, certificate.current)

    def test_renewedNotUrgent(self) -> None:
        """
        After a renewal, the emergency time and the retry after a failure
        follow the new certificate, not the one it replaced: a renewed set
        is not taken for urgent on the old certificate's emergency time.
        """
        certificate = ManagedCertificate(DOMAINS)
        first = issued(self.signer)
        certificate.current = first
        oldUrgent = certificate.urgentSince()
        later = attrs.evolve(
            makeProvisional(self.signer, DOMAINS, utcNow() + datetime.timedelta(days=30)),
            provisional=False,
        )
        certificate.current = later
        newUrgent = emergencyTime(*later.validity)
        self.assertLess(oldUrgent + 1.0, newUrgent)
        certificate.lastFailure = oldUrgent - 1.0
        certificate.nextAttempt = newUrgent - 1.0
        self.assertEqual(certificate.retryAt(), newUrgent - 1.0)
        self.assertEqual(certificate.urgentSince(), newUrgent)
        self.assertIsNone(certificate.emergencyPace(newUrgent - 1.0))

    def test_carriesRaises(self) -> None:
        """
        When finding whether a new certificate carries the set's names
        raises, nothing kept of the certificate before it answers for it:
        the next look works it out again.
        """
        certificate = ManagedCertificate(DOMAINS)
        certificate.current = issued(self.signer)
        certificate.nextEvent(False)
        other = attrs.evolve(provisionalFor(self.signer, ("b.example.com",)), provisional=False)
        fields = {f.alias: getattr(other, f.name) for f in attrs.fields(CertifiedKey) if f.init}
        certificate.current = RaisingOnce(**fields)
        self.assertRaises(ValueError, lambda: certificate.issued)
        self.assertIsNone(certificate.issued)
        self.assertEqual(certificate.urgentSince(), 0.0)
        self.assertEqual(certificate.plan(), RenewalPlan(0.0, NAMES_CHANGED))


class WarnNowTests(SynchronousTestCase):
    """
    L{ManagedCertificate.warnNow} answers from the kept emergency time
    before it, where a check finds every healthy set.
    """

    def setUp(self) -> None:
        self.signer = newSigner()
        self.levels: list[float] = []

        def countedLevel(notBefore: float, notAfter: float, now: float) -> int:
            self.levels.append(now)
            return warningLevel(notBefore, notAfter, now)

        self.patch(managed, "warningLevel", countedLevel)

    def test_beforeEmergency(self) -> None:
        """
        Before the emergency time, no warning is due and the warning level
        is not worked out; from it on, the warnings are as the level says.
        """
        certificate = ManagedCertificate(DOMAINS)
        certificate.current = issued(self.signer)
        urgent = certificate.urgentSince()
        self.assertFalse(certificate.warnNow(urgent - 86400.0))
        self.assertFalse(certificate.warnNow(math.nextafter(urgent, 0.0)))
        self.assertEqual(self.levels, [])
        notAfter = certificate.current.validity[1]
        self.assertTrue(certificate.warnNow(notAfter - 3600.0))
        self.assertEqual(self.levels, [notAfter - 3600.0])

    def test_sameAsTheLevel(self) -> None:
        """
        Just before the emergency time of certificates of many lifetimes
        (the float before it), the level is 0 too: the shortcut never hides
        a warning.
        """
        for days in (1, 3, 6, 7, 10, 45, 89, 90, 91, 397):
            notBefore = 1_800_000_000.123 + days
            notAfter = notBefore + days * 86400.0 + 0.7
            before = math.nextafter(emergencyTime(notBefore, notAfter), 0.0)
            self.assertEqual(warningLevel(notBefore, notAfter, before), 0, days)

    def test_namesChanged(self) -> None:
        """
        A certificate in service for other names (no emergency time kept)
        is warned about as its level says.
        """
        certificate = ManagedCertificate(("b.example.com",))
        certificate.current = issued(self.signer)
        self.assertIsNone(certificate.issued)
        notAfter = certificate.current.validity[1]
        self.assertTrue(certificate.warnNow(notAfter - 3600.0))
        self.assertFalse(certificate.warnNow(notAfter - 80 * 86400.0))
        self.assertEqual(len(self.levels), 2)


class RaisingOnce(CertifiedKey):
    """
    A certificate whose first L{CertifiedKey.carries} raises.
    """

    def carries(self, domains: Iterable[str]) -> bool:
        """
        Raise the first time, then answer as a certificate does.
        """
        if "raised" not in vars(self):
            vars(self)["raised"] = True
            raise ValueError("unreadable names")
        return super().carries(domains)
