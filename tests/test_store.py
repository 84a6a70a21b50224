"""
Tests for what only the state directory and the store directory have: the
records as files (L{DirectoryStorage
<letsencrypt_resource.storage.directory.DirectoryStorage>} under
L{Records <letsencrypt_resource.storage.records.Records>}), the removal of
what crashed writes left, the export, and the checks that they can be
written (L{letsencrypt_resource.storage.checks}).
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.config import (
    ConfigurationError,
    ResourceOptions,
    loadConfiguration,
)
from letsencrypt_resource.host import checkFileSystem
from letsencrypt_resource.keys import keyToPEM
from letsencrypt_resource.storage.checks import checkStorage
from letsencrypt_resource.storage.directory import removeTemporaryFiles
from letsencrypt_resource.storage.export import EXPORTED_FILES, exportCertificate
from letsencrypt_resource.storage.interface import StorageError
from letsencrypt_resource.storage.records import AccountRecord
from tests.helpers import newSigner, provisionalFor, sharedKey
from tests.helpers.files import (
    OTHER_UID,
    PermissiveUmaskMixin,
    giveAway,
    modeOf,
    readBytes,
    runningAs,
)
from tests.helpers.statedir import StateDirectory

ACME_URL = "https://acme.example/directory"
ACCOUNT_URL = "https://acme.example/account/17"
DOMAINS = ("example.com", "www.example.com")


class StateDirectoryTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Tests for the records as files in a state directory.
    """

    def setUp(self) -> None:
        super().setUp()
        self.root = os.path.join(self.base, "state")
        self.store = StateDirectory(self.root)

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
        self.assertEqual((keyToPEM(loaded.key), loaded.url), (keyToPEM(record.key), record.url))
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
        whose key C{saveCertificate} returns.
        """
        provisional = provisionalFor(newSigner(), DOMAINS)
        path = os.path.join(self.root, self.store.saveCertificate(DOMAINS, provisional))
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
        self.assertEqual(modes, {path: 0o700 if os.path.isdir(path) else 0o600 for path in modes})

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
        A write that fails raises L{StorageError} naming the file.
        """
        os.makedirs(self.root)
        with open(os.path.join(self.root, "certificates"), "wb"):
            pass
        error = self.assertRaises(
            StorageError,
            self.store.saveCertificate,
            DOMAINS,
            provisionalFor(newSigner(), DOMAINS),
        )
        self.assertIn(os.path.join(self.root, "certificates"), error.key)

    def test_renewalStatePrivate(self) -> None:
        """
        Saving a renewal state into a new store makes it private.
        """
        self.store.saveRenewalState(DOMAINS, {})
        self.assertPrivate()

    def assertDamaged(self, path: str, content: bytes, load: object) -> None:
        """
        Assert that with C{content} at C{path}, calling C{load} raises
        L{StorageError} naming C{path}.
        """
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(content)
        error = self.assertRaises(StorageError, load)
        self.assertEqual(os.path.join(self.root, error.key), path)
        self.assertTrue(str(error).startswith(error.key + ": "))

    def test_damagedCertificate(self) -> None:
        """
        A damaged certificate file gives L{StorageError} naming it.
        """
        pem = provisionalFor(newSigner(), DOMAINS).toPEM()
        key = self.store.saveCertificate(DOMAINS, provisionalFor(newSigner(), DOMAINS))
        path = os.path.join(self.root, key)
        for content in [b"", b"garbage", pem[: len(pem) // 2], pem[200:]]:
            self.assertDamaged(path, content, lambda: self.store.loadCertificate(DOMAINS))

    def test_damagedAccount(self) -> None:
        """
        A damaged account file gives L{StorageError} naming it.
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
        A renewal state that is not a JSON object gives L{StorageError}
        naming its file.
        """
        self.store.saveRenewalState(DOMAINS, {})
        (name,) = os.listdir(os.path.join(self.root, "renewal"))
        path = os.path.join(self.root, "renewal", name)
        for content in [b"", b"{not json", b"\xff", b"[1, 2]"]:
            self.assertDamaged(path, content, lambda: self.store.loadRenewalState(DOMAINS))


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
        self.assertEqual(folder, os.path.join(self.directory, "example.com_www.example.com"))
        contents = {name: readBytes(os.path.join(folder, name)) for name in os.listdir(folder)}
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
        A failed export raises L{StorageError} naming the folder.
        """
        blocker = os.path.join(self.directory, "example.com_www.example.com")
        with open(blocker, "wb"):
            pass
        error = self.assertRaises(StorageError, self.export, self.provisional)
        self.assertEqual(error.key, blocker)


class TemporaryFilesTests(SynchronousTestCase):
    """
    Tests for L{removeTemporaryFiles}.
    """

    def test_removesWhatACrashLeft(self) -> None:
        """
        The temporary files of writes cut short are removed, in every folder
        of the state directory; the stored files stay.
        """
        path = self.mktemp()
        store = StateDirectory(path)
        store.saveProvisionalSigner(b"signer")
        folder = os.path.join(path, "certificates")
        os.makedirs(folder)
        for name in (".a.pem.123.tmp", ".b.json.9.tmp"):
            with open(os.path.join(folder, name), "wb") as stream:
                stream.write(b"half")
        self.assertEqual(removeTemporaryFiles(path), 2)
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

    def test_otherUsersFoldersLeftAlone(self) -> None:
        """
        Nothing is removed from a folder of another user: the product never
        wrote there, and its files are not the product's to delete.
        """
        folder = os.path.join(self.mktemp(), "www.example.test")
        os.makedirs(folder)
        with open(os.path.join(folder, ".cert.pem.123.tmp"), "wb") as stream:
            stream.write(b"theirs")
        giveAway(folder)
        self.assertEqual(removeTemporaryFiles(os.path.dirname(folder)), 0)
        self.assertEqual(os.listdir(folder), [".cert.pem.123.tmp"])


#: A domain set whose names joined are too long for a file name: 20 names
#: of 32 characters.
MANY = tuple(f"{index:02d}-{'n' * 18}.example.test" for index in range(20))
#: A set of one 252-character name.
LONGEST = (".".join(["a" * 62, "b" * 62, "c" * 62, "d" * 60, "test"]),)


class LongNameTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Any valid domain set can be stored and exported: its file names fit.
    """

    def setUp(self) -> None:
        super().setUp()
        self.store = StateDirectory(os.path.join(self.base, "state"))
        self.certificate = provisionalFor(newSigner())

    def test_longSetsStored(self) -> None:
        """
        The certificate, renewal state and export of 20 names of 32
        characters, or of one 252-character name, are written and read
        back, under names of at most 255 bytes, temporary names included.
        """
        for domains in (MANY, LONGEST):
            key = self.store.saveCertificate(domains, self.certificate)
            self.store.saveRenewalState(domains, {"failures": 1})
            folder = exportCertificate(os.path.join(self.base, "export"), domains, self.certificate)
            loaded = self.store.loadCertificate(domains)
            assert loaded is not None
            self.assertEqual(loaded.keyPEM, self.certificate.keyPEM)
            self.assertEqual(self.store.loadRenewalState(domains), {"failures": 1})
            name = os.path.basename(folder)
            self.assertEqual(os.path.basename(key), f"{name}.pem")
            self.assertLessEqual(len(f".{name}.json.{2**32}.tmp"), 255)
            self.assertTrue(name.startswith(domains[0][:40]), name)

    def test_shortNamesKept(self) -> None:
        """
        A set whose joined names fit keeps them as its file name, so that
        certificates stored before are found.
        """
        key = self.store.saveCertificate(DOMAINS, self.certificate)
        self.assertEqual(os.path.basename(key), "example.com_www.example.com.pem")

    def test_setsKeptApart(self) -> None:
        """
        Two long sets that differ only at their end get different names.
        """
        other = MANY[:-1] + ("other.example.test",)
        self.store.saveCertificate(MANY, self.certificate)
        self.assertIsNone(self.store.loadCertificate(other))


class PlantedPathTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Writes into a state or store directory where an attacker planted a link
    or a folder of their own are refused with L{StorageError}, and nothing is
    written or changed where those point.
    """

    def setUp(self) -> None:
        super().setUp()
        self.root = os.path.join(self.base, "state")
        self.store = StateDirectory(self.root)
        self.certificate = provisionalFor(newSigner(), DOMAINS)
        self.elsewhere = os.path.join(self.base, "elsewhere")
        os.mkdir(self.elsewhere, 0o755)

    def assertUntouched(self) -> None:
        """
        Assert that the folder a link pointed to is as it was: empty, 0755.
        """
        self.assertEqual((os.listdir(self.elsewhere), modeOf(self.elsewhere)), ([], 0o755))

    def test_linkedSubfolder(self) -> None:
        """
        A link planted as the state directory's C{certificates} folder is
        neither written through nor chmodded through.
        """
        os.mkdir(self.root, 0o700)
        os.symlink(self.elsewhere, os.path.join(self.root, "certificates"))
        error = self.assertRaises(
            StorageError, self.store.saveCertificate, DOMAINS, self.certificate
        )
        self.assertIn("symbolic link", str(error))
        self.assertUntouched()

    def test_linkedStateDirectory(self) -> None:
        """
        A state directory that is a link is refused.
        """
        os.symlink(self.elsewhere, self.root)
        self.assertRaises(StorageError, self.store.saveProvisionalSigner, b"signer")
        self.assertUntouched()

    def test_linkedFile(self) -> None:
        """
        A link planted at a stored file's name is replaced, not written
        through; reading it does not follow it either.
        """
        self.store.saveProvisionalSigner(b"old")
        victim = os.path.join(self.elsewhere, "victim")
        with open(victim, "wb") as stream:
            stream.write(b"precious")
        signer = os.path.join(self.root, "provisional-signer.pem")
        os.unlink(signer)
        os.symlink(victim, signer)
        self.assertRaises(StorageError, self.store.loadProvisionalSigner)
        self.store.saveProvisionalSigner(b"new")
        self.assertEqual((readBytes(victim), readBytes(signer)), (b"precious", b"new"))

    def test_foreignStateDirectory(self) -> None:
        """
        A state directory another user made first is refused, and keeps its
        owner and mode.
        """
        os.mkdir(self.root, 0o755)
        giveAway(self.root)
        error = self.assertRaises(StorageError, self.store.saveProvisionalSigner, b"s")
        self.assertIn("owned by another user", error.message)
        status = os.stat(self.root)
        self.assertEqual((status.st_uid, modeOf(self.root)), (OTHER_UID, 0o755))

    def test_linkedExportFolder(self) -> None:
        """
        A link planted as a certificate's export folder is not written
        through.
        """
        export = os.path.join(self.base, "export")
        os.mkdir(export, 0o755)
        os.symlink(self.elsewhere, os.path.join(export, "example.com_www.example.com"))
        self.assertRaises(StorageError, exportCertificate, export, DOMAINS, self.certificate)
        self.assertUntouched()

    def test_foreignExportFolder(self) -> None:
        """
        A certificate's export folder that another user made first is not
        written in, and the store directory of another user neither.
        """
        export = os.path.join(self.base, "export")
        folder = os.path.join(export, "example.com_www.example.com")
        os.makedirs(folder, 0o755)
        giveAway(folder)
        self.assertRaises(StorageError, exportCertificate, export, DOMAINS, self.certificate)
        self.assertEqual(os.listdir(folder), [])
        os.rmdir(folder)
        giveAway(export)
        self.assertRaises(StorageError, exportCertificate, export, DOMAINS, self.certificate)
        self.assertEqual(os.listdir(export), [])


class CheckCertificateWritableTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Tests for L{checkCertificateWritable
    <letsencrypt_resource.storage.checks.checkCertificateWritable>}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.root = os.path.join(self.base, "state")
        self.export = os.path.join(self.base, "export")
        self.store = StateDirectory(self.root, self.export)

    def test_writable(self) -> None:
        """
        A new state directory and store directory that can be created pass,
        and are not created; after a write, they pass again.
        """
        self.store.checkCertificateWritable(MANY)
        self.assertEqual(os.listdir(self.base), [])
        self.store.saveCertificate(DOMAINS, provisionalFor(newSigner(), DOMAINS))
        self.store.checkCertificateWritable(DOMAINS)

    def test_unsafe(self) -> None:
        """
        A link planted in the state directory, or as the export folder, is
        refused.
        """
        os.mkdir(self.root, 0o700)
        os.symlink(self.base, os.path.join(self.root, "renewal"))
        error = self.assertRaises(StorageError, self.store.checkCertificateWritable, DOMAINS)
        self.assertEqual(error.key, os.path.join(self.root, "renewal"))
        os.unlink(os.path.join(self.root, "renewal"))
        os.mkdir(self.export)
        os.symlink(self.base, os.path.join(self.export, "_".join(DOMAINS)))
        self.assertRaises(StorageError, self.store.checkCertificateWritable, DOMAINS)

    def test_blockedByFile(self) -> None:
        """
        A file where a folder must be is refused.
        """
        with open(self.export, "wb"):
            pass
        error = self.assertRaises(StorageError, self.store.checkCertificateWritable, DOMAINS)
        self.assertIn("is not a folder", error.message)

    def test_folderAtFileName(self) -> None:
        """
        A folder where the certificate or the renewal state is to be
        written (what a bad restore can leave) is refused: the certificate
        could be ordered, but not stored.
        """
        self.store.saveCertificate(MANY, provisionalFor(newSigner(), DOMAINS))
        self.store.saveRenewalState(MANY, {})
        for kind, suffix in (("certificates", ".pem"), ("renewal", ".json")):
            path = os.path.join(self.root, kind, "_".join(DOMAINS) + suffix)
            os.mkdir(path)
            error = self.assertRaises(StorageError, self.store.checkCertificateWritable, DOMAINS)
            self.assertEqual(error.key, path)
            os.rmdir(path)
        self.store.checkCertificateWritable(DOMAINS)

    def test_notWritable(self) -> None:
        """
        For a user that cannot write in the store directory, or create the
        state directory, the check fails.
        """
        os.chmod(os.path.dirname(self.base), 0o755)
        os.chmod(self.base, 0o755)
        os.mkdir(self.export, 0o755)
        with runningAs(OTHER_UID):
            error = self.assertRaises(StorageError, self.store.checkCertificateWritable, DOMAINS)
        self.assertIn("is not writable", error.message)


class CheckStorageTests(PermissiveUmaskMixin, SynchronousTestCase):
    """
    Tests for L{checkStorage}: the state and store directories are checked
    at start, naming the option, before anything is touched.
    """

    def options(self, state: str, store: str | None = None) -> ResourceOptions:
        """
        Resource options with these directories.
        """
        return ResourceOptions(
            section="resources/le",
            address="127.0.0.1",
            acmeURL="https://acme.example/dir",
            stateDirectory=state,
            storeDirectory=store,
            keyType="ecdsa-p256",
        )

    def refused(self, options: ResourceOptions, option: str) -> ConfigurationError:
        """
        Assert that L{checkStorage} refuses C{options}, naming C{option}.
        """
        error = self.assertRaises(ConfigurationError, checkStorage, options)
        self.assertEqual((error.section, error.option), ("resources/le", option))
        return error

    def test_stateDirectoryIsAFile(self) -> None:
        """
        A state directory that is a file is refused, and the file keeps its
        mode.
        """
        path = os.path.join(self.base, "file")
        with open(path, "wb"):
            pass
        os.chmod(path, 0o644)
        error = self.refused(self.options(path), "state_directory")
        self.assertIn("is not a folder", str(error))
        self.assertEqual(modeOf(path), 0o644)

    def test_linksAndForeign(self) -> None:
        """
        A state directory or store directory that is a link, writable by
        others or of another user is refused.
        """
        good = os.path.join(self.base, "good")
        os.mkdir(good, 0o700)
        link = os.path.join(self.base, "link")
        os.symlink(good, link)
        shared = os.path.join(self.base, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        for bad in (link, shared):
            self.refused(self.options(bad), "state_directory")
            self.refused(self.options(good, bad), "store_directory")
        foreign = os.path.join(self.base, "foreign")
        os.mkdir(foreign, 0o700)
        giveAway(foreign)
        self.refused(self.options(foreign), "state_directory")
        self.refused(self.options(good, foreign), "store_directory")

    def test_stickyStoreDirectory(self) -> None:
        """
        A store directory of the server's user made sticky and writable by
        all, as C{/tmp} is, is refused at start naming C{store_directory}:
        in it any user could make first the folder of a certificate, and
        no order would ever be placed.  A sticky folder above it is fine.
        """
        state = os.path.join(self.base, "state")
        store = os.path.join(self.base, "store")
        os.mkdir(store)
        os.chmod(store, 0o1777)
        error = self.refused(self.options(state, store), "store_directory")
        self.assertIn("writable by group or others", str(error))
        self.refused(self.options(store), "state_directory")
        os.chmod(store, 0o700)
        os.chmod(self.base, 0o1777)
        checkStorage(self.options(state, store))

    def test_checkedAtStart(self) -> None:
        """
        The file-system checks of a configuration, run before the server
        starts, refuse a C{state_directory} that is a file, naming the
        option, and leave the file as it was.
        """
        path = os.path.join(self.base, "server.ini")
        with open(path, "w") as stream:
            stream.write(
                "[resources/le]\ntype = lets-encrypt\naddress = 127.0.0.1\n"
                "state_directory = server.ini\n"
            )
        os.chmod(path, 0o644)
        error = self.assertRaises(ConfigurationError, checkFileSystem, loadConfiguration(path))
        self.assertEqual(error.option, "state_directory")
        self.assertEqual(modeOf(path), 0o644)

    def test_usable(self) -> None:
        """
        Missing directories that can be created pass, and are not created.
        """
        checkStorage(
            self.options(os.path.join(self.base, "a", "state"), os.path.join(self.base, "b"))
        )
        self.assertEqual(os.listdir(self.base), [])
