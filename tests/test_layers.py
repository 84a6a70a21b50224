"""
The layers of the package: no module imports a module that sits above it.

The layers, from the bottom:

  - base: data, parsing and crypto helpers; no threads, no services.
  - runtime: threads, files, the network client and TLS contexts.
  - protocol: the ACME conversation and what one certificate needs.
  - services: the resource and what runs beside it in a server.
  - entry points: the commands.
  - test support: fakes for tests; nothing in the package imports them.

A module may import modules of its own layer and of the layers below. The
imports are read from the source with L{ast}, module-level and inside
functions alike (an import deferred into a function is still a dependency).
A module found in the package but named in no layer fails L{test_placed}:
whoever adds a module places it here.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

from twisted.trial.unittest import TestCase

import letsencrypt_resource

#: The most lines a class of the package may span.
CLASS_LINES = 250

#: Each layer's name and modules, bottom first.  A name placed here stands for
#: its submodules too, so that a subpackage may be placed whole.
LAYERS: list[tuple[str, frozenset[str]]] = [
    (
        "base",
        frozenset(
            {
                "__init__",
                "certificates",
                "certificatefacts",
                "clusteroptions",
                "noderecord",
                "config",
                "controlsocket",
                "coroutines",
                "deploycommand",
                "display",
                "domains",
                "drain",
                "handshakes",
                "alpn",
                "clienthello",
                "events",
                "caoptions",
                "castreak",
                "operationerror",
                "ftpsoptions",
                "httplimits",
                "inireader",
                "interfaces",
                "keys",
                "limiter",
                "listening",
                "policy",
                "provisional",
                "reactors",
                "safefs",
                "startupreport",
                "resourcesection",
                "consumerregistry",
                "quietport",
                "acmeerrors",
                "ratedcount",
            }
        ),
    ),
    (
        "runtime",
        frozenset(
            {
                "folder",
                "ftpsaccounts",
                "ftpsdata",
                "ftpsfiles",
                "ftpsshell",
                "ftpsthrottle",
                "ftpstls",
                "httpclient",
                "keygen",
                "listenerca",
                "sharedfolders",
                "metrics",
                "shutdown",
                "storage",
                "tls",
                "alpnpeek",
                "firsthandshakes",
                "turnbudget",
                "workers",
                "ftpsbusy",
                "readturns",
                "turnports",
                "ftpssilence",
                "acmeloading",
                "statechecks",
            }
        ),
    ),
    (
        "protocol",
        frozenset(
            {
                "account",
                "acmeclient",
                "attempts",
                "acmetransport",
                "challenge",
                "chaincheck",
                "issuer",
                "leasing",
                "managed",
                "ownleasewrites",
                "pendingorder",
                "renewalstate",
                "retrywaits",
                "writeleases",
                "alpnchallenge",
            }
        ),
    ),
    (
        "services",
        frozenset(
            {
                "challengesite",
                "challengesweep",
                "clusterresume",
                "clusterview",
                "accountcommands",
                "cafaults",
                "ariissuers",
                "carotation",
                "composition",
                "connection",
                "control",
                "answerwrites",
                "deploy",
                "deployflags",
                "deployoutput",
                "deployrun",
                "domainsets",
                "ftps",
                "ftpspassive",
                "ftpsprotocol",
                "ftpstransfer",
                "heartbeat",
                "host",
                "https",
                "nodestorage",
                "nodewatch",
                "listenerservice",
                "metricsexposition",
                "metricssite",
                "operations",
                "ordering",
                "outcomes",
                "owned",
                "pebble",
                "provisioning",
                "reload",
                "renewalinfo",
                "renewer",
                "reporting",
                "resource",
                "scheduler",
                "setloading",
                "statusreader",
                "statusrows",
                "rowjson",
                "storedchanges",
                "writequeue",
                "writeretries",
                "startupcollection",
            }
        ),
    ),
    (
        "entry points",
        frozenset({"__main__", "cli", "demo", "localca", "localstatus", "quickstatus", "tap"}),
    ),
    ("test support", frozenset({"testing"})),
]

PACKAGE = letsencrypt_resource.__name__
ROOT = os.path.dirname(letsencrypt_resource.__file__)


def packageModules() -> Iterator[tuple[str, str]]:
    """
    Every module of the package: its dotted name below the package
    (C{__init__} for the package itself, C{sub.__init__} for a subpackage)
    and its path.
    """
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                relative = os.path.relpath(os.path.join(folder, name[:-3]), ROOT)
                yield relative.replace(os.sep, "."), os.path.join(folder, name)


def layerOf(module: str) -> int | None:
    """
    The index in L{LAYERS} of C{module}, or of the closest package above it
    that is placed; L{None} when none is.
    """
    parts = module.split(".")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    while parts:
        name = ".".join(parts)
        for index, (_, modules) in enumerate(LAYERS):
            if name in modules:
                return index
        parts.pop()
    return None


def _isModule(name: str) -> bool:
    path = os.path.join(ROOT, *name.split("."))
    return os.path.isfile(path + ".py") or os.path.isdir(path)


def importsOf(module: str, path: str) -> Iterator[tuple[int, str]]:
    """
    The package modules that the source at C{path} imports, anywhere in it,
    each with the line of the import.
    """
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read(), path)
    package = module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    yield node.lineno, alias.name[len(PACKAGE) + 1 :]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                target = node.module[len(PACKAGE) + 1 :]  # type: ignore[index]
            else:
                continue
            for alias in node.names:
                name = f"{target}.{alias.name}" if target else alias.name
                if _isModule(name):
                    yield node.lineno, name
                else:
                    yield node.lineno, target or "__init__"


class LayerTests(TestCase):
    """
    The package's modules import downwards only.
    """

    def test_placed(self) -> None:
        """
        Every module of the package is in a layer of L{LAYERS}: a new module
        must be placed there before the layering can be checked.
        """
        unplaced = [module for module, _ in packageModules() if layerOf(module) is None]
        self.assertEqual(unplaced, [], "modules in no layer of tests/test_layers.py")

    def test_downwards(self) -> None:
        """
        No module imports a module of a layer above its own.
        """
        offences = []
        for module, path in packageModules():
            own = layerOf(module)
            if own is None:
                continue
            for line, imported in importsOf(module, path):
                target = layerOf(imported)
                if target is not None and target > own:
                    offences.append(
                        f"{module} ({LAYERS[own][0]}) line {line} imports "
                        f"{imported} ({LAYERS[target][0]})"
                    )
        self.assertEqual(offences, [])

    def test_keysImportNoThreads(self) -> None:
        """
        The key and certificate helpers import no thread or service code:
        L{importsOf} finds the imports, and the helpers' are all in the base
        layer.
        """
        for module in ("keys", "certificates", "provisional"):
            path = os.path.join(ROOT, module + ".py")
            imported = {name for _, name in importsOf(module, path)}
            self.assertNotIn("workers", imported)
            self.assertEqual({layerOf(name) for name in imported} - {0}, set(), module)

    def test_importsFound(self) -> None:
        """
        L{importsOf} finds relative and absolute imports, of modules and of
        names, at module level and inside functions.
        """
        source = (
            "from . import events\n"
            "from .keys import generateKey\n"
            "import letsencrypt_resource.workers\n"
            "from letsencrypt_resource import __version__\n"
            "def f():\n"
            "    from .resource import LetsEncryptResource\n"
            "import os\n"
        )
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(source)
        self.assertEqual(
            list(importsOf("example", path)),
            [(1, "events"), (2, "keys"), (3, "workers"), (4, "__init__"), (6, "resource")],
        )


def longClasses(path: str, limit: int = CLASS_LINES) -> Iterator[str]:
    """
    The classes defined in the source at C{path}, nested ones too, that
    span more than C{limit} lines, each named with its length.
    """
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                yield f"{node.name} ({lines} lines)"


class SizeTests(TestCase):
    """
    The package's classes stay small enough to read.
    """

    def test_classesShort(self) -> None:
        """
        No class of the package spans more than L{CLASS_LINES} lines.
        """
        offences = [
            f"{module}.{name}" for module, path in packageModules() for name in longClasses(path)
        ]
        self.assertEqual(offences, [], f"classes over {CLASS_LINES} lines")

    def test_longClassNamed(self) -> None:
        """
        L{longClasses} names a class over the limit, nested or not, and
        leaves out one at the limit.
        """
        source = (
            "class Short:\n"
            + "    x = 1\n" * 2
            + "class Outer:\n"
            + "    class Long:\n"
            + "        y = 1\n" * 3
        )
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(source)
        self.assertEqual(list(longClasses(path, limit=3)), ["Outer (5 lines)", "Long (4 lines)"])
