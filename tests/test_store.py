"""
Tests for L{letsencrypt_resource.store}.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.interfaces import ICertificateStore
from letsencrypt_resource.keys import keyToPEM
from letsencrypt_resource.store import (
    EXPORTED_FILES,
    AccountRecord,
    DirectoryStore,
    StoreError,
    exportCertificate,
    removeTemporaryFiles,
)

from .helpers import newSigner, provisionalFor, sharedKey
from .test_safefs import PermissiveUmaskMixin, modeOf, readBytes

ACME_URL = "https://acme.example/directory"
ACCOUNT_URL = "https://acme.example/account/17"
DOMAINS = ("example.com", "www.example.com")


class DirectoryStoreTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Tests for L{DirectoryStore}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.root = os.path.join(self.base, "state")
        self.store = DirectoryStore(self.root)

    def test_interface(self) -> None:
        """
        L{DirectoryStore} provides L{ICertificateStore}.
        """
        self.assertTrue(verifyObject(ICertificateStore, self.store))

    def test_nothingStored(self) -> None:
        """
        An empty store has no account, certificate or signer.
        """
        self.assertEqual(
            (
                self.store.loadAccount(ACME_URL),
                self.store.loadCertificate(DOMAINS),
                self.store.loadProvisionalSigner(),
            ),
            (None, None, None),
        )

    def assertAccountRoundTrip(self, record: AccountRecord) -> None:
        """
        Assert that C{record} is loaded back as saved, for its ACME URL only.
        """
        self.store.saveAccount(ACME_URL, record)
        loaded = self.store.loadAccount(ACME_URL)
        assert loaded is not None
        self.assertEqual(
            (keyToPEM(loaded.key), loaded.url), (keyToPEM(record.key), record.url)
        )
        self.assertIsNone(self.store.loadAccount(ACME_URL + "/other"))

    def test_accountRSA(self) -> None:
        """
        An account with an RSA key round-trips.
        """
        self.assertAccountRoundTrip(AccountRecord(sharedKey("rsa-2048"), ACCOUNT_URL))

    def test_accountEC(self) -> None:
        """
        An account with an EC key and no URL yet round-trips.
        """
        self.assertAccountRoundTrip(AccountRecord(sharedKey("ecdsa-p384")))

    def test_certificate(self) -> None:
        """
        A certificate round-trips; its key and chain are in the one file
        whose path C{saveCertificate} returns.
        """
        provisional = provisionalFor(newSigner(), DOMAINS)
        path = self.store.saveCertificate(DOMAINS, provisional)
        loaded = self.store.loadCertificate(DOMAINS)
        assert loaded is not None
        self.assertEqual(
            (loaded.keyPEM, loaded.certificate, loaded.chain),
            (provisional.keyPEM, provisional.certificate, provisional.chain),
        )
        self.assertEqual(readBytes(path), provisional.toPEM())
        self.assertIsNone(self.store.loadCertificate(DOMAINS[:1]))

    def test_provisionalSigner(self) -> None:
        """
        The provisional signer round-trips.
        """
        pem = newSigner().toPEM()
        self.store.saveProvisionalSigner(pem)
        self.assertEqual(self.store.loadProvisionalSigner(), pem)

    def test_renewalState(self) -> None:
        """
        The renewal state of a domain set round-trips, apart from others'.
        """
        state = {"failures": 2, "nextAttempt": 1700000000.5, "note": None}
        self.store.saveRenewalState(DOMAINS, state)
        self.assertEqual(
            (
                self.store.loadRenewalState(DOMAINS),
                self.store.loadRenewalState(DOMAINS[:1]),
            ),
            (state, None),
        )

    def assertPrivate(self) -> None:
        """
        Assert that every folder in the store, its own included, is 0700 and
        every file 0600.
        """
        modes = {}
        for folder, _, files in os.walk(self.root):
            modes[folder] = modeOf(folder)
            for name in files:
                modes[os.path.join(folder, name)] = modeOf(os.path.join(folder, name))
        self.assertEqual(
            modes, {path: 0o700 if os.path.isdir(path) else 0o600 for path in modes}
        )

    def test_accountPrivate(self) -> None:
        """
        Saving an account into a new store makes it private.
        """
        self.store.saveAccount(ACME_URL, AccountRecord(sharedKey("ecdsa-p256")))
        self.assertPrivate()

    def test_certificatePrivate(self) -> None:
        """
        Saving a certificate into a new store makes it private.
        """
        self.store.saveCertificate(DOMAINS, provisionalFor(newSigner(), DOMAINS))
        self.assertPrivate()

    def test_signerPrivate(self) -> None:
        """
        Saving the provisional signer into a new store makes it private.
        """
        self.store.saveProvisionalSigner(newSigner().toPEM())
        self.assertPrivate()

    def test_writeFails(self) -> None:
        """
        A write that fails raises L{StoreError} naming the file.
        """
        os.makedirs(self.root)
        with open(os.path.join(self.root, "certificates"), "wb"):
            pass
        error = self.assertRaises(
            StoreError,
            self.store.saveCertificate,
            DOMAINS,
            provisionalFor(newSigner(), DOMAINS),
        )
        self.assertIn(os.path.join(self.root, "certificates"), error.path)

    def test_renewalStatePrivate(self) -> None:
        """
        Saving a renewal state into a new store makes it private.
        """
        self.store.saveRenewalState(DOMAINS, {})
        self.assertPrivate()

    def assertDamaged(self, path: str, content: bytes, load: object) -> None:
        """
        Assert that with C{content} at C{path}, calling C{load} raises
        L{StoreError} naming C{path}.
        """
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(content)
        error = self.assertRaises(StoreError, load)
        self.assertEqual(error.path, path)
        self.assertTrue(str(error).startswith(path + ": "))

    def test_damagedCertificate(self) -> None:
        """
        A damaged certificate file gives L{StoreError} naming it.
        """
        pem = provisionalFor(newSigner(), DOMAINS).toPEM()
        path = self.store.saveCertificate(DOMAINS, provisionalFor(newSigner(), DOMAINS))
        for content in [b"", b"garbage", pem[: len(pem) // 2], pem[200:]]:
            self.assertDamaged(
                path, content, lambda: self.store.loadCertificate(DOMAINS)
            )

    def test_damagedAccount(self) -> None:
        """
        A damaged account file gives L{StoreError} naming it.
        """
        self.store.saveAccount(ACME_URL, AccountRecord(sharedKey("ecdsa-p256")))
        (name,) = os.listdir(os.path.join(self.root, "accounts"))
        path = os.path.join(self.root, "accounts", name)
        for content in [
            b"",
            b"{not json",
            b"\xff\xfe",
            b"[]",
            b"null",
            json.dumps({"url": ACCOUNT_URL}).encode("ascii"),
            json.dumps({"key": "not a key"}).encode("ascii"),
            json.dumps({"key": 17}).encode("ascii"),
        ]:
            self.assertDamaged(path, content, lambda: self.store.loadAccount(ACME_URL))


    def test_damagedRenewalState(self) -> None:
        """
        A renewal state that is not a JSON object gives L{StoreError}
        naming its file.
        """
        self.store.saveRenewalState(DOMAINS, {})
        (name,) = os.listdir(os.path.join(self.root, "renewal"))
        path = os.path.join(self.root, "renewal", name)
        for content in [b"", b"{not json", b"\xff", b"[1, 2]"]:
            self.assertDamaged(
                path, content, lambda: self.store.loadRenewalState(DOMAINS)
            )

class ExportCertificateTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Tests for L{exportCertificate}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.directory = self.base
        self.provisional = provisionalFor(newSigner(), DOMAINS)

    def export(self, certifiedKey: CertifiedKey) -> str:
        """
        Export C{certifiedKey} for L{DOMAINS} under the test folder.
        """
        return exportCertificate(self.directory, DOMAINS, certifiedKey)

    def test_files(self) -> None:
        """
        The folder named after the domains holds the key, the certificate,
        the chain and the full chain.
        """
        folder = self.export(self.provisional)
        self.assertEqual(
            folder, os.path.join(self.directory, "example.com_www.example.com")
        )
        contents = {
            name: readBytes(os.path.join(folder, name)) for name in os.listdir(folder)
        }
        self.assertEqual(
            contents,
            {
                "privkey.pem": self.provisional.keyPEM,
                "cert.pem": self.provisional.certificatePEM,
                "chain.pem": self.provisional.chainPEM,
                "fullchain.pem": contents["cert.pem"] + contents["chain.pem"],
            },
        )

    def test_modes(self) -> None:
        """
        The folder is 0700 and the key 0600.
        """
        folder = self.export(self.provisional)
        self.assertEqual(
            (modeOf(folder), modeOf(os.path.join(folder, "privkey.pem"))),
            (0o700, 0o600),
        )

    def test_replaces(self) -> None:
        """
        A new export replaces the files of the previous one.
        """
        self.export(self.provisional)
        renewed = provisionalFor(newSigner(), DOMAINS)
        folder = self.export(renewed)
        self.assertEqual(
            [readBytes(os.path.join(folder, n)) for n in ("privkey.pem", "cert.pem")],
            [renewed.keyPEM, renewed.certificatePEM],
        )

    def test_failure(self) -> None:
        """
        A failed export raises L{StoreError} naming the folder.
        """
        blocker = os.path.join(self.directory, "example.com_www.example.com")
        with open(blocker, "wb"):
            pass
        error = self.assertRaises(StoreError, self.export, self.provisional)
        self.assertEqual(error.path, blocker)


class TemporaryFilesTests(SynchronousTestCase):
    """
    Tests for L{DirectoryStore.removeTemporaryFiles}.
    """

    def test_removesWhatACrashLeft(self) -> None:
        """
        The temporary files of writes cut short are removed, in every folder
        of the state directory; the stored files stay.
        """
        path = self.mktemp()
        store = DirectoryStore(path)
        store.saveProvisionalSigner(b"signer")
        folder = os.path.join(path, "certificates")
        os.makedirs(folder)
        for name in (".a.pem.123.tmp", ".b.json.9.tmp"):
            with open(os.path.join(folder, name), "wb") as stream:
                stream.write(b"half")
        self.assertEqual(store.removeTemporaryFiles(), 2)
        self.assertEqual(os.listdir(folder), [])
        self.assertEqual(store.loadProvisionalSigner(), b"signer")

    def test_onlyExportedNames(self) -> None:
        """
        In a store directory, only the temporary files of the exported
        names are removed: other programs' files stay.
        """
        folder = os.path.join(self.mktemp(), "www.example.test")
        os.makedirs(folder)
        names = [".cert.pem.123.tmp", ".privkey.pem.7.tmp", ".other.txt.5.tmp", "cert.pem"]
        for name in names:
            with open(os.path.join(folder, name), "wb") as stream:
                stream.write(b"data")
        removed = removeTemporaryFiles(os.path.dirname(folder), only=EXPORTED_FILES)
        self.assertEqual(removed, 2)
        self.assertEqual(sorted(os.listdir(folder)), [".other.txt.5.tmp", "cert.pem"])
