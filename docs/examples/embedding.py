"""
A host server that embeds the lets-encrypt resource: one HTTPS service of
its own, whose certificate the resource obtains, renews and switches in
place.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface.registry import Components

from letsencrypt_resource.config import ResourceOptions
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.tls import TLSCertificateConsumer

GREETING = b"Hello from the host's own HTTPS service.\n"


class Greeting(Resource):
    """
    Every path answers the greeting.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return GREETING


class HostHTTPSService(Service):
    """
    The host's HTTPS service. It listens once its consumer holds a first
    certificate (provisional or CA-issued); later ones reach new TLS
    handshakes in place.
    """

    def __init__(self, reactor: Any, address: str, port: int, domains: tuple[str, ...]):
        self.consumer = TLSCertificateConsumer("host-https", domains)
        # consumer.tls is an IOpenSSLServerConnectionCreator.
        self._endpoint = SSL4ServerEndpoint(reactor, port, self.consumer.tls, interface=address)
        self._site = Site(Greeting())
        self._waiting = None
        self._port = None

    def startService(self) -> None:
        super().startService()
        self._waiting = self.consumer.whenCertificate()
        self._waiting.addCallback(lambda _: self._endpoint.listen(self._site))
        self._waiting.addCallback(self._listening)

    def _listening(self, port: Any) -> None:
        self._port = port

    def stopService(self) -> Any:
        super().stopService()
        self._waiting.cancel()
        self._waiting.addErrback(lambda failure: None)
        if self._port is not None:
            return self._port.stopListening()
        return None


def makeHost(
    reactor: Any,
    directoryURL: str,
    caFile: str | None,
    challengePort: int,
    stateDirectory: str,
    *,
    domains: tuple[str, ...] = ("www.example.test",),
    address: str = "127.0.0.1",
    httpsPort: int = 8443,
) -> MultiService:
    """
    Build the host: an HTTPS service on C{address}:C{httpsPort} for
    C{domains}, and the resource answering HTTP-01 on
    C{address}:C{challengePort}, talking to the ACME directory
    C{directoryURL}, trusting C{caFile} for it (or the system's trust store
    when C{None}) and keeping its state in C{stateDirectory}.

    The resource is the child service named C{lets-encrypt}.
    """
    https = HostHTTPSService(reactor, address, httpsPort, domains)
    # The registry is how the resource finds the certificate consumers:
    # one utility per TLS service, each under its own name.
    registry = Components("host")
    registry.registerUtility(https.consumer, ICertificateConsumer, name="host-https")

    # Only what the host uses; the other options default as in the file.
    # The resource makes its HTTP client from them (trusting acmeCAFile),
    # and closes its connections when it stops, as it ends its threads.
    options = ResourceOptions(
        section="resources/embedded",
        name="lets-encrypt",
        address=address,
        port=challengePort,
        acmeURL=directoryURL,
        stateDirectory=stateDirectory,
        acmeCAFile=caFile,
        keyType="ecdsa-p256",
        agreeTOS=True,
    )
    # The state directory, read and written in a thread of its own; the
    # resource closes it when it stops.
    storage = DirectoryStorage(stateDirectory, reactor)
    resource = LetsEncryptResource(options, registry, storage, reactor, closeStorage=True)

    host = MultiService()
    https.setServiceParent(host)
    resource.setServiceParent(host)
    return host
