"""
The cluster's documentation against the real tools: its diagram needs
Graphviz, and its HAProxy recipe is a configuration HAProxy accepts.
"""

from __future__ import annotations

import os
import subprocess
import sys

from docutils import nodes
from twisted.trial.unittest import SkipTest, TestCase

from letsencrypt_resource.testing.haproxy import HAProxyNotFound, findHAProxy
from tests.helpers.docpages import DOCS, readPage


def literalBlock(page: str, marker: str) -> str:
    """
    The text of the literal block of C{docs/<page>} that contains
    C{marker}.
    """
    for block in readPage(page).findall(nodes.literal_block):
        if marker in block.astext():
            return block.astext()
    raise AssertionError(f"docs/{page} has no literal block with {marker!r}")


class ClusterDocsTests(TestCase):
    """
    docs/cluster.rst and the build that draws its diagram.
    """

    def test_buildFailsWithoutDot(self) -> None:
        """
        Without Graphviz's C{dot}, the documentation build stops at once
        with an error naming it, rather than warning and leaving the
        diagram out.
        """
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sphinx",
                "-q",
                "-E",
                "-D",
                "graphviz_dot=no-such-dot",
                "-b",
                "html",
                DOCS,
                self.mktemp(),
            ],
            capture_output=True,
            text=True,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Graphviz's 'no-such-dot' is not on PATH", result.stdout + result.stderr)

    def test_haproxyRecipeAccepted(self) -> None:
        """
        The HAProxy recipe of docs/cluster.rst passes C{haproxy -c}.
        """
        try:
            program = findHAProxy()
        except HAProxyNotFound as e:
            if os.environ.get("CI") == "true":
                raise
            raise SkipTest(str(e)) from None
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as stream:
            stream.write(literalBlock("cluster.rst", "frontend acme-http") + "\n")
        result = subprocess.run([program, "-c", "-f", path], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
