"""
The package's runtime stays clear of its test tooling: no runtime module
imports L{letsencrypt_resource.testing}, the tests, or C{treq} (an extra);
the benchmarks import no test module, and no test module imports another
for its helpers (they are in L{tests.helpers}); no coroutine test sits in
a case that would not await it.
"""

from __future__ import annotations

import ast
import glob
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


def importedModules(path: str) -> set[str]:
    """
    The absolute names of the modules the Python file at C{path} imports,
    at any level of it.
    """
    with open(path, encoding="utf-8") as stream:
        tree = ast.parse(stream.read())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("tests." + (node.module or ""))
            elif node.module:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
                names.add(node.module)
    return names


class SourceImportTests(TestCase):
    """
    What the benchmarks and the test modules import.
    """

    def test_benchImportsNoTests(self) -> None:
        """
        No script of C{bench/} imports a module of C{tests}.
        """
        found = {
            os.path.basename(path): sorted(
                name for name in importedModules(path) if name.split(".")[0] == "tests"
            )
            for path in glob.glob(os.path.join(ROOT, "bench", "*.py"))
        }
        self.assertEqual({k: v for k, v in found.items() if v}, {})

    def test_noTestModuleImportsAnother(self) -> None:
        """
        No module under C{tests} imports a C{test_*} module: shared helpers
        are in L{tests.helpers}.
        """
        paths = glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True)
        found = {
            os.path.relpath(path, ROOT): sorted(
                name
                for name in importedModules(path)
                if any(part.startswith("test_") for part in name.split("."))
            )
            for path in paths
        }
        self.assertEqual({k: v for k, v in found.items() if v}, {})


def unawaitedTests(path: str) -> list[str]:
    """
    The coroutine test methods, C{Class.test_name}, of the classes in the
    Python file at C{path} that derive from C{SynchronousTestCase} by name:
    such a case calls them without awaiting them, so they never run.
    """
    with open(path, encoding="utf-8") as stream:
        tree = ast.parse(stream.read())
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
        if "SynchronousTestCase" not in bases:
            continue
        found += [
            f"{node.name}.{item.name}"
            for item in node.body
            if isinstance(item, ast.AsyncFunctionDef) and item.name.startswith("test")
        ]
    return found


class CoroutineTestTests(TestCase):
    """
    Coroutine tests are in cases that await them.
    """

    def test_noCoroutineInSynchronousCase(self) -> None:
        """
        No C{SynchronousTestCase} of the tests has an C{async def} test: it
        would be called and never awaited (only a C{RuntimeWarning} says
        so), and pass without running.
        """
        paths = glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True)
        found = {os.path.relpath(path, ROOT): unawaitedTests(path) for path in paths}
        self.assertEqual({k: v for k, v in found.items() if v}, {})
