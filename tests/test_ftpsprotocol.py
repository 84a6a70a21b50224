"""
Tests for L{letsencrypt_resource.ftpsprotocol}, on in-memory transports.
"""

from __future__ import annotations

import inspect
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.ftpsprotocol import HELD_COMMANDS, FTPSProtocol, _accepts


class ConnectionLostTests(SynchronousTestCase):
    """
    A control connection that ends while a command runs.
    """

    def test_disconnected(self) -> None:
        """
        Once its connection is lost, the session counts as disconnected:
        a command that ends afterwards (a refused login answered after its
        delay, a transfer) does not resume reading a transport that is
        gone, which Twisted's server does unless this flag is set.
        """
        protocol = FTPSProtocol()
        protocol.transport = StringTransport()
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(protocol.transport)
        self.assertTrue(protocol.disconnected)


class WatchedCommandsTests(SynchronousTestCase):
    """
    A control connection read while a long command runs.
    """

    def test_heldBounded(self) -> None:
        """
        While a command runs, the connection is read again on request, and
        what comes is held, not taken as commands; above L{HELD_COMMANDS}
        bytes, reading pauses again.
        """
        protocol, transport, copying = _watching()
        self.assertEqual(transport.producerState, "producing")
        taken: list[bytes] = []
        protocol.lineReceived = taken.append  # type: ignore[method-assign]
        protocol.dataReceived(b"NOOP\r\n" * (HELD_COMMANDS // 6))
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"NOOP\r\n")
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(taken, [])

    def test_watchedWhileRunning(self) -> None:
        """
        The connection is read only until the part of the command watched
        ended: then no more until the command ended.
        """
        protocol, transport, copying = _watching()
        self.assertEqual(transport.producerState, "producing")
        copying.callback(None)
        self.assertEqual(transport.producerState, "paused")


def _watching() -> tuple[FTPSProtocol, StringTransport, Deferred[None]]:
    """
    A session on an in-memory transport whose command runs, paused, and
    that watches its connection while the Deferred given runs.
    """
    protocol = FTPSProtocol()
    transport = StringTransport()
    protocol.transport = transport
    protocol.pauseProducing()
    copying: Deferred[None] = Deferred()
    protocol.watchWhile(copying)
    return protocol, transport, copying


class AcceptsTests(SynchronousTestCase):
    """
    L{_accepts} tells whether a command takes the parameters given.
    """

    def test_signatureFoundOnce(self) -> None:
        """
        The parameters are checked against the command's signature, which
        is found at its first use only.
        """
        found: list[object] = []
        signature = inspect.signature

        def counting(function: Any) -> inspect.Signature:
            found.append(function)
            return signature(function)

        self.patch(inspect, "signature", counting)

        class Protocol:
            def ftp_SIZE(self, path: str) -> None:
                """
                A command with one parameter.
                """

        command = Protocol().ftp_SIZE
        self.assertTrue(_accepts(command, ("name",)))
        self.assertFalse(_accepts(command, ("name", "more")))
        self.assertFalse(_accepts(Protocol().ftp_SIZE, ()))
        self.assertEqual(found, [Protocol.ftp_SIZE])
