"""
Tests for L{letsencrypt_resource.listenerca}: the test CA's listener
certificate, kept across starts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.listenerca import (
    CA_FILE,
    CA_KEY_FILE,
    CA_LIFETIME,
    CERTIFICATE_FILE,
    CERTIFICATE_LIFETIME,
    KEY_FILE,
    listenerCertificate,
)
from letsencrypt_resource.safefs import UnusablePath

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


class ListenerCertificateTests(SynchronousTestCase):
    """
    Tests for L{listenerCertificate}.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())

    def contents(self) -> dict[str, bytes]:
        """
        The content of each file it keeps.
        """
        result = {}
        for name in (CA_FILE, CA_KEY_FILE, CERTIFICATE_FILE, KEY_FILE):
            with open(os.path.join(self.directory, name), "rb") as stream:
                result[name] = stream.read()
        return result

    def test_keptAcrossStarts(self) -> None:
        """
        A second start in the same folder keeps the CA and the listener
        certificate: a configuration trusting the CA file still verifies
        the restarted test CA.  The keys are readable by their owner only,
        and the folder is made private.
        """
        paths = listenerCertificate(self.directory, NOW)
        self.assertEqual(
            paths,
            tuple(os.path.join(self.directory, n) for n in (CA_FILE, CERTIFICATE_FILE, KEY_FILE)),
        )
        first = self.contents()
        self.assertEqual(
            listenerCertificate(self.directory, NOW + datetime.timedelta(days=30)), paths
        )
        self.assertEqual(self.contents(), first)
        for name in (CA_KEY_FILE, KEY_FILE):
            mode = stat.S_IMODE(os.stat(os.path.join(self.directory, name)).st_mode)
            self.assertEqual(mode, 0o600, name)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)

    def test_caLimitedToLoopback(self) -> None:
        """
        The CA, kept for years, may vouch only for C{localhost} and
        127.0.0.1 (a critical name constraint), as its listener
        certificate does.
        """
        caFile, certificateFile, _ = listenerCertificate(self.directory, NOW)
        with open(caFile, "rb") as stream:
            ca = x509.load_pem_x509_certificate(stream.read())
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
        self.assertTrue(constraints.critical)
        self.assertEqual(
            constraints.value.permitted_subtrees,
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_network("127.0.0.1/32"))],
        )
        with open(certificateFile, "rb") as stream:
            listener = x509.load_pem_x509_certificate(stream.read())
        names = listener.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(names.value.get_values_for_type(x509.DNSName), ["localhost"])

    def test_looseKeyModeRepaired(self) -> None:
        """
        A kept key that others can read (as an earlier version left it) is
        made 0600 again.
        """
        listenerCertificate(self.directory, NOW)
        key = os.path.join(self.directory, KEY_FILE)
        os.chmod(key, 0o644)
        listenerCertificate(self.directory, NOW)
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)

    def test_listenerRenewedBySameCA(self) -> None:
        """
        A listener certificate near its end is signed again by the same CA:
        the CA file does not change.
        """
        listenerCertificate(self.directory, NOW)
        first = self.contents()
        later = NOW + CERTIFICATE_LIFETIME
        listenerCertificate(self.directory, later)
        second = self.contents()
        self.assertEqual(second[CA_FILE], first[CA_FILE])
        self.assertNotEqual(second[CERTIFICATE_FILE], first[CERTIFICATE_FILE])
        certificate = x509.load_pem_x509_certificate(second[CERTIFICATE_FILE])
        certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(second[CA_FILE]))
        self.assertGreater(certificate.not_valid_after_utc, later + datetime.timedelta(days=1))

    def test_expiredCAReplaced(self) -> None:
        """
        A CA near its end is replaced, and so is the certificate it signed.
        """
        listenerCertificate(self.directory, NOW)
        first = self.contents()
        listenerCertificate(self.directory, NOW + CA_LIFETIME)
        second = self.contents()
        for name in first:
            self.assertNotEqual(second[name], first[name], name)

    def test_mismatchedKeyReplaced(self) -> None:
        """
        A CA certificate whose key file holds another key is not used: a new
        CA is made, and the listener certificate signed by it.
        """
        listenerCertificate(self.directory, NOW)
        first = self.contents()
        with open(os.path.join(self.directory, CA_KEY_FILE), "wb") as stream:
            stream.write(first[KEY_FILE])
        listenerCertificate(self.directory, NOW)
        second = self.contents()
        self.assertNotEqual(second[CA_FILE], first[CA_FILE])
        certificate = x509.load_pem_x509_certificate(second[CERTIFICATE_FILE])
        certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(second[CA_FILE]))

    def test_linkNotFollowed(self) -> None:
        """
        A link at a key's name is replaced, never read nor written through.
        """
        listenerCertificate(self.directory, NOW)
        target = os.path.abspath(self.mktemp())
        with open(target, "wb") as stream:
            stream.write(b"not yours")
        key = os.path.join(self.directory, CA_KEY_FILE)
        os.unlink(key)
        os.symlink(target, key)
        listenerCertificate(self.directory, NOW)
        self.assertFalse(os.path.islink(key))
        with open(target, "rb") as stream:
            self.assertEqual(stream.read(), b"not yours")

    def test_sharedFolderRefused(self) -> None:
        """
        A folder others can write in is refused before anything is written.
        """
        os.makedirs(self.directory)
        os.chmod(self.directory, 0o777)
        self.assertRaises(UnusablePath, listenerCertificate, self.directory, NOW)
        self.assertEqual(os.listdir(self.directory), [])
