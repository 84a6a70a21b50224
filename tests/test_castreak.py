"""
Tests for L{letsencrypt_resource.castreak}'s checks of saved values, which
every set's renewal state goes through at start-up.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import castreak
from letsencrypt_resource.castreak import MOST_FAILURES, savedCount, savedText


class CountedEncode(str):
    """
    Text that counts its encodings.
    """

    encoded = 0

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        """
        Count, then encode.
        """
        CountedEncode.encoded += 1
        return str(self).encode(*args, **kwargs)


class SavedTextTests(SynchronousTestCase):
    """
    L{savedText} tells text that can be written again.
    """

    def setUp(self) -> None:
        CountedEncode.encoded = 0

    def test_asciiNotEncoded(self) -> None:
        """
        ASCII text, which holds no surrogate, is told without being
        encoded; other text is encoded to find a lone surrogate.
        """
        self.assertTrue(savedText(CountedEncode("https://acme.example/directory")))
        self.assertEqual(CountedEncode.encoded, 0)
        self.assertTrue(savedText(CountedEncode("https://b\u00fccher.example/")))
        self.assertFalse(savedText(CountedEncode("https://x/\udc80")))
        self.assertEqual(CountedEncode.encoded, 2)

    def test_notText(self) -> None:
        """
        What is not text is not saved text, the empty text is.
        """
        for value in (None, 1, b"bytes", ["a"]):
            self.assertFalse(savedText(value))
        self.assertTrue(savedText(""))


class SavedCountTests(SynchronousTestCase):
    """
    L{savedCount} brings a saved count within bounds.
    """

    def test_inBoundsAsIs(self) -> None:
        """
        An C{int} within bounds, as states are saved with, is taken as it
        is, without being converted and bounded; the bounds themselves among them.
        """
        bounded: list[tuple[Any, ...]] = []

        def counted(*values: Any) -> Any:
            bounded.append(values)
            return min(*values)

        vars(castreak)["min"] = counted
        self.addCleanup(delattr, castreak, "min")
        for value in (0, 3, MOST_FAILURES):
            self.assertIs(savedCount(value), value)
        self.assertEqual(bounded, [])
        self.assertEqual(savedCount(True), 1)
        self.assertEqual(bounded, [(1, MOST_FAILURES)])

    def test_outOfBounds(self) -> None:
        """
        Other counts are converted and brought within bounds; one that is
        not finite or not a number is refused.
        """
        cases = [
            (-4, 0),
            (MOST_FAILURES + 1, MOST_FAILURES),
            (2.9, 2),
            ("7", 7),
            (10**30, MOST_FAILURES),
        ]
        for value, expected in cases:
            self.assertEqual(savedCount(value), expected)
        self.assertRaises(ValueError, savedCount, float("inf"))
        self.assertRaises(ValueError, savedCount, float("nan"))
        self.assertRaises(ValueError, savedCount, "many")
        self.assertRaises(TypeError, savedCount, None)
