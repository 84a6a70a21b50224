"""
Every option's parser refuses odd text with C{ValueError}, which the
configuration reports as the section, option and problem; anything else
would stop twistd with a traceback at start and refuse a reload with an
unexpected error's text.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.caoptions import CA_OPTIONS
from letsencrypt_resource.config import RESOURCE_OPTIONS, SERVER_OPTIONS, SERVICE_OPTIONS
from letsencrypt_resource.ftpsoptions import FTPS_OPTIONS

#: Pieces of odd text: huge numbers, backslashes (Twisted's endpoint
#: escapes), NUL, non-ASCII digits and letters, separators, brackets.
PIECES = (
    "1" + "0" * 400,
    "9" * 5000,
    "\\",
    "\0",
    "\u00fc",
    "\u0130",
    "\u2028",
    "\uff11\uff12",
    "\u0663",
    "1e999",
    "nan",
    "-1",
    "0x10",
    ":",
    "=",
    ",",
    "-",
    "[",
    "]",
    "%zz",
    "'",
    "a" * 300,
    "..",
    "*",
    "d",
    "tcp:",
    "tcp6:",
    "unix:",
    "systemd:",
    "port=",
    "interface=",
    "backlog=",
    "index=",
    "https://",
    "@",
    "postgresql://[",
    "host='",
)


def oddTexts() -> Iterator[str]:
    """
    Each piece of L{PIECES}, and each pair of them.
    """
    yield from PIECES
    for first, second in itertools.product(PIECES, repeat=2):
        yield first + second


def parsers() -> dict[Callable[[str], Any], str]:
    """
    Every option's parser, with the name of an option it reads.
    """
    found: dict[Callable[[str], Any], str] = {}
    for options in (RESOURCE_OPTIONS, SERVICE_OPTIONS, SERVER_OPTIONS, CA_OPTIONS, FTPS_OPTIONS):
        for option in options:
            found.setdefault(option.parse, option.name)
    return found


class OddTextTests(SynchronousTestCase):
    """
    The options' parsers on odd text.
    """

    def test_onlyValueError(self) -> None:
        """
        Every option's parser returns a value for each odd text or raises
        C{ValueError}, never another exception.
        """
        texts = list(oddTexts())
        failures = {}
        for parse, name in parsers().items():
            for text in texts:
                try:
                    parse(text)
                except ValueError:
                    pass
                except Exception as error:
                    failures.setdefault(name, (text[:40], repr(error)))
        self.assertEqual(failures, {})

    def test_allParsers(self) -> None:
        """
        The options looked at include those of every section type: a
        duration, an endpoint, an FTPS port range, a CA's key and the
        cluster's.
        """
        names = set(parsers().values())
        for name in (
            "check_interval",
            "endpoint",
            "passive_ports",
            "eab_hmac_key",
            "cluster_database",
        ):
            self.assertIn(name, names)
