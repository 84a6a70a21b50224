"""
The modules that speak ACME, loaded off the reactor thread when first
needed.

They import C{acme}, C{josepy} and C{requests}: about 0.3 s of CPU, which a
server on its stored certificates need not pay before it listens, and which
the reactor must not wait for at its first order either.  Nothing imported
at start-up imports them (C{tests/test_startupimports.py} checks it); what
needs them first waits for L{loadACME}, which imports them in a worker
thread, and imports them itself only after.  A server starts that load once
its domain sets are loaded (L{LoadAtStart}), so that a broken install is
logged at once (event 20255), not at the first order.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .acmeerrors import ACMEUnavailable

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

#: The installed packages they need, found without importing them.
ACME_PACKAGES = ("acme", "josepy", "requests")

#: Seconds between two events 20255 at least, while loads keep failing.
FAILURE_PERIOD = 600.0

_log = Logger()


@attrs.define
class _Loading:
    """
    The process's load: its modules are the process's.

    @ivar loaded: Whether L{ACME_MODULES} are all imported (set once the
        thread that imported them has ended: a module being imported is in
        C{sys.modules} before it is complete).
    @ivar running: The worker's Deferred while a load runs.
    @ivar waiting: The Deferreds given to the callers meanwhile.
    @ivar failures: The loads failed since the last that succeeded.
    @ivar logged: When event 20255 was last logged, if it was.
    """

    loaded: bool = False
    running: Deferred[None] | None = None
    waiting: list[Deferred[None]] = attrs.Factory(list)
    failures: int = 0
    logged: float | None = None


_state = _Loading()


def missingPackages() -> list[str]:
    """
    The names in L{ACME_PACKAGES} that no entry of C{sys.path} holds,
    looked up as the import system would find them, without importing any
    (a fraction of a millisecond).  A folder of that name that is not a
    package (no C{__init__.py}: an empty folder left by an uninstall, say)
    is no more than a namespace package: it is missing.
    """
    return [name for name in ACME_PACKAGES if not _installed(name)]


def _installed(name: str) -> bool:
    """
    Whether the top-level module C{name} would be imported from a module
    file or a package with an C{__init__.py}: not when it is not found, nor
    when it would be a namespace package (a spec with no origin).
    """
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None


def _importAll() -> None:
    """
    Import L{ACME_MODULES}.

    @raise ACMEUnavailable: naming the module that failed and why.
    """
    # A package installed since a load failed is found.
    importlib.invalidate_caches()
    for name in ACME_MODULES:
        try:
            importlib.import_module(name)
        except Exception as error:
            raise ACMEUnavailable(name, error) from error


def loadACME(runInThread: Callable[..., Deferred[Any]], clock: IReactorTime) -> Deferred[None]:
    """
    Import the modules that speak ACME, one load at a time.

    @param runInThread: Runs a function off the reactor thread.
    @param clock: Tells the time of a failure.
    @return: A Deferred that fires once they are imported: at once when
        they were, else once the load under way, or one C{runInThread}
        starts, has ended (every caller meanwhile waits for that one load).
        It fails with L{ACMEUnavailable} when the load failed (event 20255,
        at most once in L{FAILURE_PERIOD}); the next call loads again.
    """
    if _state.loaded:
        return succeed(None)
    waiting: Deferred[None] = Deferred()
    _state.waiting.append(waiting)
    if _state.running is None:
        _state.running = maybeDeferred(runInThread, _importAll)
        _state.running.addBoth(_ended, clock)
    return waiting


def _ended(result: object, clock: IReactorTime) -> None:
    """
    Hand the load's C{result} to every caller waiting for it; log a failure
    (event 20255), or a success after failures (event 20256).
    """
    waiting, _state.waiting, _state.running = _state.waiting, [], None
    if isinstance(result, Failure):
        if not isinstance(result.value, ACMEUnavailable):
            result = Failure(ACMEUnavailable("the worker thread", result.value or Exception()))
        _failed(result, clock)
    else:
        _state.loaded = True
        if _state.failures:
            events.ACME_LOADED.emit(_log, failures=_state.failures)
    for each in waiting:
        if not each.called:
            if isinstance(result, Failure):
                each.errback(result)
            else:
                each.callback(None)


def _failed(failure: Failure, clock: IReactorTime) -> None:
    """
    Count a failed load, and log it unless one was logged less than
    L{FAILURE_PERIOD} ago.
    """
    _state.failures += 1
    now = clock.seconds()
    if _state.logged is not None and now - _state.logged < FAILURE_PERIOD:
        return
    _state.logged = now
    error = failure.value
    assert isinstance(error, ACMEUnavailable)
    cause = error.error
    events.ACME_LOAD_FAILED.emit(
        _log,
        module=error.module,
        error=repr(cause),
        failures=_state.failures,
        # The import's own traceback: it names the file that failed.
        log_failure=Failure(cause, type(cause), cause.__traceback__),
    )


class LoadAtStart(Service):
    """
    Starts the load once a server's domain sets are loaded, which is when
    it would need the modules soon anyway (to order, or to learn whether its
    CAs offer renewal information): a load that fails is logged then.  The
    server goes on serving what it has.
    """

    def __init__(self, loaded: Callable[[], Deferred[None]], load: Callable[[], Deferred[None]]):
        """
        @param loaded: Returns a Deferred that fires once the sets are loaded.
        @param load: Loads the modules (see L{loadACME}).
        """
        self._loaded = loaded
        self._load = load
        self._loading: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._loading = self._loaded().addCallback(lambda _: self._load())
        # A failed load is logged by the load, and fails the orders.
        self._loading.addErrback(lambda failure: None)

    def stopService(self) -> None:
        super().stopService()
        if self._loading is not None:
            self._loading.cancel()
