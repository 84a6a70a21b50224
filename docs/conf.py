"""
Sphinx configuration of the letsencrypt-resource documentation.

Build it with::

    sphinx-build -W -b html docs docs/_build/html

The changelog page runs ``towncrier build --draft`` to show the news
fragments not released yet; see the ``towncrier-draft`` directive below.

The API reference is rendered by pydoctor from the package's epytext
docstrings during the HTML build (``pydoctor.sphinx_ext.build_apidocs``),
into ``api/`` of the output, replacing the placeholder page
``api/index.rst``. Every line pydoctor prints (a link target it cannot
find, an unknown field, bad markup) becomes a Sphinx warning, so
``sphinx-build -W`` fails on it; the build needs no network, so the
docstrings name objects outside the package with ``C{...}``, not
``L{...}``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ConfigError
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

extensions = [
    "sphinx.ext.intersphinx",
    "sphinx.ext.graphviz",
    "pydoctor.sphinx_ext.build_apidocs",
]

#: The diagrams (``.. graphviz::``) are drawn by Graphviz's ``dot`` at each
#: build, as SVG.
graphviz_dot = "dot"
graphviz_output_format = "svg"

#: pydoctor's arguments (the extension adds ``--make-html`` and ``--quiet``);
#: ``{outdir}`` is Sphinx's output directory.
pydoctor_args = [
    f"--project-name={project}",
    f"--project-version={release}",
    f"--project-base-dir={ROOT}",
    "--docformat=epytext",
    "--warnings-as-errors",
    "--html-output={outdir}/api",
    os.path.join(ROOT, "letsencrypt_resource"),
]
#: Where the reference sits relative to the other pages, so that they can
#: link to its objects with ``:py:class:`` and the like.
pydoctor_url_path = "api/"
#: A reference to an object the API reference lacks is a warning, hence
#: an error.
nitpicky = True


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
            raise self.error(f"{' '.join(command[2:])} failed:\n{result.stdout}{result.stderr}")
        draft = result.stdout.strip()
        if not draft or "No significant changes" in draft:
            return [nodes.paragraph(text="No unreleased changes.")]
        return self.parse_text_to_nodes(draft, allow_section_headings=True)


def _readChangelogAgain(
    app: Sphinx, env: object, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """
    Read the changelog at every build: a news fragment added or removed
    changes it without Sphinx noticing.
    """
    return ["changelog"]


def requireDot(app: Sphinx) -> None:
    """
    Stop the build at once when Graphviz's ``dot`` is missing: Sphinx
    would only warn, and a build without ``-W`` would publish pages whose
    diagrams are gone.
    """
    if shutil.which(app.config.graphviz_dot) is None:
        raise ConfigError(
            f"Graphviz's {app.config.graphviz_dot!r} is not on PATH: the diagrams need it "
            "(./dev installs Debian's graphviz; apt-get install graphviz)"
        )


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("builder-inited", requireDot, priority=100)
    app.add_directive("towncrier-draft", TowncrierDraft)
    app.connect("env-get-outdated", _readChangelogAgain)
    return {"parallel_read_safe": True}
