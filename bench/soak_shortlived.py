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

    PEBBLE_MODERN_DIR=.cache/pebble-sid/usr/bin \\
        .venv/bin/python bench/soak_shortlived.py --minutes 30 --lifetime 180

    PEBBLE_MODERN_DIR=.cache/pebble-sid/usr/bin \\
        .venv/bin/python bench/soak_shortlived.py --minutes 9 --lifetime 90 \\
        --services 10 --refuse-replaces 3
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from collections import Counter
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.defer import Deferred
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import deferLater, react
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from letsencrypt_resource.config import parseConfiguration
from letsencrypt_resource.host import ServerService
from letsencrypt_resource.pebble import freeTCPPort, startTestCA, tlsPolicyTrusting
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
        relaying = self.agent.request(
            request.method, self.target + request.uri, headers, producer
        )
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


def startRefuser(reactor: Any, testCA: Any, every: int) -> tuple[str, ReplacesRefuser]:
    """
    Put a L{ReplacesRefuser} in front of C{testCA}, on its listeners'
    certificate.

    @return: The directory URL through it, and it.
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
    reactor.listenSSL(
        port, site, PrivateCertificate.loadPEM(pem).options(), interface="127.0.0.1"
    )
    return f"https://localhost:{port}{target.path}", refuser

CONFIGURATION = """\
[resources/soak]
type = lets-encrypt
address = 127.0.0.1
port = {challengePort}
acme_url = {directoryURL}
acme_ca_file = {caFile}
state_directory = state
key_type = ecdsa-p256
profile = shortlived
agree_tos = yes
"""

SERVICE = """
[services/{name}]
type = https
address = 127.0.0.1
port = {port}
path = public
ssl_domains = {domains}
"""


async def soak(
    reactor: Any, minutes: float, lifetime: int, count: int, refuseEvery: int
) -> int:
    chosen = services(count)
    directory = tempfile.mkdtemp(prefix="soak-")
    challengePort = freeTCPPort()
    profiles = {
        "default": {"description": "default", "validityPeriod": 7776000},
        "shortlived": {"description": "short", "validityPeriod": lifetime},
    }
    testCA = await startTestCA(
        reactor,
        os.path.join(directory, "pebble"),
        challengePort,
        modern=True,
        extraConfig={"profiles": profiles},
    )
    counts: Counter[int] = Counter()
    globalLogPublisher.addObserver(
        lambda event: counts.update([event["event_id"]]) if "event_id" in event else None
    )
    directoryURL, refuser = testCA.directoryURL, None
    if refuseEvery:
        directoryURL, refuser = startRefuser(reactor, testCA, refuseEvery)
    try:
        text = CONFIGURATION.format(
            challengePort=challengePort,
            directoryURL=directoryURL,
            caFile=testCA.caFile,
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
        await testCA.stop()
    renewals = sum(len(s) - 1 for s in serials.values())
    print()
    print(f"| soak: {minutes:g} min, certificates of {lifetime} s, {len(chosen)} services |")
    print("|---|---|")
    if refuser is not None:
        print(f"| orders naming `replaces` | {refuser.seen} |")
        print(f"| of which refused by the proxy | {refuser.refused} |")
        print(f"| 20186 ordered again without `replaces` | {counts[20186]} |")
    print(f"| TLS checks passed | {checks['passed']} |")
    print(f"| TLS checks failed | {checks['failed']} |")
    print(f"| renewals seen by clients | {renewals} |")
    print(f"| 20015 certificates stored | {counts[20015]} |")
    print(f"| 20114 expiry warnings | {counts[20114]} |")
    print(f"| 20017 failures | {counts[20017]} |")
    ok = checks["failed"] == 0 and counts[20114] == 0 and counts[20017] == 0
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--lifetime", type=int, default=180, help="seconds")
    parser.add_argument("--services", type=int, default=len(SERVICES))
    parser.add_argument(
        "--refuse-replaces",
        type=int,
        default=0,
        metavar="N",
        help="refuse every Nth order naming the certificate it replaces (0: none)",
    )
    arguments = parser.parse_args()

    def run(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            status = await soak(
                reactor,
                arguments.minutes,
                arguments.lifetime,
                arguments.services,
                arguments.refuse_replaces,
            )
            if status:
                raise SystemExit(status)

        return Deferred.fromCoroutine(go())

    react(run)


if __name__ == "__main__":
    main()
