"""
Tests for L{letsencrypt_resource.policy}: tables of cases for 90-day,
45-day and 6-day certificates.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.policy import (
    EMERGENCY_RETRY_DELAY,
    FIRST_RETRY_DELAY,
    RenewalPlan,
    emergencyRetryDelay,
    failureDelay,
    planRenewal,
    retryDelay,
    shouldWarn,
    warningLevel,
    warningThreshold,
)

DAY = 86400.0
HOUR = 3600.0
ISSUED = 1_800_000_000.0


class PlanRenewalTests(SynchronousTestCase):
    """
    Tests for L{planRenewal}.
    """

    def test_lifetimeTable(self) -> None:
        """
        Without ARI, certificates are due at two thirds of their lifetime,
        or at half of it under 10 days.
        """
        cases = [
            # (lifetime, due after issuance)
            (90 * DAY, 60 * DAY),
            (45 * DAY, 30 * DAY),
            (10 * DAY, 10 * DAY * 2 / 3),
            (6 * DAY, 3 * DAY),
            (1 * HOUR, 0.5 * HOUR),
        ]
        for lifetime, due in cases:
            plan = planRenewal(ISSUED, ISSUED + lifetime)
            self.assertEqual(plan, RenewalPlan(ISSUED + due, "lifetime"), lifetime)

    def test_ariWindowTable(self) -> None:
        """
        With an ARI window, the certificate is due at the picked point of
        it; a window past the emergency threshold is cut to it.
        """
        cases = [
            # (lifetime, window start, window end, pick, expected plan)
            (90 * DAY, 50 * DAY, 52 * DAY, 0.0, RenewalPlan(ISSUED + 50 * DAY, "ari")),
            (90 * DAY, 50 * DAY, 52 * DAY, 1.0, RenewalPlan(ISSUED + 52 * DAY, "ari")),
            (90 * DAY, 50 * DAY, 52 * DAY, 0.5, RenewalPlan(ISSUED + 51 * DAY, "ari")),
            (90 * DAY, 85 * DAY, 86 * DAY, 0.5, RenewalPlan(ISSUED + 75 * DAY, "emergency")),
            (45 * DAY, 10 * DAY, 12 * DAY, 0.25, RenewalPlan(ISSUED + 10.5 * DAY, "ari")),
            (6 * DAY, 4 * DAY, 5 * DAY, 0.5, RenewalPlan(ISSUED + 4.5 * DAY, "ari")),
            (6 * DAY, 5.8 * DAY, 5.9 * DAY, 0.0, RenewalPlan(ISSUED + 5 * DAY, "emergency")),
            (45 * DAY, 40 * DAY, 44 * DAY, 0.0, RenewalPlan(ISSUED + 37.5 * DAY, "emergency")),
            # A window in the past: due at once (its time is already gone).
            (90 * DAY, -2 * DAY, -1 * DAY, 0.5, RenewalPlan(ISSUED - 1.5 * DAY, "ari")),
        ]
        for lifetime, start, end, pick, expected in cases:
            plan = planRenewal(ISSUED, ISSUED + lifetime, (ISSUED + start, ISSUED + end), pick)
            self.assertEqual(plan.reason, expected.reason, (lifetime, start))
            self.assertAlmostEqual(plan.at, expected.at, places=3)

    def test_invertedWindow(self) -> None:
        """
        A window whose end comes before its start is taken at its start.
        """
        plan = planRenewal(ISSUED, ISSUED + 90 * DAY, (ISSUED + 50 * DAY, ISSUED), 0.7)
        self.assertEqual(plan, RenewalPlan(ISSUED + 50 * DAY, "ari"))

    def test_nonFiniteWindow(self) -> None:
        """
        A window or pick that gives no finite time is ignored: the
        certificate is due at two thirds of its lifetime.
        """
        nan, inf = float("nan"), float("inf")
        expected = RenewalPlan(ISSUED + 60 * DAY, "lifetime")
        for window, pick in [
            ((nan, nan), 0.5),
            ((ISSUED, inf), 0.5),
            ((-inf, ISSUED), 0.5),
            ((ISSUED, ISSUED + DAY), nan),
        ]:
            plan = planRenewal(ISSUED, ISSUED + 90 * DAY, window, pick)
            self.assertEqual(plan, expected, (window, pick))


class WarningTests(SynchronousTestCase):
    """
    Tests for L{shouldWarn} and L{warningThreshold}.
    """

    def test_thresholds(self) -> None:
        """
        15 days for 90-day certificates, a sixth of the lifetime for
        shorter ones.
        """
        self.assertEqual(warningThreshold(ISSUED, ISSUED + 90 * DAY), 15 * DAY)
        self.assertEqual(warningThreshold(ISSUED, ISSUED + 365 * DAY), 15 * DAY)
        self.assertEqual(warningThreshold(ISSUED, ISSUED + 45 * DAY), 7.5 * DAY)
        self.assertEqual(warningThreshold(ISSUED, ISSUED + 6 * DAY), 1 * DAY)

    def test_healthyCertificatesRaiseNone(self) -> None:
        """
        Up to its renewal time, no certificate of any lifetime is warned
        about; close to expiry, each is.
        """
        for lifetime in (90 * DAY, 45 * DAY, 6 * DAY, 1 * HOUR):
            plan = planRenewal(ISSUED, ISSUED + lifetime)
            self.assertFalse(shouldWarn(ISSUED, ISSUED + lifetime, plan.at), lifetime)
            self.assertTrue(
                shouldWarn(ISSUED, ISSUED + lifetime, ISSUED + lifetime * 0.9), lifetime
            )

    def test_levels(self) -> None:
        """
        The warning level is 0 before the threshold, 1 past it, and one
        more at each of 7, 3 and 1 days left, a twelfth and a twenty-fourth
        of the lifetime left, and expiry, counting only those below the
        threshold.
        """
        cases = [
            # lifetime, time left, level
            (90 * DAY, 16 * DAY, 0),
            (90 * DAY, 14 * DAY, 1),
            (90 * DAY, 7.2 * DAY, 2),  # a twelfth: 7.5 days
            (90 * DAY, 6 * DAY, 3),  # 7 days
            (90 * DAY, 3.5 * DAY, 4),  # a twenty-fourth: 3.75 days
            (90 * DAY, 2 * DAY, 5),  # 3 days
            (90 * DAY, 0.5 * DAY, 6),  # 1 day
            (90 * DAY, -1.0, 7),  # expired
            (6 * DAY, 1.5 * DAY, 0),
            (6 * DAY, 0.9 * DAY, 1),  # 1 day is the threshold itself
            (6 * DAY, 0.4 * DAY, 2),  # a twelfth: half a day
            (6 * DAY, 0.2 * DAY, 3),  # a twenty-fourth: 6 hours
            (6 * DAY, -1.0, 4),
            (90.0, 14.0, 1),  # 90-second certificates: 15 s threshold
            (90.0, 7.0, 2),
            (90.0, 3.0, 3),
            (90.0, -1.0, 4),
        ]
        for lifetime, left, level in cases:
            now = ISSUED + lifetime - left
            self.assertEqual(warningLevel(ISSUED, ISSUED + lifetime, now), level, (lifetime, left))


class EmergencyRetryTests(SynchronousTestCase):
    """
    Tests for L{emergencyRetryDelay} and L{failureDelay}.
    """

    def test_pace(self) -> None:
        """
        An hour for provisional certificates and long lifetimes; a quarter
        of the warning threshold for short ones, so that several attempts
        fit before expiry.
        """
        self.assertEqual(emergencyRetryDelay(None, None), EMERGENCY_RETRY_DELAY)
        self.assertEqual(emergencyRetryDelay(ISSUED, ISSUED + 90 * DAY), EMERGENCY_RETRY_DELAY)
        self.assertEqual(emergencyRetryDelay(ISSUED, ISSUED + 6 * DAY), EMERGENCY_RETRY_DELAY)
        self.assertEqual(emergencyRetryDelay(ISSUED, ISSUED + 90), 15 / 4)

    def test_paceCutsTheBackOff(self) -> None:
        """
        The back-off doubles as usual, but never past the pace when one
        applies.
        """
        self.assertEqual(failureDelay(1, DAY, None), FIRST_RETRY_DELAY)
        self.assertEqual(failureDelay(20, DAY, None), DAY)
        self.assertEqual(failureDelay(1, DAY, 3600.0), FIRST_RETRY_DELAY)
        self.assertEqual(failureDelay(20, DAY, 3600.0), 3600.0)


class RetryDelayTests(SynchronousTestCase):
    """
    Tests for L{retryDelay}.
    """

    def test_doublesToTheCap(self) -> None:
        """
        A minute, then doubling, capped at the maximum; even after very many
        failures the result is the cap.
        """
        delays = [retryDelay(n, DAY) for n in range(1, 14)]
        self.assertEqual(delays[:4], [FIRST_RETRY_DELAY * f for f in (1, 2, 4, 8)])
        self.assertEqual(delays[-1], DAY)
        self.assertEqual(delays, sorted(delays))
        self.assertEqual(retryDelay(10_000, DAY), DAY)
