"""
The documentation against the code.

The two reference pages are read with docutils, which turns the
reStructuredText source into a tree of sections; roles and directives that
only Sphinx knows become error nodes there, which the checks ignore. The
layout the checks rely on:

  - C{docs/configuration.rst}: each section type is the section right after
    the label C{.. _config-server:}, C{.. _config-lets-encrypt:} or
    C{.. _config-https:}; each option is a section below it whose whole
    title is the option name as a literal (C{``port``}), holding a field
    list with the fields Type, Default, Example and Since.
  - C{docs/events.rst}: each event is a section whose title starts with its
    five-digit ID, holding a field list with Severity, Text (the exact
    text as one literal) and Fields (the field names as literals).

The embedding example of C{docs/examples/embedding.py} is run for real
against a local pebble, and the changelog draft is built with towncrier.
"""

from __future__ import annotations

import importlib.util
import os
import re
import string
import subprocess
import sys
from types import ModuleType
from typing import Any

from docutils import nodes
from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import __version__
from letsencrypt_resource.caoptions import CA_OPTIONS
from letsencrypt_resource.certificates import certificateNames
from letsencrypt_resource.config import (
    RESOURCE_OPTIONS,
    SERVER_OPTIONS,
    SERVICE_OPTIONS,
    Option,
)
from letsencrypt_resource.events import catalogue
from letsencrypt_resource.ftpsoptions import FTPS_OPTIONS
from letsencrypt_resource.pebble import freeTCPPort
from tests.helpers.docpages import DOCS, labelledSection, readPage
from tests.helpers.pebblecase import TestCACase
from tests.helpers.tlsclient import fetchOverTLS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The label of each section type in configuration.rst, and its options.
SECTION_TYPES = {
    "config-server": SERVER_OPTIONS,
    "config-lets-encrypt": RESOURCE_OPTIONS,
    "config-https": SERVICE_OPTIONS,
    "config-ftps": FTPS_OPTIONS,
    "config-ca": CA_OPTIONS,
}

_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_EVENT_TITLE = re.compile(r"([0-9]{5})\b")


def fields(section: nodes.section) -> dict[str, nodes.field_body]:
    """
    The fields of the first field list directly in C{section}, by name.
    """
    for child in section.children:
        if isinstance(child, nodes.field_list):
            return {
                field[0].astext(): field[1]
                for field in child.children
                if isinstance(field, nodes.field)
            }
    return {}


def literals(body: nodes.Element) -> list[str]:
    """
    The texts of the inline literals in C{body}.
    """
    return [literal.astext() for literal in body.findall(nodes.literal)]


def optionSections(section: nodes.section) -> dict[str, list[nodes.section]]:
    """
    The sections below C{section} whose title is only a literal: the
    documented options, by name, with every section documenting each.
    """
    found: dict[str, list[nodes.section]] = {}
    for child in section.findall(nodes.section, include_self=False):
        title = child[0]
        if len(title.children) == 1 and isinstance(title[0], nodes.literal):
            found.setdefault(title.astext(), []).append(child)
    return found


def eventSections(document: nodes.document) -> dict[int, list[nodes.section]]:
    """
    The sections whose title starts with a five-digit event ID, by ID.
    """
    found: dict[int, list[nodes.section]] = {}
    for section in document.findall(nodes.section):
        match = _EVENT_TITLE.match(section[0].astext())
        if match:
            found.setdefault(int(match.group(1)), []).append(section)
    return found


def placeholders(text: str) -> set[str]:
    """
    The names of the fields a log format string uses.
    """
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


class ConfigurationReferenceTests(SynchronousTestCase):
    """
    C{docs/configuration.rst} documents exactly the options of
    L{letsencrypt_resource.config}, each once, with its type, default,
    example and version.
    """

    def setUp(self) -> None:
        self.document = readPage("configuration.rst")

    def test_sameOptions(self) -> None:
        """
        Each section type documents every option the code has for it, and
        no other.
        """
        for label, options in SECTION_TYPES.items():
            documented = set(optionSections(labelledSection(self.document, label)))
            inCode = {option.name for option in options}
            self.assertEqual(
                (sorted(inCode - documented), sorted(documented - inCode)),
                ([], []),
                f"[{label}]: (undocumented options, documented options the code does not have)",
            )

    def test_documentedOnce(self) -> None:
        """
        No option is documented twice for the same section type.
        """
        for label in SECTION_TYPES:
            sections = optionSections(labelledSection(self.document, label))
            twice = sorted(name for name, found in sections.items() if len(found) > 1)
            self.assertEqual(twice, [], label)

    def test_details(self) -> None:
        """
        Each option has the fields Type, Default, Example and Since; a
        required option says so in Default, and a non-empty default is
        quoted there as a literal; the example sets the option.
        """
        for label, options in SECTION_TYPES.items():
            sections = optionSections(labelledSection(self.document, label))
            for option in options:
                where = f"{label} {option.name}"
                found = sections.get(option.name)
                if not found:
                    continue  # test_sameOptions reports it
                details = fields(found[0])
                self.assertEqual(
                    sorted({"Type", "Default", "Example", "Since"} - set(details)),
                    [],
                    f"{where}: missing fields",
                )
                self.checkDefault(where, option, details["Default"])
                self.assertTrue(
                    any(
                        re.match(rf"{re.escape(option.name)}\s*=", text)
                        for text in literals(details["Example"])
                    ),
                    f"{where}: the example does not set the option",
                )
                self.assertRegex(details["Since"].astext().strip(), _VERSION, where)

    def checkDefault(self, where: str, option: Option, body: nodes.field_body) -> None:
        text = body.astext()
        if option.default is None:
            self.assertIn("required", text, f"{where}: required, not said so")
            return
        self.assertNotIn("required", text, f"{where}: not required")
        if option.default:
            self.assertIn(option.default, literals(body), f"{where}: default")


class EventsReferenceTests(SynchronousTestCase):
    """
    C{docs/events.rst} documents exactly the events of the catalogue, each
    once, with its exact text, its fields and its severity.
    """

    def setUp(self) -> None:
        self.sections = eventSections(readPage("events.rst"))

    def test_sameEvents(self) -> None:
        """
        Every event ID of the catalogue is documented, and no other.
        """
        inCode = set(catalogue())
        documented = set(self.sections)
        self.assertEqual(
            (sorted(inCode - documented), sorted(documented - inCode)),
            ([], []),
            "(undocumented events, documented events the code does not have)",
        )

    def test_documentedOnce(self) -> None:
        """
        No event is documented twice.
        """
        twice = sorted(id for id, found in self.sections.items() if len(found) > 1)
        self.assertEqual(twice, [])

    def test_details(self) -> None:
        """
        Each event's documented text is its exact text, its fields are those
        the text names, and its severity is its log level.
        """
        for id, event in sorted(catalogue().items()):
            found = self.sections.get(id)
            if not found:
                continue  # test_sameEvents reports it
            details = fields(found[0])
            self.assertEqual(sorted({"Severity", "Text", "Fields"} - set(details)), [], id)
            self.assertEqual(literals(details["Text"]), [event.text], id)
            self.assertEqual(set(literals(details["Fields"])), placeholders(event.text), id)
            self.assertEqual(details["Severity"].astext().strip(), event.level.name, id)


def textPattern(text: str) -> re.Pattern[str]:
    """
    What an event of text C{text} may read in the log: its text with any
    value for each field.
    """
    fixed = re.split(r"\{[^}]*\}", text)
    return re.compile(".*?".join(re.escape(part) for part in fixed) + r"\Z", re.DOTALL)


class EventSamplesTests(SynchronousTestCase):
    """
    The log lines the pages show read as the events they are.
    """

    def test_samplesMatch(self) -> None:
        """
        Each line of a literal block in C{docs/} that starts with an event ID
        (possibly after a time and a namespace) reads as that event's text
        with some field values: a sample not updated after a text changed
        shows here.
        """
        events = catalogue()
        line = re.compile(r"(?:\S+ \S+ \[[^]]*\] )?(20\d{3}) (.+)")
        wrong = []
        for name in sorted(os.listdir(DOCS)):
            if not name.endswith(".rst"):
                continue
            for block in readPage(name).findall(nodes.literal_block):
                for sample in block.astext().splitlines():
                    found = line.fullmatch(sample.strip())
                    if found is None:
                        continue
                    event = events.get(int(found.group(1)))
                    if event is None or not textPattern(event.text).match(found.group(2)):
                        wrong.append(f"{name}: {sample.strip()}")
        self.assertEqual(wrong, [])


class ChangelogTests(SynchronousTestCase):
    """
    The changelog is built from the news fragments by towncrier.
    """

    def test_draft(self) -> None:
        """
        C{towncrier build --draft --version 0.1.0} succeeds and holds the
        fragments of issues 2, 3 and 7.
        """
        result = subprocess.run(
            [sys.executable, "-m", "towncrier", "build", "--draft", "--version", "0.1.0"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("letsencrypt-resource 0.1.0", result.stdout)
        for issue in ("#2", "#3", "#7"):
            self.assertIn(f"({issue})", result.stdout)

    def test_version(self) -> None:
        """
        The documentation's version is the package's.
        """
        self.assertEqual(sphinxConfiguration()["release"], __version__)


def sphinxConfiguration() -> dict[str, Any]:
    """
    The names C{docs/conf.py} defines, as Sphinx reads them.
    """
    namespace: dict[str, Any] = {"__file__": os.path.join(DOCS, "conf.py")}
    with open(os.path.join(DOCS, "conf.py")) as stream:
        exec(compile(stream.read(), "conf.py", "exec"), namespace)
    return namespace


def loadExample() -> ModuleType:
    """
    Import C{docs/examples/embedding.py}, which is not in a package.
    """
    path = os.path.join(DOCS, "examples", "embedding.py")
    spec = importlib.util.spec_from_file_location("embedding_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EmbeddingExampleTests(TestCACase):
    """
    The embedding example, run against a local pebble.
    """

    async def test_hostServiceGetsIssuedCertificate(self) -> None:
        """
        The host's own HTTPS service presents a certificate for its name
        that chains to the test CA's root, and serves over it.
        """
        example = loadExample()
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        httpsPort = freeTCPPort()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        host = example.makeHost(
            reactor,
            testCA.directoryURL,
            testCA.caFile,
            challengePort,
            os.path.abspath(self.mktemp()),
            domains=("host.example.test",),
            httpsPort=httpsPort,
        )
        host.startService()
        self.addCleanup(host.stopService)
        await host.getServiceNamed("lets-encrypt").whenSettled()
        failures = [e for e in events if e.get("event_id") == 20017]
        self.assertEqual(failures, [])

        issuers = await testCA.fetchIssuerPEM()
        certificate, received = await fetchOverTLS(
            reactor, httpsPort, "host.example.test", issuers, "/", example.GREETING
        )
        self.assertEqual(certificateNames(certificate), ("host.example.test",))
        self.assertIn(example.GREETING, received)
        inUse = [e for e in events if e.get("event_id") == 20016]
        self.assertEqual([e["service"] for e in inUse], ["host-https"])
