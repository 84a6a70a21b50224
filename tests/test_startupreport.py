"""
Tests for L{letsencrypt_resource.startupreport}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import events
from letsencrypt_resource.startupreport import ListeningStartUp, ResourceStartUp


def fields(**given: Any) -> Callable[[], dict[str, Any]]:
    """
    What makes the fields C{given} of an event told.
    """
    return lambda: given


class ResourceStartUpTests(SynchronousTestCase):
    """
    Tests for L{ResourceStartUp}.
    """

    def tellSome(self, startUp: ResourceStartUp) -> None:
        """
        Tell C{startUp} of two stored certificates in use by three
        services and of one provisional certificate.
        """
        for domains in ("a.test", "b.test"):
            startUp.tell(events.STORED_CERTIFICATE_LOADED, fields(domains=domains, not_after="x"))
        for service in ("a1", "a2", "b"):
            startUp.tell(events.CERTIFICATE_IN_USE, fields(service=service, domains="a.test"))
        startUp.tell(events.PROVISIONAL_IN_USE, fields(service="c", domains="c.test"))

    def test_fieldsMadeWhenLogged(self) -> None:
        """
        The fields of an event counted are made only to be logged: not
        while the start-up is under way without C{debug}.
        """
        made: list[str] = []

        def fields() -> dict[str, Any]:
            made.append("made")
            return {"service": "a1", "domains": "a.test"}

        startUp = ResourceStartUp(Logger(), debug=False, now=0.0)
        with capturedLogs() as logged:
            startUp.tell(events.CERTIFICATE_IN_USE, fields)
            self.assertEqual((made, logged), ([], []))
            startUp.end(1.0, waiting=0)
            startUp.tell(events.CERTIFICATE_IN_USE, fields)
        self.assertEqual(made, ["made"])
        self.assertEqual(
            formatEvent(logged[-1]),
            "20016 Service a1 now uses the CA-issued certificate for a.test.",
        )

    def test_countedThenSummed(self) -> None:
        """
        While the start-up is under way, its events are counted, not
        logged; its end logs event 20208 with the counts, once.
        """
        startUp = ResourceStartUp(Logger(), debug=False, now=100.0)
        with capturedLogs() as logged:
            self.tellSome(startUp)
            startUp.end(102.5, waiting=1)
            startUp.end(103.0, waiting=0)
        self.assertTrue(startUp.ended)
        self.assertEqual(
            [formatEvent(e) for e in logged],
            [
                "20208 Start-up put 4 services in service in 2.5 seconds: 3 on CA-issued "
                "certificates (2 stored certificates loaded), 1 on provisional ones; 1 domain "
                "sets wait for a certificate."
            ],
        )
        self.assertEqual(logged[0]["log_level"], LogLevel.info)

    def test_debug(self) -> None:
        """
        With C{debug}, each event counted is logged at debug level too.
        """
        startUp = ResourceStartUp(Logger(), debug=True, now=0.0)
        with capturedLogs() as logged:
            self.tellSome(startUp)
        self.assertEqual(
            [(e["event_id"], e["log_level"]) for e in logged],
            [(20158, LogLevel.debug)] * 2
            + [(20016, LogLevel.debug)] * 3
            + [(20153, LogLevel.debug)],
        )
        self.assertEqual(
            formatEvent(logged[2]),
            "20016 Service a1 now uses the CA-issued certificate for a.test.",
        )

    def test_afterStartUp(self) -> None:
        """
        Once the start-up has ended, each event is logged as usual.
        """
        startUp = ResourceStartUp(Logger(), debug=False, now=0.0)
        startUp.end(1.0, waiting=0)
        with capturedLogs() as logged:
            startUp.tell(events.CERTIFICATE_IN_USE, fields(service="a1", domains="a.test"))
        self.assertEqual(
            [(formatEvent(e), e["log_level"]) for e in logged],
            [("20016 Service a1 now uses the CA-issued certificate for a.test.", LogLevel.info)],
        )


class ListeningStartUpTests(SynchronousTestCase):
    """
    Tests for L{ListeningStartUp}.
    """

    def test_onceAllListenOrFail(self) -> None:
        """
        Event 20209 comes once every service listens, cannot, or is gone;
        the services' own events 20156 are not logged.
        """
        with capturedLogs() as logged:
            startUp = ListeningStartUp(Logger(), 4, 10.0)
            startUp.listened(False, 11.0, service="a", address="127.0.0.1", port=1)
            startUp.failed(11.5)
            startUp.gone(11.75)
            self.assertEqual(logged, [])
            startUp.listened(False, 12.0, service="b", address="127.0.0.1", port=2)
        self.assertEqual(
            [formatEvent(e) for e in logged],
            [
                "20209 2 services listen, 1 cannot, 0 wait for a certificate, "
                "2.0 seconds after they started."
            ],
        )

    def test_debug(self) -> None:
        """
        A service with C{debug} has its event 20156 logged at debug level.
        """
        with capturedLogs() as logged:
            startUp = ListeningStartUp(Logger(), 2, 0.0)
            startUp.listened(True, 0.0, service="a", address="127.0.0.1", port=1)
        self.assertEqual(
            [(formatEvent(e), e["log_level"]) for e in logged],
            [("20156 Service a is listening on 127.0.0.1 port 1.", LogLevel.debug)],
        )

    def test_noService(self) -> None:
        """
        A server without services says at once that none listens.
        """
        with capturedLogs() as logged:
            ListeningStartUp(Logger(), 0, 5.0)
        self.assertEqual(
            [formatEvent(e) for e in logged],
            [
                "20209 0 services listen, 0 cannot, 0 wait for a certificate, "
                "0.0 seconds after they started."
            ],
        )


class CutTests(SynchronousTestCase):
    """
    Tests for L{ListeningStartUp.cut} and L{ResourceStartUp.endListeners}.
    """

    def test_cutTellsWaiting(self) -> None:
        """
        When the resource's start-up ends before every service listens,
        event 20209 comes then, counting those that wait; it is not logged
        again when they listen.
        """
        with capturedLogs() as logged:
            startUp = ListeningStartUp(Logger(), 3, 10.0)
            startUp.listened(False, 11.0, service="a", address="127.0.0.1", port=1)
            self.assertFalse(startUp.told)
            startUp.cut(12.5)
            self.assertTrue(startUp.told)
            startUp.listened(False, 13.0, service="b", address="127.0.0.1", port=2)
            startUp.failed(14.0)
        self.assertEqual(
            [formatEvent(e) for e in logged],
            [
                "20209 1 services listen, 0 cannot, 2 wait for a certificate, "
                "2.5 seconds after they started."
            ],
        )

    def test_cutAfterAllListen(self) -> None:
        """
        When every service listens before the resource's start-up ends, the
        end adds nothing.
        """
        with capturedLogs() as logged:
            startUp = ListeningStartUp(Logger(), 1, 0.0)
            startUp.listened(False, 1.0, service="a", address="127.0.0.1", port=1)
            startUp.cut(2.0)
        self.assertEqual(len(logged), 1)

    def test_endListeners(self) -> None:
        """
        The end of a resource's start-up calls its end listeners after
        event 20208, once.
        """
        startUp = ResourceStartUp(Logger(), False, 0.0)
        with capturedLogs() as logged:
            told: list[list[object]] = []
            startUp.endListeners.append(lambda: told.append([e["event_id"] for e in logged]))
            startUp.end(1.0, 0)
            startUp.end(2.0, 0)
        self.assertEqual(told, [[20208]])
