"""
Tests for IP address certificates (RFC 8738): reading addresses in
C{ssl_domains}, the names certificates and CSRs carry for them, provisional
certificates for them, and the check of Let's Encrypt's profile at load.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.certificates import certificateNames
from letsencrypt_resource.config import (
    LETS_ENCRYPT_PRODUCTION,
    LETS_ENCRYPT_STAGING,
    ConfigurationError,
    parseConfiguration,
)
from letsencrypt_resource.domains import (
    InvalidDomain,
    isIPAddress,
    normalizeIPAddress,
    parseDomainList,
)
from letsencrypt_resource.keys import generateKey, makeCSR
from letsencrypt_resource.provisional import makeProvisional, makeSigner, signerProblem
from tests.helpers.configuration import BASE, resource, service

NOW = datetime.datetime(2026, 11, 29, tzinfo=datetime.timezone.utc)


class ParseAddressTests(SynchronousTestCase):
    """
    Tests for IP addresses in L{parseDomainList}.
    """

    def test_normalised(self) -> None:
        """
        IPv4 and IPv6 addresses are kept in their normal form (IPv6
        compressed, lower case), beside domain names, in order and without
        repeats; private and loopback ones are accepted.
        """
        self.assertEqual(
            parseDomainList(
                "files.example.com, 192.0.2.7, 2001:DB8:0:0::1, 2001:db8::1, 10.0.0.1, 127.0.0.1"
            ),
            ("files.example.com", "192.0.2.7", "2001:db8::1", "10.0.0.1", "127.0.0.1"),
        )

    def test_refused(self) -> None:
        """
        Addresses no certificate can be validated for are refused, saying
        why.
        """
        for text, expected in [
            ("0.0.0.0", "not the address of one host"),
            ("::", "not the address of one host"),
            ("224.0.0.1", "not the address of one host"),
            ("ff02::1", "not the address of one host"),
            ("fe80::1%eth0", "has a zone"),
            ("::ffff:192.0.2.1", "write 192.0.2.1 instead"),
        ]:
            error = self.assertRaises(InvalidDomain, parseDomainList, f"a.example.com, {text}")
            self.assertIn(expected, str(error))

    def test_notAddresses(self) -> None:
        """
        Names that merely look numeric are no addresses: they go through the
        rules of domain names.
        """
        self.assertIsNone(normalizeIPAddress("192.0.2"))
        self.assertFalse(isIPAddress("192.0.2.7.example.com"))
        self.assertRaises(InvalidDomain, parseDomainList, "192.0.2")

    def test_domainNamesNotParsed(self) -> None:
        """
        A name that neither ends in a digit nor holds a colon is no address
        without asking C{ipaddress}, whose error for it is slow; addresses
        of both families are still found, and reversed for the ALPN
        validation's server name.
        """
        from letsencrypt_resource import alpn, domains

        def refuse(name: object) -> None:
            raise AssertionError(f"ipaddress asked about {name!r}")

        original = ipaddress.ip_address
        self.patch(domains.ipaddress, "ip_address", refuse)
        self.assertFalse(isIPAddress("files.example.com"))
        self.assertFalse(isIPAddress(""))
        self.assertEqual(alpn.serverName("files.example.com"), "files.example.com")
        self.patch(domains.ipaddress, "ip_address", original)
        self.assertTrue(isIPAddress("192.0.2.7"))
        self.assertTrue(isIPAddress("2001:db8::a"))
        self.assertEqual(alpn.serverName("192.0.2.7"), "7.2.0.192.in-addr.arpa")


class AddressNamesTests(SynchronousTestCase):
    """
    IP addresses in CSRs, certificates and provisional certificates.
    """

    def test_csr(self) -> None:
        """
        A CSR carries IP addresses as iPAddress SAN entries, never in the
        subject: the first domain name is the common name.
        """
        csr = makeCSR(generateKey("ecdsa-p256"), ("192.0.2.7", "files.example.com", "::1"))
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("::1")],
        )
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["files.example.com"])
        [cn] = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.assertEqual(cn.value, "files.example.com")

    def test_onlyAddresses(self) -> None:
        """
        A CSR for addresses only has an empty subject and a critical SAN.
        """
        csr = makeCSR(generateKey("ecdsa-p256"), ("192.0.2.7",))
        self.assertEqual(list(csr.subject), [])
        self.assertTrue(
            csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
        )

    def test_provisional(self) -> None:
        """
        A provisional certificate names the addresses too, and
        L{certificateNames} reads them in their normal form; the signer, for
        addresses only, may sign for no name at all.
        """
        domains = ("2001:db8::1",)
        signer = makeSigner("test", domains, NOW)
        self.assertIsNone(signerProblem(signer, domains, NOW))
        constraints = signer.certificate.extensions.get_extension_for_class(
            x509.NameConstraints
        ).value
        self.assertEqual(constraints.permitted_subtrees, [x509.DNSName("invalid")])
        provisional = makeProvisional(signer, ("files.example.com",) + domains, NOW)
        self.assertEqual(
            certificateNames(provisional.certificate), ("files.example.com", "2001:db8::1")
        )


class LetsEncryptProfileTests(SynchronousTestCase):
    """
    Let's Encrypt issues IP address certificates on its C{shortlived}
    profile only: a configuration that would ask it for one on another
    profile is refused at load.
    """

    def parse(self, acmeURL: str, profile: str | None, domains: str) -> object:
        return parseConfiguration(
            resource(acme_url=acmeURL, profile=profile) + service(ssl_domains=domains), BASE
        )

    def test_refused(self) -> None:
        """
        With Let's Encrypt's directories and no profile, or a profile that
        issues none, a service with an address is refused, naming it and
        the profile to set.
        """
        for acmeURL in (LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING):
            for profile in (None, "classic", "tlsserver"):
                error = self.assertRaises(
                    ConfigurationError,
                    self.parse,
                    acmeURL,
                    profile,
                    "files.example.com, 192.0.2.7",
                )
                self.assertEqual((error.section, error.option), ("services/s1", "ssl_domains"))
                self.assertIn("192.0.2.7", error.message)
                self.assertIn("profile = shortlived", error.message)

    def test_refusedWrittenOtherwise(self) -> None:
        """
        Let's Encrypt's directory written with a final slash, an upper-case
        host, a final dot or its default port is still Let's Encrypt's.
        """
        for acmeURL in (
            LETS_ENCRYPT_PRODUCTION + "/",
            "https://ACME-v02.API.LetsEncrypt.org/directory",
            "https://acme-v02.api.letsencrypt.org./directory",
            "https://acme-v02.api.letsencrypt.org:443/directory",
            "https://acme-staging-v02.api.letsencrypt.org:443/directory//",
        ):
            error = self.assertRaises(ConfigurationError, self.parse, acmeURL, None, "192.0.2.7")
            self.assertIn("profile = shortlived", error.message)

    def test_accepted(self) -> None:
        """
        The C{shortlived} profile, another CA, or no address pass.
        """
        self.parse(LETS_ENCRYPT_PRODUCTION, "shortlived", "192.0.2.7")
        self.parse("https://ca.example.com/directory", None, "192.0.2.7")
        self.parse("https://acme-v02.api.letsencrypt.org:8443/directory", None, "192.0.2.7")
        self.parse("https://acme-v02.api.letsencrypt.org/other", None, "192.0.2.7")
        self.parse(LETS_ENCRYPT_PRODUCTION, None, "files.example.com")
