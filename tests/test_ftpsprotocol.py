"""
Tests for L{letsencrypt_resource.ftpsprotocol}, on in-memory transports.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.ftpsprotocol import FTPSProtocol


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
