"""
Soak run: the server on certificates of a few minutes' lifetime, for as long
as asked, against a local pebble 2.10 (it has profiles and ARI).

Every second a real TLS client checks that each service presents a valid
certificate chaining to pebble's root; at the end a table says how many
checks passed, how many renewals happened, and how many expiry warnings
(20114) and failures (20017) were logged.

With C{--refuse-replaces N}, the server reaches pebble through a small
proxy that answers C{unauthorized} to every Nth new order naming the
certificate it replaces, as a CA does when another account (or another CA)
ordered that certificate: what pebble itself cannot be told to do. Each
such renewal must be ordered again at once without C{replaces} (event
20186), so that no service is ever left on an expired certificate.

A slow test (L{tests.helpers.slow}), on pebble 2.10 (C{PEBBLE_MODERN_DIR}):
eight minutes, certificates of 90 seconds, ten services, every third order
naming the certificate it replaces refused; C{LETSENCRYPT_SOAK_MINUTES}
sets another length::

    LETSENCRYPT_SLOW_TESTS=1 PEBBLE_MODERN_DIR=.cache/pebble-sid/usr/bin \\
        .venv/bin/python -m twisted.trial tests.test_slow_soak
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from letsencrypt_resource.config import parseConfiguration
from letsencrypt_resource.host import ServerService
from letsencrypt_resource.pebble import freeTCPPort, startTestCA, tlsPolicyTrusting
from letsencrypt_resource.testing.pebble import RESOURCE_SECTION, findModernTestCA
from tests.helpers.pebblecase import TestCACase
from tests.helpers.slow import skipUnlessSlow
from tests.helpers.tlsclient import fetchOverTLS

SERVICES = [
    ("files", "files.example.test, www.example.test"),
    ("reports", "reports.example.test"),
    ("uploads", "uploads.example.test"),
]

#: The problem the proxy answers to the orders it refuses.
REFUSAL = {
    "type": "urn:ietf:params:acme:error:unauthorized",
    "detail": "requester account did not request the certificate being "
    "replaced (refused by the soak's proxy)",
}

#: Hop-by-hop and length headers the proxy does not relay as they are.
_NOT_RELAYED = {b"content-length", b"transfer-encoding", b"connection"}


def services(count: int) -> list[tuple[str, str]]:
    """
    The first C{count} services: the three above, then more of one name each.
    """
    extra = [(f"site{n}", f"site{n}.example.test") for n in range(len(SERVICES), count)]
    return (SERVICES + extra)[:count]


def namesReplaced(body: bytes) -> bool:
    """
    Whether C{body}, a JWS, is a new order that names a certificate it
    replaces.
    """
    try:
        payload = json.loads(body)["payload"]
        document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(document, dict) and "identifiers" in document and "replaces" in document


class ReplacesRefuser(Resource):
    """
    An HTTPS front for pebble's ACME port that relays every request as it
    came (pebble names its URLs after the Host header, so they point back
    here) but refuses every C{every}th new order naming a replaced
    certificate.

    @ivar seen: New orders seen that named a replaced certificate.
    @ivar refused: How many of them were refused.
    """

    isLeaf = True

    def __init__(self, agent: Agent, target: str, every: int):
        super().__init__()
        self.agent = agent
        self.target = target.encode("ascii")
        self.every = every
        self.seen = 0
        self.refused = 0

    def render(self, request: Request) -> Any:
        body = request.content.read()
        if request.method == b"POST" and namesReplaced(body):
            self.seen += 1
            if self.seen % self.every == 0:
                self.refused += 1
                request.setResponseCode(403)
                request.setHeader(b"content-type", b"application/problem+json")
                return json.dumps(REFUSAL).encode("utf-8")
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in _NOT_RELAYED:
                headers.setRawHeaders(name, values)
        producer = FileBodyProducer(BytesIO(body)) if body else None
        relaying = self.agent.request(request.method, self.target + request.uri, headers, producer)
        relaying.addCallback(self._relay, request)
        relaying.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _answer(self, response: IResponse, request: Request) -> None:
        data = await readBody(response)
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in _NOT_RELAYED:
                request.responseHeaders.setRawHeaders(name, values)
        request.setHeader(b"content-length", str(len(data)).encode("ascii"))
        request.write(data)
        request.finish()

    def _relay(self, response: IResponse, request: Request) -> Deferred[None]:
        return Deferred.fromCoroutine(self._answer(response, request))

    def _failed(self, failure: Any, request: Request) -> None:
        print(f"proxy: {failure.getErrorMessage()}", flush=True)
        if not request.finished:
            request.setResponseCode(502)
            request.finish()


def startRefuser(reactor: Any, testCA: Any, every: int) -> tuple[str, ReplacesRefuser, Any]:
    """
    Put a L{ReplacesRefuser} in front of C{testCA}, on its listeners'
    certificate.

    @return: The directory URL through it, it, and its listening port.
    """
    folder = testCA.directory
    with open(os.path.join(folder, "listener-cert.pem"), "rb") as stream:
        pem = stream.read()
    with open(os.path.join(folder, "listener-key.pem"), "rb") as stream:
        pem += stream.read()
    target = urlsplit(testCA.directoryURL)
    agent = Agent(reactor, contextFactory=tlsPolicyTrusting(testCA.caFile))
    refuser = ReplacesRefuser(agent, f"https://{target.netloc}", every)
    site = Site(refuser)
    site.noisy = False
    port = freeTCPPort()
    listening = reactor.listenSSL(
        port, site, PrivateCertificate.loadPEM(pem).options(), interface="127.0.0.1"
    )
    return f"https://localhost:{port}{target.path}", refuser, listening


#: The soak's resource: 6-day (pebble: short) certificates.
CONFIGURATION = RESOURCE_SECTION + "profile = shortlived\n"

SERVICE = """
[services/{name}]
type = https
address = 127.0.0.1
port = {port}
path = public
ssl_domains = {domains}
"""


async def soak(
    reactor: Any, directory: str, minutes: float, lifetime: int, count: int, refuseEvery: int
) -> str | None:
    """
    Run the soak in C{directory}; print its table.

    @return: C{None} when every check passed and nothing expired or
        failed, otherwise the table.
    """
    chosen = services(count)
    challengePort = freeTCPPort()
    profiles = {
        "default": {"description": "default", "validityPeriod": 7776000},
        "shortlived": {"description": "short", "validityPeriod": lifetime},
    }
    testCA = await startTestCA(
        reactor,
        os.path.join(directory, "pebble"),
        challengePort,
        executables=findModernTestCA(),
        extraConfig={"profiles": profiles},
    )
    counts: Counter[int] = Counter()

    def count(event: dict[str, Any]) -> None:
        if "event_id" in event:
            counts.update([event["event_id"]])

    globalLogPublisher.addObserver(count)
    directoryURL, refuser, listening = testCA.directoryURL, None, None
    if refuseEvery:
        directoryURL, refuser, listening = startRefuser(reactor, testCA, refuseEvery)
    try:
        text = CONFIGURATION.format(
            challengePort=challengePort,
            directoryURL=directoryURL,
            caFile=testCA.caFile,
            keyType="ecdsa-p256",
        )
        ports = {name: freeTCPPort() for name, _ in chosen}
        for name, domains in chosen:
            text += SERVICE.format(name=name, port=ports[name], domains=domains)
        os.makedirs(os.path.join(directory, "public"))
        with open(os.path.join(directory, "public", "ok.txt"), "wb") as stream:
            stream.write(b"ok\n")
        server = ServerService(parseConfiguration(text, directory), reactor)
        server.startService()
        await server.resource.whenSettled()
        issuers = await testCA.fetchIssuerPEM()
        checks = Counter()
        serials: dict[str, set[int]] = {name: set() for name, _ in chosen}
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            for name, domains in chosen:
                serverName = domains.split(",")[0].strip()
                try:
                    certificate, body = await fetchOverTLS(
                        reactor, ports[name], serverName, issuers, "/ok.txt", b"ok\n"
                    )
                except Exception as error:
                    checks["failed"] += 1
                    print(f"{time.strftime('%H:%M:%S')} {name}: {error}", flush=True)
                    continue
                checks["passed"] += 1
                serials[name].add(certificate.serial_number)
            await deferLater(reactor, 1, lambda: None)
        await server.stopService()
    finally:
        globalLogPublisher.removeObserver(count)
        if listening is not None:
            await listening.stopListening()
        await testCA.stop()
    renewals = sum(len(s) - 1 for s in serials.values())
    rows = [
        f"| soak: {minutes:g} min, certificates of {lifetime} s, {len(chosen)} services |",
        "|---|---|",
    ]
    if refuser is not None:
        rows.append(f"| orders naming `replaces` | {refuser.seen} |")
        rows.append(f"| of which refused by the proxy | {refuser.refused} |")
        rows.append(f"| 20186 ordered again without `replaces` | {counts[20186]} |")
    rows += [
        f"| TLS checks passed | {checks['passed']} |",
        f"| TLS checks failed | {checks['failed']} |",
        f"| renewals seen by clients | {renewals} |",
        f"| 20015 certificates stored | {counts[20015]} |",
        f"| 20114 expiry warnings | {counts[20114]} |",
        f"| 20017 failures | {counts[20017]} |",
    ]
    table = "\n".join(rows)
    print(table)
    ok = checks["failed"] == 0 and counts[20114] == 0 and counts[20017] == 0
    return None if ok else table


class ShortLivedSoakTests(TestCACase):
    """
    The server on certificates of 90 seconds for minutes on end.
    """

    skip = skipUnlessSlow()
    timeout = 3600

    async def test_soak(self) -> None:
        """
        Every TLS check passes, no expiry warning or failure is logged, and
        each refused order naming C{replaces} is ordered again without it.
        """
        self.requireModern()
        minutes = float(os.environ.get("LETSENCRYPT_SOAK_MINUTES", "8"))
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.assertIsNone(await soak(reactor, directory, minutes, 90, 10, 3))
