"""
Tests for L{letsencrypt_resource.inireader}: it reads every text as
C{configparser.ConfigParser} does with the configuration file's settings,
errors included.
"""

from __future__ import annotations

import configparser
import os
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import inireader
from letsencrypt_resource.inireader import DEFAULT_SECTION, readINI, resolvePath

#: Lines, and pieces of lines, that the generated texts are made of: every
#: rule of the reader is exercised by some of them (sections, options with
#: either delimiter, continuations, empty and blank lines in values,
#: comments, unparsable lines, unusual whitespace, the defaults section).
PIECES = [
    "[a]",
    "[b]",
    "  [a]",
    "[a] ]x",
    "[]",
    "[ c ]",
    f"[{DEFAULT_SECTION}]",
    "key = value",
    "Key: other",
    "key=",
    "k2 = a = b",
    "k3 : x = y",
    "k4=v",
    "  continued",
    "\tcontinued = too",
    "    deeper",
    "",
    "   ",
    "# comment",
    "  ; comment",
    "= nameless",
    " : nameless",
    "no delimiter",
    "k\u00a0= non-breaking space",
    "\u2003k5 = em space",
    "k6 = value\r",
    "k7\x0c= form feed",
    "[a\x1c]",
]


def configParserRead(text: str) -> Any:
    """
    What C{ConfigParser} makes of C{text}: its sections, or its error's
    type and text.
    """
    parser = configparser.ConfigParser(
        interpolation=None, strict=True, default_section=DEFAULT_SECTION
    )
    try:
        parser.read_string(text)
    except configparser.Error as error:
        return (type(error), str(error))
    return {
        section: {name: parser[section][name] for name in parser[section]}
        for section in parser.sections()
    }


def readerRead(text: str) -> Any:
    """
    What L{readINI} makes of C{text}, in the form of L{configParserRead}.
    """
    try:
        return readINI(text)
    except configparser.Error as error:
        return (type(error), str(error))


class SameAsConfigParserTests(SynchronousTestCase):
    """
    L{readINI} reads as C{ConfigParser} does.
    """

    def test_generatedTexts(self) -> None:
        """
        On thousands of texts made of L{PIECES}, the sections, options,
        values and their order, or the error's type and message, are the
        same.
        """
        generator = random.Random(17)
        for _ in range(3000):
            lines = generator.choices(PIECES, k=generator.randint(0, 12))
            text = "\n".join(lines) + generator.choice(["", "\n"])
            self.assertEqual(readerRead(text), configParserRead(text), repr(text))

    def test_typical(self) -> None:
        """
        A configuration as users write it: comments, a continued value and
        an empty line inside it, option names in any case.
        """
        text = (
            "# server\n[server]\nName = x\n\n[services/a]\ntype = https\n"
            "ssl_domains = a.example.test,\n  b.example.test\n\n  c.example.test\n"
            "; end\n"
        )
        self.assertEqual(
            readINI(text),
            {
                "server": {"name": "x"},
                "services/a": {
                    "type": "https",
                    "ssl_domains": "a.example.test,\nb.example.test\n\nc.example.test",
                },
            },
        )
        self.assertEqual(readerRead(text), configParserRead(text))

    def test_errorsAsConfigParser(self) -> None:
        """
        A duplicate section or option, an option before any section and
        unparsable lines raise C{ConfigParser}'s errors, with their line
        numbers.
        """
        for text, error in [
            ("[a]\n[a]\n", configparser.DuplicateSectionError),
            ("[a]\nk = 1\nK = 2\n", configparser.DuplicateOptionError),
            ("k = 1\n[a]\n", configparser.MissingSectionHeaderError),
            ("[a]\nnothing\nk = 1\nnothing again\n", configparser.ParsingError),
        ]:
            with self.subTest(text=text):
                raised = self.assertRaises(error, readINI, text)
                self.assertEqual(readerRead(text), configParserRead(text))
                if error is configparser.ParsingError:
                    self.assertEqual([n for n, _ in raised.errors], [2, 4])


class ResolvePathTests(SynchronousTestCase):
    """
    L{resolvePath}.
    """

    def test_resolved(self) -> None:
        """
        A relative path is taken from the folder given, an absolute one
        as it is, C{~} from the home folder; each normalised.
        """
        home = os.path.expanduser("~")
        self.assertEqual(resolvePath("/srv/site", "public/../files"), "/srv/site/files")
        self.assertEqual(resolvePath("/srv/site", "/var//www/"), "/var/www")
        self.assertEqual(resolvePath("/srv/site", "~/state"), os.path.join(home, "state"))

    def test_sharedFolderResolvedOnce(self) -> None:
        """
        The same folder named by many sections is worked out once.
        """
        inireader._joined.cache_clear()
        self.addCleanup(inireader._joined.cache_clear)
        normalised: list[str] = []
        normpath = os.path.normpath

        def counting(path: str) -> str:
            normalised.append(path)
            return normpath(path)

        self.patch(os.path, "normpath", counting)
        paths = [resolvePath("/srv/resolved-once", "public") for _ in range(3)]
        self.assertEqual(paths, ["/srv/resolved-once/public"] * 3)
        self.assertEqual(normalised, ["/srv/resolved-once/public"])
