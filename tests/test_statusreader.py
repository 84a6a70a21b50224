"""
The operations command's status without a server
(L{letsencrypt_resource.statusreader}): the same rows as a whole resource
loaded on the same state gives, without the resource.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from letsencrypt_resource import certificates, host
from letsencrypt_resource.certificates import CertifiedKey, bundleDigest
from letsencrypt_resource.cli import run
from letsencrypt_resource.config import ServiceOptions
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.keys import keyToPEM, publicKeyDigest
from letsencrypt_resource.setloading import settingsFingerprint
from letsencrypt_resource.statusreader import offlineStatus
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.storage.records import Records, certificateKey, renewalKey
from letsencrypt_resource.testing import FakeACMEServer, MemoryStore
from tests.helpers.fullstatus import resourceStatus
from tests.helpers.resourcecase import DAY, resourceOptions

#: The domain sets of the fabricated state, by what is stored for them.
STORED = ("stored.example.test", "www.stored.example.test")
UNVOUCHED = ("unvouched.example.test",)
PROVISIONAL = ("provisional.example.test",)
EXPIRED = ("expired.example.test",)
FAILING = ("failing.example.test",)
PENDING = ("pending.example.test",)
CORRUPT = ("corrupt.example.test",)
CORRUPT_STATE = ("corrupt-state.example.test",)
OTHER_NAMES = ("other-names.example.test",)
COMPROMISED = ("compromised.example.test",)
CAPPED = ("capped.example.test",)
SETTINGS_CHANGED = ("settings.example.test",)
ARI = ("ari.example.test",)
WRONG_DIGEST = ("wrong-digest.example.test",)
WRONG_KEY = ("wrong-key.example.test",)

SETS = (
    STORED,
    UNVOUCHED,
    PROVISIONAL,
    EXPIRED,
    FAILING,
    PENDING,
    CORRUPT,
    CORRUPT_STATE,
    OTHER_NAMES,
    COMPROMISED,
    CAPPED,
    SETTINGS_CHANGED,
    ARI,
    WRONG_DIGEST,
    WRONG_KEY,
)


def service(section: str, domains: tuple[str, ...]) -> ServiceOptions:
    """
    An C{https} service of C{section} for C{domains}.
    """
    return ServiceOptions(
        section=section,
        type="https",
        name=section.rpartition("/")[2],
        description="",
        address="127.0.0.1",
        port=8443,
        domains=domains,
        path="/nonexistent",
        debug=False,
    )


class FabricatedState:
    """
    A state in memory holding every kind of domain set a status meets.
    """

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_800_000_000)
        self.server = FakeACMEServer(self.reactor)
        self.store = MemoryStore()
        self.options = resourceOptions()
        self.settings = settingsFingerprint(self.options)

    def issue(self, domains: tuple[str, ...], validity: float = 90 * DAY) -> CertifiedKey:
        """
        A certificate of the fake CA for C{domains} and a new key.
        """
        key = generateKey("ecdsa-p256")
        return CertifiedKey.fromParts(key, self.server.issue(key.public_key(), domains, validity))

    def storeCertificate(self, domains: tuple[str, ...], pem: bytes) -> None:
        self.store.values[certificateKey(domains)] = pem

    def storeState(self, domains: tuple[str, ...], **fields: Any) -> None:
        state = {"settings": self.settings, **fields}
        self.store.values[renewalKey(domains)] = json.dumps(state).encode()

    def fabricate(self) -> tuple[ServiceOptions, ...]:
        """
        Store the records of L{SETS}; return their services, one per set
        and a second one for L{STORED}, listing its names in another order.
        """
        now = self.reactor.seconds()
        for domains in (STORED, FAILING, CORRUPT_STATE, CAPPED, SETTINGS_CHANGED, ARI):
            pem = self.issue(domains).toPEM()
            self.storeCertificate(domains, pem)
            if domains == STORED:
                self.storeState(domains, certificate_digest=bundleDigest(pem))
        self.storeCertificate(UNVOUCHED, self.issue(UNVOUCHED).toPEM())
        expired = self.issue(EXPIRED, DAY).toPEM()
        self.storeCertificate(EXPIRED, expired)
        self.storeState(EXPIRED, certificate_digest=bundleDigest(expired))
        self.storeState(
            FAILING,
            failures=3,
            next_attempt=now + DAY + 600,
            last_failure=now + DAY - 60,
            last_error="urn:ietf:params:acme:error:rateLimited: too many",
        )
        pendingKey = generateKey("ecdsa-p256")
        self.storeState(
            PENDING,
            failures=1,
            next_attempt=now + DAY + 600,
            last_failure=now + DAY - 60,
            pending_order={
                "url": "https://acme.test/order/1",
                "key": keyToPEM(pendingKey).decode(),
            },
        )
        self.storeCertificate(CORRUPT, b"-----BEGIN CERTIFICATE-----\nnot one\n")
        self.storeState(CORRUPT, failures=2)
        self.store.values[renewalKey(CORRUPT_STATE)] = b"{not JSON"
        self.storeCertificate(OTHER_NAMES, self.issue(("elsewhere.example.test",)).toPEM())
        compromised = self.issue(COMPROMISED)
        self.storeCertificate(COMPROMISED, compromised.toPEM())
        self.storeState(
            COMPROMISED,
            compromised_keys=[publicKeyDigest(compromised.key)],
            certificate_digest=bundleDigest(compromised.toPEM()),
        )
        self.storeState(
            CAPPED, failures=3, next_attempt=now + 3 * 365 * DAY, ari_next_check=now + 3 * 365 * DAY
        )
        self.storeState(SETTINGS_CHANGED, settings="other", failures=5, next_attempt=now + 40 * DAY)
        self.storeState(ARI, ari_window=[now + 20 * DAY, now + 21 * DAY], ari_pick=0.25)
        wrong = self.issue(WRONG_DIGEST).toPEM()
        self.storeCertificate(WRONG_DIGEST, wrong)
        self.storeState(WRONG_DIGEST, certificate_digest=bundleDigest(wrong + b"\n"))
        mismatched = self.issue(WRONG_KEY)
        other = self.issue(WRONG_KEY)
        self.storeCertificate(WRONG_KEY, other.keyPEM + mismatched.fullchainPEM)
        # Time passes: the short certificate expires, the others are a day old.
        self.reactor.advance(DAY + 1)
        services = [
            service(f"services/s{index:02d}", domains) for index, domains in enumerate(SETS)
        ]
        services.append(service("services/zz-again", tuple(reversed(STORED))))
        return tuple(services)


class OfflineStatusTests(SynchronousTestCase):
    """
    L{offlineStatus} gives the rows of a whole resource loaded on the
    state, without it.
    """

    def test_asTheResource(self) -> None:
        """
        Over stored, unvouched, provisional-only, expired, failing,
        pending-order, corrupt, other-named, compromised, capped, ARI and
        wrong-digest or wrong-key sets, and a set shared by two services,
        the rows equal the resource's, in the same order.
        """
        state = FabricatedState()
        services = state.fabricate()
        expected = self.successResultOf(
            resourceStatus(state.options, services, state.store, state.reactor)
        )
        rows = self.successResultOf(
            offlineStatus(state.options, services, state.store, state.reactor)
        )
        self.assertEqual(len(rows), len(SETS))
        self.assertEqual(rows, expected)
        byNames = {frozenset(row["names"]): row for row in rows}
        self.assertFalse(byNames[frozenset(STORED)]["provisional"])
        self.assertEqual(byNames[frozenset(STORED)]["services"], ["s00", "zz-again"])
        for provisional in (PROVISIONAL, EXPIRED, CORRUPT, OTHER_NAMES, COMPROMISED, WRONG_KEY):
            self.assertTrue(byNames[frozenset(provisional)]["provisional"], provisional)
        self.assertEqual(byNames[frozenset(FAILING)]["failures"], 3)
        self.assertTrue(byNames[frozenset(PENDING)]["retry"])
        self.assertEqual(byNames[frozenset(CORRUPT)]["failures"], 2)

    def test_noKeyParsedWhenVouched(self) -> None:
        """
        The key of a stored certificate whose renewal state vouches for
        it is not parsed: no consumer uses it.
        """
        state = FabricatedState()
        pem = state.issue(STORED).toPEM()
        state.storeCertificate(STORED, pem)
        state.storeState(STORED, certificate_digest=bundleDigest(pem))
        parsed: list[bytes] = []
        keyFromPEM = certificates.keyFromPEM

        def recording(data: bytes) -> Any:
            parsed.append(data)
            return keyFromPEM(data)

        self.patch(certificates, "keyFromPEM", recording)
        [row] = self.successResultOf(
            offlineStatus(state.options, (service("s", STORED),), state.store, state.reactor)
        )
        self.assertFalse(row["provisional"])
        self.assertEqual(parsed, [])


#: A configuration of one set, its state directory beside it.
CONFIGURATION = """\
[resources/le]
type = lets-encrypt
address = 127.0.0.1
port = 1
acme_url = https://acme.test/directory
agree_tos = yes
challenge_site = no

[services/files]
type = https
name = files-https
address = 127.0.0.1
port = 2
path = {public}
ssl_domains = {names}
"""


class CommandTests(TestCase):
    """
    The operations command's C{status} without a server reads the state
    with L{offlineStatus}.
    """

    async def test_noResource(self) -> None:
        """
        C{status --json} with no server running makes no resource (the
        path it took before, with every consumer registered), and lists
        the stored certificate as a loaded resource would.
        """
        directory = os.path.abspath(self.mktemp())
        public = os.path.join(directory, "public")
        os.makedirs(public)
        path = os.path.join(directory, "server.ini")
        with open(path, "w") as stream:
            stream.write(CONFIGURATION.format(public=public, names=", ".join(STORED)))
        state = FabricatedState()
        pem = state.issue(STORED, 200 * 365 * DAY).toPEM()
        os.makedirs(os.path.join(directory, "lets-encrypt"), 0o700)
        storage = DirectoryStorage(os.path.join(directory, "lets-encrypt"), reactor)
        try:
            await Records(storage).saveCertificate(STORED, CertifiedKey.fromPEM(pem))
        finally:
            await storage.close()

        def noResource(*args: object, **kwargs: object) -> None:
            raise AssertionError("status made a resource")

        self.patch(host, "makeResource", noResource)
        out = io.StringIO()
        code = await run(reactor, ["--config", path, "status", "--json"], out, io.StringIO())
        self.assertEqual(code, 0, out.getvalue())
        [row] = json.loads(out.getvalue())
        self.assertEqual(row["names"], list(STORED))
        self.assertFalse(row["provisional"])
        self.assertFalse(row["server_running"])
