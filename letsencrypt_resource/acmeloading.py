"""
The modules that speak ACME, loaded off the reactor thread when first
needed.

They import C{acme}, C{josepy} and C{requests}: about 0.3 s of CPU, which a
server on its stored certificates need not pay at start-up, and which the
reactor must not wait for at its first order either.  Nothing imported at
start-up imports them (C{tests/test_startupimports.py} checks it); what
needs them first waits for L{loadACME}, which imports them in a worker
thread, and imports them itself only after.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed

#: The package's modules that import C{acme}, in an order where each comes
#: after what it imports: importing them all imports every other.
ACME_MODULES = (
    "letsencrypt_resource.acmetransport",
    "letsencrypt_resource.acmeclient",
    "letsencrypt_resource.alpnchallenge",
    "letsencrypt_resource.issuer",
    "letsencrypt_resource.account",
    "letsencrypt_resource.accountcommands",
)

#: Whether L{ACME_MODULES} are all imported: set by the thread that
#: imported them, once the last one is (a module being imported is in
#: C{sys.modules} before it is complete, and its importer holds its lock).
_loaded = [False]


def _importAll() -> None:
    """
    Import L{ACME_MODULES}, then say so.
    """
    for name in ACME_MODULES:
        importlib.import_module(name)
    _loaded[0] = True


def loadACME(runInThread: Callable[..., Deferred[Any]]) -> Deferred[None]:
    """
    Import the modules that speak ACME.

    @param runInThread: Runs a function off the reactor thread.
    @return: A Deferred that fires once they are imported: at once when
        they were, else after C{runInThread} imported them (the import takes
        the GIL in slices, so the reactor goes on meanwhile; two callers at
        once import in two threads, the second waiting for the first).
    """
    if _loaded[0]:
        return succeed(None)
    return runInThread(_importAll)
