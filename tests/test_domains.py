"""
Tests for L{letsencrypt_resource.domains}.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import domains
from letsencrypt_resource.domains import (
    MAX_NAMES,
    InvalidDomain,
    domainsLabel,
    isHostName,
    normalizeDomain,
    normalizeName,
    parseDomainList,
)

LABEL_63 = "a" * 63
LABEL_64 = "a" * 64
#: A name of exactly 253 characters: three 63-character labels and one of 61.
NAME_253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
NAME_254 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62])

#: (written, normal form) pairs that normalizeDomain accepts.
VALID_DOMAINS = (
    ("example.com", "example.com"),
    ("files.example.com", "files.example.com"),
    ("a.b.c.d.e.example.com", "a.b.c.d.e.example.com"),
    ("Files.Example.COM", "files.example.com"),
    ("  example.com\t", "example.com"),
    ("example.com.", "example.com"),
    ("x.co", "x.co"),
    ("a-b--c.example.com", "a-b--c.example.com"),
    ("123.example.com", "123.example.com"),
    ("example.co1", "example.co1"),
    (LABEL_63 + ".com", LABEL_63 + ".com"),
    (NAME_253, NAME_253),
    (NAME_253 + ".", NAME_253),
    ("bücher.de", "xn--bcher-kva.de"),
    ("BÜCHER.de", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("ß.de", "xn--zca.de"),
    ("例え.jp", "xn--r8jz45g.jp"),
    ("例え。jp", "xn--r8jz45g.jp"),
    ("bücher.de.", "xn--bcher-kva.de"),
    ("XN--BCHER-KVA.DE", "xn--bcher-kva.de"),
    ("xn--r8jz45g.xn--zca.de", "xn--r8jz45g.xn--zca.de"),
)

#: (written, a fragment of the error message) pairs that normalizeDomain
#: rejects.
INVALID_DOMAINS = (
    ("", "empty domain name"),
    ("   ", "empty domain name"),
    (".", "empty domain name"),
    ("localhost", "'localhost' is not a fully qualified domain name"),
    ("com", "not a fully qualified domain name"),
    ("bücher", "not a fully qualified domain name"),
    ("*.example.com", "wildcard"),
    ("files.*.example.com", "wildcard"),
    ("*", "wildcard"),
    ("192.0.2.1", "'192.0.2.1' is an IP address"),
    ("::1", "'::1' is an IP address"),
    ("2001:DB8::1", "'2001:db8::1' is an IP address"),
    ("::ffff:192.0.2.1", "is an IP address"),
    ("[::1]", "'[::1]' is not a fully qualified domain name"),
    ("192.0.2", "ends in a numeric label"),
    ("files.example.123", "ends in a numeric label"),
    (LABEL_64 + ".com", f"invalid label {LABEL_64!r}"),
    (NAME_254, "longer than 253 characters"),
    ("-files.example.com", "invalid label '-files'"),
    ("files-.example.com", "invalid label 'files-'"),
    ("files_1.example.com", "invalid label 'files_1'"),
    ("files..example.com", "invalid label ''"),
    (".example.com", "invalid label ''"),
    ("example.com..", "invalid label ''"),
    ("files example.com", "invalid label 'files example'"),
    ("files\n.example.com", "invalid label 'files\\n'"),
    ("example.com/path", "invalid label 'com/path'"),
    ("https://example.com", "invalid label 'https://example'"),
    ("example.com:443", "invalid label 'com:443'"),
    ("ü..de", "not a valid IDN"),
    ("ü" * 60 + ".de", "not a valid IDN"),
    ("bad\u200d.com", "not a valid IDN"),
    ("xn--zz.example.test", "label 'xn--zz' that is not a valid IDN A-label"),
    ("xn--a.example.com", "label 'xn--a' that is not a valid IDN A-label"),
    ("files.xn--ls8h.la", "label 'xn--ls8h' that is not a valid IDN A-label"),
    ("ab--cd.example.com", "label 'ab--cd' in the reserved form '??--'"),
    ("files.rr--x.example", "reserved form '??--'"),
)


def checkTable(table: tuple[tuple[Any, ...], ...], check: Callable[..., str | None]) -> list[str]:
    """
    Run C{check} on each row of C{table} and describe every failure.
    """
    failures = []
    for row in table:
        problem = check(*row)
        if problem is not None:
            failures.append(f"{row[0]!r}: {problem}")
    return failures


class NormalizeDomainTests(SynchronousTestCase):
    """
    Tests for L{normalizeDomain}.
    """

    def test_accepted(self) -> None:
        """
        Valid names come back lower-case, stripped, without the root dot
        and in their IDNA (punycode) form.
        """

        def check(written: str, expected: str) -> str | None:
            try:
                normal = normalizeDomain(written)
            except InvalidDomain as error:
                return f"rejected: {error}"
            if normal != expected:
                return f"gave {normal!r}, not {expected!r}"
            return None

        self.assertEqual(checkTable(VALID_DOMAINS, check), [])

    def test_rejected(self) -> None:
        """
        Invalid names raise L{InvalidDomain} saying what is wrong.
        """

        def check(written: str, fragment: str) -> str | None:
            try:
                normal = normalizeDomain(written)
            except InvalidDomain as error:
                if fragment not in str(error):
                    return f"message {str(error)!r} lacks {fragment!r}"
                return None
            return f"accepted as {normal!r}"

        self.assertEqual(checkTable(INVALID_DOMAINS, check), [])

    def test_invalidDomainIsValueError(self) -> None:
        """
        L{InvalidDomain} is a L{ValueError}, so option parsers can treat it
        like any other bad value.
        """
        self.assertTrue(issubclass(InvalidDomain, ValueError))

    def test_normalFormIsStable(self) -> None:
        """
        Normalising a normal form gives it back unchanged.
        """
        for _, normal in VALID_DOMAINS:
            self.assertEqual(normalizeDomain(normal), normal)


class IsHostNameTests(SynchronousTestCase):
    """
    Tests for L{isHostName}, the looser check used for URL hosts.
    """

    def test_accepted(self) -> None:
        """
        Single labels, fully qualified names, IDNs and a root dot are host
        names.
        """
        for name in (
            "localhost",
            "pebble",
            "acme.example.com",
            "ACME.Example.com",
            "acme.example.com.",
            "bücher.de",
            LABEL_63,
            NAME_253,
        ):
            self.assertTrue(isHostName(name), name)

    def test_rejected(self) -> None:
        """
        Empty names and labels, bad characters, over-long labels or names,
        wildcards and numeric last labels are not host names.
        """
        for name in (
            "",
            ".",
            "a..b",
            "-acme",
            "acme-",
            "ac_me",
            "ac me",
            "*",
            "*.example.com",
            LABEL_64,
            NAME_254,
            "1.2.3.4.5",
            "ü..de",
            "xn--zz",
            "acme.xn--zz.example",
            "ab--cd",
        ):
            self.assertFalse(isHostName(name), name)


#: (written, domains) pairs that parseDomainList accepts.
VALID_LISTS = (
    ("files.example.com", ("files.example.com",)),
    ("a.example.com,b.example.com", ("a.example.com", "b.example.com")),
    (" a.example.com , b.example.com ", ("a.example.com", "b.example.com")),
    ("b.example.com, a.example.com", ("b.example.com", "a.example.com")),
    (
        "B.example.com, a.example.com, b.EXAMPLE.com, b.example.com.",
        ("b.example.com", "a.example.com"),
    ),
    ("bücher.de, xn--bcher-kva.de, BÜCHER.DE", ("xn--bcher-kva.de",)),
    ("a.example.com,\n b.example.com", ("a.example.com", "b.example.com")),
)

#: (written, a fragment of the error message) pairs that parseDomainList
#: rejects.
INVALID_LISTS = (
    ("", "the list of domains is empty"),
    ("  ", "the list of domains is empty"),
    (",", "entry 1 of ',' is empty"),
    ("a.example.com,,b.example.com", "entry 2 of 'a.example.com,,b.example.com'"),
    ("a.example.com, ,b.example.com", "entry 2 of"),
    ("a.example.com,", "entry 2 of 'a.example.com,' is empty"),
    (",a.example.com", "entry 1 of ',a.example.com' is empty"),
    ("a.example.com, *.example.com", "wildcard"),
    ("a.example.com b.example.com", "invalid label 'com b'"),
    ("a.example.com;b.example.com", "invalid label 'com;b'"),
    ("a.example.com, localhost", "not a fully qualified domain name"),
)


class ParseDomainListTests(SynchronousTestCase):
    """
    Tests for L{parseDomainList}.
    """

    def test_accepted(self) -> None:
        """
        Lists give the normal forms in their first order, without repeats.
        """

        def check(written: str, expected: tuple[str, ...]) -> str | None:
            try:
                names = parseDomainList(written)
            except InvalidDomain as error:
                return f"rejected: {error}"
            if names != expected:
                return f"gave {names!r}, not {expected!r}"
            return None

        self.assertEqual(checkTable(VALID_LISTS, check), [])

    def test_rejected(self) -> None:
        """
        Lists with an invalid name, an empty entry or nothing at all raise
        L{InvalidDomain} saying what is wrong.
        """

        def check(written: str, fragment: str) -> str | None:
            try:
                names = parseDomainList(written)
            except InvalidDomain as error:
                if fragment not in str(error):
                    return f"message {str(error)!r} lacks {fragment!r}"
                return None
            return f"accepted as {names!r}"

        self.assertEqual(checkTable(INVALID_LISTS, check), [])

    def test_maximumNames(self) -> None:
        """
        A certificate may carry exactly L{MAX_NAMES} (100) names.
        """
        self.assertEqual(MAX_NAMES, 100)
        names = [f"n{index}.example.com" for index in range(MAX_NAMES)]
        self.assertEqual(parseDomainList(",".join(names)), tuple(names))

    def test_tooManyNames(self) -> None:
        """
        More than L{MAX_NAMES} names are refused, saying how many there are.
        """
        names = [f"n{index}.example.com" for index in range(MAX_NAMES + 1)]
        error = self.assertRaises(InvalidDomain, parseDomainList, ",".join(names))
        self.assertEqual(str(error), "101 names; a certificate carries at most 100")

    def test_repeatsDoNotCount(self) -> None:
        """
        The limit applies to distinct names: repeats are dropped first.
        """
        names = [f"n{index}.example.com" for index in range(MAX_NAMES)]
        written = ",".join(names + [name.upper() for name in names])
        self.assertEqual(len(parseDomainList(written)), MAX_NAMES)


class DomainsLabelTests(SynchronousTestCase):
    """
    Tests for L{domainsLabel}.
    """

    def test_label(self) -> None:
        """
        The names are joined by a comma and a space, in order.
        """
        self.assertEqual(
            domainsLabel(("b.example.com", "a.example.com")),
            "b.example.com, a.example.com",
        )


class AddressParsingTests(SynchronousTestCase):
    """
    L{normalizeName} asks C{ipaddress} only about what may be an address:
    its error for a domain name is slow, and a server of 10,000 services
    reads a name for each.
    """

    def setUp(self) -> None:
        self.asked: list[str] = []
        parse = ipaddress.ip_address

        def counting(text: str) -> Any:
            self.asked.append(text)
            return parse(text)

        self.patch(ipaddress, "ip_address", counting)

    def test_domainNotParsed(self) -> None:
        """
        A domain name that neither ends in a digit nor holds a colon is
        not given to C{ipaddress}.
        """
        self.assertEqual(normalizeName(" WWW.Example.com "), "www.example.com")
        self.assertEqual(self.asked, [])

    def test_addressesParsed(self) -> None:
        """
        IPv4 and IPv6 addresses are still read as addresses, and refused
        as before when no certificate can carry them.
        """
        self.assertEqual(normalizeName(" 192.0.2.1 "), "192.0.2.1")
        self.assertEqual(normalizeName("2001:DB8:0::1"), "2001:db8::1")
        self.assertRaises(InvalidDomain, normalizeName, "fe80::1%eth0")
        self.assertRaises(InvalidDomain, normalizeName, "0.0.0.0")
        self.assertNotEqual(self.asked, [])


class OneMatchTests(SynchronousTestCase):
    """
    A name of valid labels is checked in one match, not label by label:
    a server of 10,000 services checks a name for each at start.
    """

    def setUp(self) -> None:
        self.labels: list[str] = []
        original = domains._checkReservedLabel

        def counting(name: str, label: str) -> None:
            self.labels.append(label)
            original(name, label)

        self.patch(domains, "_checkReservedLabel", counting)

    def test_validNameInOneMatch(self) -> None:
        """
        No label of a valid name is looked at alone.
        """
        self.assertEqual(normalizeDomain("s0001-warm.Example.test"), "s0001-warm.example.test")
        self.assertEqual(self.labels, [])

    def test_labelByLabelOtherwise(self) -> None:
        """
        A name with a label in the reserved form, or an invalid one, is
        read label by label: the first wrong label is the one named.
        """
        self.assertEqual(normalizeDomain("xn--bcher-kva.example"), "xn--bcher-kva.example")
        self.assertEqual(self.labels, ["xn--bcher-kva", "example"])
        error = self.assertRaises(InvalidDomain, normalizeDomain, "a.-b.c-.example")
        self.assertIn("invalid label '-b'", str(error))
        error = self.assertRaises(InvalidDomain, normalizeDomain, "a.ab--c.example")
        self.assertIn("reserved form", str(error))
        self.assertRaises(InvalidDomain, normalizeDomain, "a.example.123")


class NormalFormTests(SynchronousTestCase):
    """
    A name already in its normal form is told by one match in
    L{normalizeName}, with the same result as the full checks.
    """

    def fullChecks(self, text: str) -> str:
        """
        What L{normalizeName} gave before it told normal names apart: the
        address, or else the domain name, of C{text}, or the error's text.
        """
        try:
            address = domains.normalizeIPAddress(text)
            return address if address is not None else normalizeDomain(text)
        except InvalidDomain as error:
            return f"error: {error}"

    def named(self, text: str) -> str:
        """
        What L{normalizeName} gives for C{text}, or the error's text.
        """
        try:
            return normalizeName(text)
        except InvalidDomain as error:
            return f"error: {error}"

    def test_oneMatch(self) -> None:
        """
        A name in normal form, even one that ends in a digit, is neither
        given to C{ipaddress} nor looked at label by label.
        """
        asked: list[str] = []
        self.patch(ipaddress, "ip_address", lambda text: asked.append(text))
        self.patch(domains, "_checkLabels", lambda name: asked.append(name))
        self.assertEqual(normalizeName(" s0001.example.a1 "), "s0001.example.a1")
        self.assertEqual(asked, [])

    def test_sameAsFullChecks(self) -> None:
        """
        Every name of the tables, and names made of the characters that
        matter (letters of both cases, digits, hyphens, dots, a colon, a
        non-ASCII letter, spaces), some of them as long as a name may be,
        are read as the full checks read them.
        """
        texts = [row[0] for row in VALID_DOMAINS + INVALID_DOMAINS]
        texts += ["192.0.2.1", "2001:db8::1", "0.0.0.0", "a.0", "a.1a", "1a.b", "a.b-1"]
        texts += [f"{LABEL_63}.{'b' * 63}.{'c' * 63}.{'d' * n}" for n in (60, 61, 62)]
        chooser = random.Random(17)
        alphabet = "ab0-.-.A9:ü \t"
        for _ in range(5000):
            texts.append("".join(chooser.choice(alphabet) for _ in range(chooser.randint(1, 9))))
        differing = [
            (text, self.named(text), self.fullChecks(text))
            for text in texts
            if self.named(text) != self.fullChecks(text)
        ]
        self.assertEqual(differing, [])
