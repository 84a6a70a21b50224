"""
Crash consistency: the real C{twistd -n lets-encrypt} against pebble,
killed with SIGKILL at random moments of its start, its orders (first
issuance and renewals of certificates that live a few seconds), its writes,
and its idle time, then started again, many times in a row.

After every kill the state directory must load with a fresh
L{StateDirectory}, every stored key must match its certificate, no stored
certificate may be lost or replaced by an older one, and the account must
stay the one registered first (one C{accounts/*.json}, one URL, 20154 at
most once over all runs).  At every start the services must come up on the
last good certificate: 20158 for every set whose stored certificate was
still valid, no provisional one for it, and a real TLS client verifying
each service against pebble's root.  A final clean run must end with every
service on a CA-issued certificate and an export that matches it, and no
twistd log may hold key material.

A slow test (L{tests.helpers.slow}): 50 kills take about 2.5 minutes.
L{tests.test_crash} checks each damage a crash can leave, in memory.
"""

from __future__ import annotations

import glob
import os
import random
from typing import Any

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.task import deferLater

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.keys import keyFromPEM, publicKeysMatch
from letsencrypt_resource.pebble import freeTCPPort, startTestCA
from letsencrypt_resource.testing.pebble import RESOURCE_SECTION
from tests.helpers import keyMarkers
from tests.helpers.pebblecase import TestCACase
from tests.helpers.reliability import Row, WatchedTwistd, assertAllPassed
from tests.helpers.slow import skipUnlessSlow
from tests.helpers.statedir import StateDirectory
from tests.helpers.tlsclient import connectTLS

#: Seconds each certificate lives: renewed when half of it has passed.
LIFETIME = 16
SETS = {
    "files": ("files.example.test", "www.example.test"),
    "reports": ("reports.example.test",),
    "uploads": ("uploads.example.test",),
}
#: Services: name, set, the name a TLS client asks for.
SERVICES = [
    ("files", "files", "files.example.test"),
    ("files-again", "files", "www.example.test"),
    ("reports", "reports", "reports.example.test"),
    ("uploads", "uploads", "uploads.example.test"),
]

CONFIGURATION = (
    "[server]\nname = crash.example.test\n\n"
    + RESOURCE_SECTION
    + "store_directory = exported\ndebug = yes\n"
)

SERVICE = """
[services/{name}]
type = https
name = {name}-https
address = 127.0.0.1
port = {port}
path = public
ssl_domains = {domains}
"""

#: How each run is ended.
TRIGGERS = ("startup", "order", "stored", "idle")


def label(domains: tuple[str, ...]) -> str:
    return ", ".join(domains)


class CrashRun:
    """
    The whole crash campaign.
    """

    def __init__(self, reactor: Any, directory: str, runs: int, seed: int) -> None:
        self.reactor = reactor
        self.directory = directory
        self.runs = runs
        self.rng = random.Random(seed)
        self.row = Row(f"SIGKILL of twistd during issuance/renewal (lifetime {LIFETIME} s)")
        self.keys: dict[bytes, Any] = {}
        self.accountURL: str | None = None
        self.registrations = 0
        self.triggers: dict[str, int] = dict.fromkeys(TRIGGERS, 0)
        self.midOrder = 0
        self.midWrite = 0
        self.exportMismatches = 0
        self.lastGoodChecked = 0
        self.tlsChecked = 0
        self.logs: list[str] = []

    async def setUp(self) -> None:
        self.challengePort = freeTCPPort()
        self.testCA = await startTestCA(
            self.reactor,
            os.path.join(self.directory, "pebble"),
            self.challengePort,
            extraConfig={"certificateValidityPeriod": LIFETIME},
        )
        self.issuers = await self.testCA.fetchIssuerPEM()
        self.intermediate = x509.load_pem_x509_certificates(self.issuers)[1]
        self.ports = {name: freeTCPPort() for name, _, _ in SERVICES}
        text = CONFIGURATION.format(
            keyType="ecdsa-p256",
            challengePort=self.challengePort,
            directoryURL=self.testCA.directoryURL,
            caFile=self.testCA.caFile,
        )
        for name, setName, _ in SERVICES:
            text += SERVICE.format(
                name=name, port=self.ports[name], domains=", ".join(SETS[setName])
            )
        self.configPath = os.path.join(self.directory, "server.ini")
        os.makedirs(os.path.join(self.directory, "public"), exist_ok=True)
        with open(os.path.join(self.directory, "public", "ok.txt"), "wb") as stream:
            stream.write(b"ok\n")
        with open(self.configPath, "w") as stream:
            stream.write(text)
        self.state = os.path.join(self.directory, "state")
        self.exported = os.path.join(self.directory, "exported")

    async def tearDown(self) -> None:
        await self.testCA.stop()

    # Checking the state on disk

    def snapshot(self) -> tuple[dict[str, CertifiedKey | None], list[str]]:
        """
        Load everything with a fresh store; return the certificates by set
        and the problems found.
        """
        problems: list[str] = []
        store = StateDirectory(self.state)
        certificates: dict[str, CertifiedKey | None] = {}
        try:
            record = store.loadAccount(self.testCA.directoryURL)
        except Exception as error:
            problems.append(f"the account does not load: {error!r}")
            record = None
        accounts = glob.glob(os.path.join(self.state, "accounts", "*.json"))
        if len(accounts) > 1:
            problems.append(f"{len(accounts)} account files")
        if record is not None:
            self.keys[b"account"] = record.key
            if record.url is not None:
                if self.accountURL is None:
                    self.accountURL = record.url
                elif record.url != self.accountURL:
                    problems.append(f"account URL changed to {record.url}")
            elif self.accountURL is not None:
                problems.append("the account lost its URL")
        elif self.accountURL is not None:
            problems.append("the account file is gone")
        for name, domains in SETS.items():
            try:
                certifiedKey = store.loadCertificate(domains)
                store.loadRenewalState(domains)
            except Exception as error:
                problems.append(f"{name} does not load: {error!r}")
                certificates[name] = None
                continue
            certificates[name] = certifiedKey
            if certifiedKey is None:
                continue
            self.keys[certifiedKey.keyPEM] = certifiedKey.key
            if set(certifiedKey.domains) != set(domains):
                problems.append(f"{name} holds a certificate for {certifiedKey.domains}")
            try:
                certifiedKey.certificate.verify_directly_issued_by(self.intermediate)
            except Exception:
                problems.append(f"{name} holds a certificate not from pebble")
        signer = store.loadProvisionalSigner()
        if signer is not None:
            try:
                self.keys[b"signer"] = CertifiedKey.fromPEM(signer).key
            except Exception as error:
                problems.append(f"the provisional signer does not load: {error!r}")
        return certificates, problems

    def exportMatches(self) -> list[str]:
        """
        The exported sets whose private key is not the key of their
        certificate.
        """
        mismatched = []
        for name, domains in SETS.items():
            folder = os.path.join(self.exported, "_".join(domains))
            try:
                with open(os.path.join(folder, "privkey.pem"), "rb") as stream:
                    key = keyFromPEM(stream.read())
                with open(os.path.join(folder, "cert.pem"), "rb") as stream:
                    certificate = x509.load_pem_x509_certificate(stream.read())
            except FileNotFoundError:
                continue
            if not publicKeysMatch(key, certificate):
                mismatched.append(name)
        return mismatched

    def leftovers(self) -> int:
        return len(
            glob.glob(os.path.join(self.state, "**", ".*.tmp"), recursive=True)
            + glob.glob(os.path.join(self.exported, "**", ".*.tmp"), recursive=True)
        )

    # One run

    async def probeTLS(self, expectCA: set[str]) -> list[str]:
        """
        Connect to every service; those of the sets in C{expectCA} must
        present a certificate that verifies against pebble's root.
        """
        problems = []
        for name, setName, serverName in SERVICES:
            if setName not in expectCA:
                continue
            try:
                client = await connectTLS(self.reactor, self.ports[name], serverName, self.issuers)
                await client.get("/ok.txt", b"ok\n").addTimeout(5, self.reactor)
                client.transport.loseConnection()
                await client.lost
            except Exception as error:
                problems.append(f"TLS to {name}: {error!r}"[:300])
        return problems

    async def runOnce(self, index: int) -> None:
        before, _ = self.snapshot()
        trigger = self.rng.choices(TRIGGERS, weights=(15, 40, 30, 15))[0] if index > 0 else "order"
        self.triggers[trigger] += 1
        process = WatchedTwistd(
            self.reactor,
            self.configPath,
            os.path.join(self.directory, f"twistd-{index:03d}.log"),
        )
        spawned = self.reactor.seconds()
        # The sets whose stored certificate must be served at this start.
        lasting = {
            name
            for name, certifiedKey in before.items()
            if certifiedKey is not None and certifiedKey.notAfter.timestamp() > spawned + 4
        }
        problems: list[str] = []
        try:
            if trigger == "startup":
                await deferLater(self.reactor, self.rng.uniform(0.05, 1.5), lambda: None)
            elif trigger == "order":
                count = process.output.count(b" 20155 ") + self.rng.randint(1, 3)
                await process.seen(b" 20155 ", count).addTimeout(LIFETIME, self.reactor)
                await deferLater(self.reactor, self.rng.uniform(0, 0.4), lambda: None)
            elif trigger == "stored":
                await process.seen(b" 20015 ").addTimeout(LIFETIME, self.reactor)
                await deferLater(self.reactor, self.rng.uniform(0, 0.03), lambda: None)
            else:
                await process.seen(b" 20209 ").addTimeout(10, self.reactor)
                problems.extend(await self.probeTLS(lasting))
                self.tlsChecked += len(lasting)
                await deferLater(self.reactor, self.rng.uniform(0, 3), lambda: None)
        except Exception:
            # The awaited line did not come in time: kill anyway.
            pass
        await process.kill()
        self.logs.append(process.text())
        problems.extend(self.checkLog(process.text(), lasting))
        after, stateProblems = self.snapshot()
        problems.extend(stateProblems)
        lost = bool(stateProblems)
        for name, old in before.items():
            new = after.get(name)
            if old is None:
                continue
            if new is None:
                problems.append(f"{name}: the stored certificate is gone")
                lost = True
            elif new.notBefore < old.notBefore:
                problems.append(f"{name}: an older certificate came back")
                lost = True
        if self.exportMatches():
            self.exportMismatches += 1
        self.row.record(problems, lost)

    def checkLog(self, text: str, lasting: set[str]) -> list[str]:
        problems = []
        self.registrations += text.count(" 20154 ")
        for marker in ("Traceback", "Unhandled Error", "Unexpected error"):
            if marker in text:
                problems.append(f"{marker} in the log")
        if " 20151 " in text or " 20152 " in text:
            # The resource had loaded the state: the last good
            # certificates must have been served.
            lines = text.splitlines()
            self.lastGoodChecked += len(lasting)
            for name in lasting:
                named = [line for line in lines if f"for {label(SETS[name])}" in line]
                if not any(" 20158 " in line for line in named):
                    problems.append(f"{name}: its valid stored certificate was not loaded")
                if any(" 20153 " in line for line in named):
                    problems.append(f"{name}: provisional although a valid one was stored")
        # Where did the kill land?
        lines = text.splitlines()
        for domains in SETS.values():
            started = [
                i
                for i, line in enumerate(lines)
                if f" 20155 Requesting a certificate for {label(domains)} " in line
            ]
            ended = [
                i
                for i, line in enumerate(lines)
                if f" 20015 New certificate for {label(domains)} " in line
                or f" 20017 Failed to get a new certificate for {label(domains)}:" in line
            ]
            if started and (not ended or max(ended) < max(started)):
                self.midOrder += 1
        if lines and " 20015 " in lines[-1]:
            self.midWrite += 1
        return problems

    async def finalRun(self) -> list[str]:
        """
        Start once more, let every set get a CA certificate, check over TLS
        and through the export, and stop cleanly.
        """
        process = WatchedTwistd(
            self.reactor, self.configPath, os.path.join(self.directory, "twistd-final.log")
        )
        problems = []
        try:
            await process.seen(b" 20209 ").addTimeout(15, self.reactor)
            end = self.reactor.seconds() + 20
            while self.reactor.seconds() < end:
                certificates, stateProblems = self.snapshot()
                if (
                    all(
                        c is not None and c.notAfter.timestamp() > self.reactor.seconds() + 3
                        for c in certificates.values()
                    )
                    and not self.exportMatches()
                ):
                    break
                await deferLater(self.reactor, 0.5, lambda: None)
            problems.extend(stateProblems)
            problems.extend(await self.probeTLS(set(SETS)))
            mismatched = self.exportMatches()
            if mismatched:
                problems.append(f"export key and certificate differ for {mismatched}")
        finally:
            await process.terminate()
        self.logs.append(process.text())
        if "Server Shut Down." not in process.text():
            problems.append("no clean shutdown")
        self.registrations += process.text().count(" 20154 ")
        return problems

    async def run(self) -> list[Row]:
        await self.setUp()
        try:
            for index in range(self.runs):
                await self.runOnce(index)
            final = await self.finalRun()
        finally:
            await self.tearDown()
        self.row.notes.append(
            "kills: "
            + ", ".join(f"{count} at {trigger}" for trigger, count in self.triggers.items())
            + f"; {self.midOrder} orders cut short"
        )
        if self.registrations > 1:
            self.row.failures.append(f"20154 logged {self.registrations} times")
            self.row.passed = min(self.row.passed, self.row.runs - 1)
        self.row.notes.append(f"20154 logged {self.registrations} time(s) in all")
        self.row.notes.append(
            f"last good certificate served at {self.lastGoodChecked} set starts "
            f"({self.tlsChecked} also checked over TLS)"
        )
        self.row.notes.append(f"{self.leftovers()} temporary files left behind")
        self.row.notes.append(
            f"export key/certificate mismatch seen after {self.exportMismatches} kills"
        )
        finalRow = Row("clean start after the kills: every service on a CA certificate")
        finalRow.record(final)
        leakRow = Row(f"no key material in {len(self.logs)} twistd logs (debug = yes)")
        markers = [m for key in self.keys.values() for m in keyMarkers(key)]
        for text in self.logs:
            found = "PRIVATE KEY" in text or any(m in text for m in markers)
            leakRow.record(["a key in the log"] if found else [])
        leakRow.notes.append(f"{len(self.keys)} distinct keys looked for")
        return [self.row, finalRow, leakRow]


async def crashConsistency(reactor: Any, directory: str, runs: int, seed: int) -> list[Row]:
    return await CrashRun(reactor, directory, runs, seed).run()


class KilledTwistdTests(TestCACase):
    """
    The real twistd killed with C{SIGKILL} 50 times at random moments, and
    started again each time.
    """

    skip = skipUnlessSlow()
    timeout = 900

    async def test_killedAtRandomMoments(self) -> None:
        """
        After every kill the state loads, nothing stored is lost or older,
        the account stays the first one, and each start serves the last good
        certificates; a last clean start ends with every service on a CA
        certificate, and no log holds key material.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        assertAllPassed(self, await crashConsistency(reactor, directory, 50, 4))
