"""
Read the documentation's pages as docutils trees, for the tests that
check the documentation against the code.
"""

from __future__ import annotations

import os

from docutils import nodes
from docutils.core import publish_doctree

from tests.helpers.processcase import ROOT

DOCS = os.path.join(ROOT, "docs")


def readPage(name: str) -> nodes.document:
    """
    The docutils tree of the page C{docs/<name>}, without reporting the
    Sphinx-only markup it cannot resolve.
    """
    path = os.path.join(DOCS, name)
    with open(path, encoding="utf-8") as stream:
        source = stream.read()
    return publish_doctree(
        source,
        source_path=path,
        settings_overrides={
            "report_level": 5,
            "halt_level": 5,
            "file_insertion_enabled": False,
            "raw_enabled": False,
        },
    )


def labelledSection(document: nodes.document, label: str) -> nodes.section:
    """
    The section that the label C{.. _<label>:} names.
    """
    for section in document.findall(nodes.section):
        if label in section["ids"]:
            return section
    raise AssertionError(f"no section labelled {label!r}")
