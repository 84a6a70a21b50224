"""
The package's runtime stays clear of its test tooling: no runtime module
imports L{letsencrypt_resource.testing}, the tests, or C{treq} (an extra).
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

from twisted.trial.unittest import TestCase

import letsencrypt_resource
from tests.helpers.processcase import ROOT

#: What only tests may import.
TEST_TOOLING = ("treq", "letsencrypt_resource.testing", "tests", "hypothesis")

_IMPORT_ALL = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def runtimeModules() -> list[str]:
    """
    Every module of the package but its test support and C{__main__}
    (which runs the command).
    """
    return sorted(
        f"letsencrypt_resource.{info.name}"
        for info in pkgutil.iter_modules(letsencrypt_resource.__path__)
        if info.name not in ("testing", "__main__")
    )


class RuntimeImportTests(TestCase):
    """
    Importing every runtime module imports no test tooling.
    """

    def test_noTestTooling(self) -> None:
        """
        A fresh interpreter that imports every module of the package but
        L{letsencrypt_resource.testing} holds none of L{TEST_TOOLING}.
        """
        modules = runtimeModules()
        self.assertIn("letsencrypt_resource.pebble", modules)
        result = subprocess.run(
            [sys.executable, "-c", _IMPORT_ALL, json.dumps(modules)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        loaded = json.loads(result.stdout)
        tooling = [
            name
            for name in loaded
            if any(name == t or name.startswith(t + ".") for t in TEST_TOOLING)
        ]
        self.assertEqual(tooling, [])
