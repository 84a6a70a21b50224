"""
What the operations command prints for people
(L{letsencrypt_resource.display}) cannot act on the terminal it is printed
on: every text from a certificate, a CA or the storage is escaped.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.display import formatRenewal, printableText


class PrintableTextTests(SynchronousTestCase):
    """
    L{printableText} and the texts that use it.
    """

    def test_escaped(self) -> None:
        """
        Printable text is kept as it is (the same object); characters that
        are not printable are escaped as Python escapes them.
        """
        kept = "CN=R3,O=Let's Encrypt,C=US é"
        self.assertIs(printableText(kept), kept)
        self.assertEqual(printableText("a\x1b]0;x\x07\nb\u202e"), "a\\x1b]0;x\\x07\\nb\\u202e")

    def test_renewalLines(self) -> None:
        """
        The lines C{renew} prints escape what they show of a set.
        """
        row = {
            "names": ["example.com"],
            "outcome": "renewed",
            "not_after": "2026-01-01T00:00:00Z\x1b[2J",
        }
        self.assertEqual(
            formatRenewal([row]), "example.com: renewed, valid until 2026-01-01T00:00:00Z\\x1b[2J"
        )
