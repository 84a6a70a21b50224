"""
A protocol wrapper that passes on the end of a TLS handshake.

A wrapper (C{twisted.protocols.policies.ProtocolWrapper}) that sits
between a transport and a protocol hides the protocol's
C{IHandshakeListener}: a TLS layer started later on the same connection
(C{startTLS}, as explicit FTPS's AUTH TLS does) tells only the wrapper
that its handshake is complete.  L{HandshakeForwarding} tells the
wrapped protocol.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHandshakeListener
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer


@implementer(IHandshakeListener)
class HandshakeForwarding(ProtocolWrapper):
    """
    Passes the end of a TLS handshake on to the wrapped protocol, when it
    listens for it.
    """

    def handshakeCompleted(self) -> None:
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()
