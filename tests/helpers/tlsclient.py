"""
A real TLS client for tests: connects to a service on loopback, verifies
its chain against a given root and its name, and speaks HTTP/1.1 over it.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from OpenSSL.crypto import X509
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.python.failure import Failure


class HTTPOverTLS(Protocol):
    """
    Sends HTTP/1.1 GETs on one kept-alive connection and collects the
    answers.
    """

    def __init__(self, serverName: str) -> None:
        self.serverName = serverName
        self.received = b""
        self._waiting: tuple[bytes, Deferred[bytes]] | None = None
        self.lost: Deferred[None] = Deferred()

    def get(self, path: str, marker: bytes) -> Deferred[bytes]:
        """
        GET C{path}; fire with all received so far once C{marker} has
        arrived once more.
        """
        expected = self.received.count(marker) + 1
        waiting: Deferred[bytes] = Deferred()
        self._waiting = (marker, waiting)
        self._expected = expected
        self.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.serverName}\r\n\r\n".encode("ascii")
        )
        return waiting

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._waiting is not None:
            marker, waiting = self._waiting
            if self.received.count(marker) >= self._expected:
                self._waiting = None
                waiting.callback(self.received)

    def connectionLost(self, reason: Failure = None) -> None:
        if self._waiting is not None:
            self._waiting[1].errback(reason)
            self._waiting = None
        self.lost.callback(None)

    def peerCertificate(self) -> x509.Certificate:
        """
        The certificate the server presented.
        """
        return self.transport.getPeerCertificate().to_cryptography()


async def connectTLS(reactor: Any, port: int, serverName: str, issuersPEM: bytes) -> HTTPOverTLS:
    """
    Connect to 127.0.0.1:C{port} asking for C{serverName}, trusting only
    the first (root) certificate of C{issuersPEM}; the handshake fails
    unless the chain and name verify.
    """
    root = x509.load_pem_x509_certificates(issuersPEM)[0]
    options = optionsForClientTLS(serverName, trustRoot=Certificate(X509.from_cryptography(root)))
    endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, options)
    return await connectProtocol(endpoint, HTTPOverTLS(serverName))


async def fetchOverTLS(
    reactor: Any, port: int, serverName: str, issuersPEM: bytes, path: str, marker: bytes
) -> tuple[x509.Certificate, bytes]:
    """
    One verified GET: the certificate presented and the bytes received.
    """
    client = await connectTLS(reactor, port, serverName, issuersPEM)
    try:
        received = await client.get(path, marker)
        return client.peerCertificate(), received
    finally:
        client.transport.loseConnection()
        await client.lost
