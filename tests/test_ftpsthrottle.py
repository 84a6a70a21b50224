"""
Tests for L{letsencrypt_resource.ftpsthrottle}, on a fake clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import events, ftpsthrottle
from letsencrypt_resource.ftpsthrottle import LoginThrottle, WarningBudget, addressKey


class AddressKeyTests(SynchronousTestCase):
    """
    Tests for L{addressKey}.
    """

    def test_keys(self) -> None:
        """
        An IPv4 address counts as itself, an IPv4-mapped IPv6 address as
        its IPv4 address, an IPv6 address as its /64.
        """
        self.assertEqual(addressKey("192.0.2.7"), "192.0.2.7")
        self.assertEqual(addressKey("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(addressKey("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(addressKey("2001:db8:1:2::9"), "2001:db8:1:2::/64")
        self.assertEqual(addressKey("not an address"), "not an address")


class LoginThrottleTests(SynchronousTestCase):
    """
    Tests for L{LoginThrottle}.
    """

    def test_doubling(self) -> None:
        """
        The delay doubles with each failure from an address, up to 30 s;
        another address starts at 1 s.
        """
        throttle = LoginThrottle(Clock())
        delays = [throttle.failed("192.0.2.7") for _ in range(8)]
        self.assertEqual(delays, [1, 2, 4, 8, 16, 30, 30, 30])
        self.assertEqual(throttle.failed("192.0.2.8"), 1)
        self.assertEqual(throttle.failed("2001:db8::1"), 1)
        self.assertEqual(throttle.failed("2001:db8::2"), 2)

    def test_forgotten(self) -> None:
        """
        Failures are forgotten 10 minutes after an address's last one.
        """
        clock = Clock()
        throttle = LoginThrottle(clock)
        throttle.failed("192.0.2.7")
        clock.advance(599)
        self.assertEqual(throttle.failed("192.0.2.7"), 2)
        clock.advance(601)
        self.assertEqual(throttle.failed("192.0.2.7"), 1)

    def test_bounded(self) -> None:
        """
        No more than C{ADDRESSES_KEPT} addresses are remembered: the one
        whose last failure is oldest goes first.
        """
        self.patch(ftpsthrottle, "ADDRESSES_KEPT", 3)
        clock = Clock()
        throttle = LoginThrottle(clock)
        for host in ["192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3", "192.0.2.4"]:
            clock.advance(1)
            throttle.failed(host)
        self.assertEqual(throttle.failed("192.0.2.1"), 4)
        self.assertEqual(throttle.failed("192.0.2.2"), 1)


class WarningBudgetTests(SynchronousTestCase):
    """
    Tests for L{WarningBudget}.
    """

    def test_budget(self) -> None:
        """
        At most 10 events of a kind are logged a minute; those left out are
        counted in event 20236 with the next one after the minute.  Other
        kinds have budgets of their own.
        """
        clock = Clock()
        budget = WarningBudget(clock, "ftp")
        with capturedLogs() as logged:
            for _ in range(25):
                budget.emit(events.FTPS_SESSION_LIMIT, client="192.0.2.7", limit=10)
            budget.emit(events.FTPS_DATA_WRONG_PEER, client="192.0.2.8", peer="192.0.2.7")
            clock.advance(61)
            budget.emit(events.FTPS_SESSION_LIMIT, client="192.0.2.7", limit=10)
        ids = [event["event_id"] for event in logged]
        self.assertEqual(ids, [20230] * 10 + [20231, 20236, 20230])
        summary = logged[11]
        self.assertEqual(
            (summary["service"], summary["count"], summary["event"], summary["seconds"]),
            ("ftp", 15, 20230, 61),
        )
        self.assertEqual(logged[0]["service"], "ftp")
