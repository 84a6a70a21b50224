"""
Sphinx configuration of the letsencrypt-resource documentation.

Build it with::

    sphinx-build -W -b html docs docs/_build/html

The changelog page runs ``towncrier build --draft`` to show the news
fragments not released yet; see the ``towncrier-draft`` directive below.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _version() -> str:
    with open(os.path.join(ROOT, "letsencrypt_resource", "__init__.py")) as stream:
        match = re.search(r'^__version__ = "([^"]+)"', stream.read(), re.M)
    assert match is not None, "no __version__ in letsencrypt_resource/__init__.py"
    return match.group(1)


project = "letsencrypt-resource"
author = "the letsencrypt-resource developers"
copyright = "the letsencrypt-resource developers"
release = version = _version()

root_doc = "index"
exclude_patterns = ["_build"]
highlight_language = "none"
html_theme = "alabaster"
html_title = f"letsencrypt-resource {release}"


class TowncrierDraft(SphinxDirective):
    """
    The news fragments not released yet, as ``towncrier build --draft``
    renders them for the current version, or a sentence saying there are
    none.
    """

    def run(self) -> list[nodes.Node]:
        command = [
            sys.executable,
            "-m",
            "towncrier",
            "build",
            "--draft",
            "--version",
            release,
            "--date",
            "unreleased",
        ]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise self.error(
                f"{' '.join(command[2:])} failed:\n{result.stdout}{result.stderr}"
            )
        draft = result.stdout.strip()
        if not draft or "No significant changes" in draft:
            return [nodes.paragraph(text="No unreleased changes.")]
        return self.parse_text_to_nodes(draft, allow_section_headings=True)


def _readChangelogAgain(app: Sphinx, env: object, added: set[str],
                        changed: set[str], removed: set[str]) -> list[str]:
    """
    Read the changelog at every build: a news fragment added or removed
    changes it without Sphinx noticing.
    """
    return ["changelog"]


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("towncrier-draft", TowncrierDraft)
    app.connect("env-get-outdated", _readChangelogAgain)
    return {"parallel_read_safe": True}
