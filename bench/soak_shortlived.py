"""
Soak run: the server on certificates of a few minutes' lifetime, for as long
as asked, against a local pebble 2.10 (it has profiles and ARI).

Every second a real TLS client checks that each service presents a valid
certificate chaining to pebble's root; at the end a table says how many
checks passed, how many renewals happened, and how many expiry warnings
(20114) and failures (20017) were logged.

    PEBBLE_MODERN_DIR=.cache/pebble-sid/usr/bin \\
        .venv/bin/python bench/soak_shortlived.py --minutes 30 --lifetime 180
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react
from twisted.logger import globalLogPublisher

from letsencrypt_resource.config import parseConfiguration
from letsencrypt_resource.host import ServerService
from letsencrypt_resource.testca import freeTCPPort, startTestCA
from tests.tlsclient import fetchOverTLS

SERVICES = [
    ("files", "files.example.test, www.example.test"),
    ("reports", "reports.example.test"),
    ("uploads", "uploads.example.test"),
]

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


async def soak(reactor: Any, minutes: float, lifetime: int) -> int:
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
    try:
        text = CONFIGURATION.format(
            challengePort=challengePort,
            directoryURL=testCA.directoryURL,
            caFile=testCA.caFile,
        )
        ports = {name: freeTCPPort() for name, _ in SERVICES}
        for name, domains in SERVICES:
            text += SERVICE.format(name=name, port=ports[name], domains=domains)
        os.makedirs(os.path.join(directory, "public"))
        with open(os.path.join(directory, "public", "ok.txt"), "wb") as stream:
            stream.write(b"ok\n")
        server = ServerService(parseConfiguration(text, directory), reactor)
        server.startService()
        await server.resource.whenSettled()
        issuers = await testCA.fetchIssuerPEM()
        checks = Counter()
        serials: dict[str, set[int]] = {name: set() for name, _ in SERVICES}
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            for name, domains in SERVICES:
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
    print(f"| soak: {minutes:g} min, certificates of {lifetime} s, {len(SERVICES)} services |")
    print("|---|---|")
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
    arguments = parser.parse_args()

    def run(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            status = await soak(reactor, arguments.minutes, arguments.lifetime)
            if status:
                raise SystemExit(status)

        return Deferred.fromCoroutine(go())

    react(run)


if __name__ == "__main__":
    main()
