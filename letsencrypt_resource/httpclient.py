"""
The HTTPS client the ACME conversation runs on.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .keys import readFile


def loadCABundle(path: str) -> list[Certificate]:
    """
    Read the PEM certificates of the CA bundle at C{path}.

    @raise ValueError: when the file cannot be read or holds no certificate.
    """
    pem = readFile(path)
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificate") from None
    return [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]


@implementer(IPolicyForHTTPS)
class _CachingPolicy:
    """
    Builds the TLS options for a host once: the agent asks for them at every
    request, pooled connection or not.
    """

    def __init__(self, policy: IPolicyForHTTPS):
        self._policy = policy
        self._options: dict[tuple[bytes, int], Any] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        key = (hostname, port)
        if key not in self._options:
            self._options[key] = self._policy.creatorForNetloc(hostname, port)
        return self._options[key]


class _QuietPool(HTTPConnectionPool):
    """
    A connection pool whose connections do not log their start and stop.
    """

    class _factory(HTTPConnectionPool._factory):  # type: ignore[valid-type, misc]
        noisy = False


def makeHTTPClient(
    reactor: object, trusted: list[Certificate] | None
) -> tuple[Agent, HTTPConnectionPool]:
    """
    An HTTP client (a Twisted C{Agent}) with persistent connections that
    trusts C{trusted} for HTTPS, or the system's trust store when C{None}.

    @return: The agent and its pool, to close when done.
    """
    pool = _QuietPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 4
    trustRoot = trustRootFromCertificates(trusted) if trusted is not None else None
    policy = _CachingPolicy(BrowserLikePolicyForHTTPS(trustRoot))
    agent = Agent(reactor, contextFactory=policy, pool=pool)
    return agent, pool
