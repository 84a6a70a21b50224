"""
Background threads for the resource's CPU-heavy work: key generation,
signing and disk writes.

Work marked L{lowPriority} (RSA key generation: long, and free of the GIL)
runs in threads that lower their own CPU priority, where the platform gives
each thread its own (Linux): while hundreds of keys are made, the reactor
thread serving challenges and file transfers keeps the CPU first.  The rest
runs at normal priority: a low-priority thread holding the GIL would hold up
the reactor behind it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.python.threadpool import ThreadPool

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: How much lower than the process the low-priority threads run (nice steps).
NICENESS = 10
#: Threads at most, per priority: enough to keep the orders going, and more
#: would only take CPU from the host.
MAX_THREADS = 2


def lowPriority(function: F) -> F:
    """
    Mark C{function} as long CPU work that releases the GIL: the workers
    run it at a lower CPU priority.
    """
    function.lowPriority = True  # type: ignore[attr-defined]
    return function


def _lowerPriority(niceness: int) -> None:
    """
    Lower the calling thread's CPU priority by C{niceness}, on Linux only:
    elsewhere the call would lower the whole process.
    """
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + niceness))
    except OSError:
        pass


class _DaemonThread(threading.Thread):
    # A host that forgets to stop the resource can still exit; the writes
    # are atomic, so one cut short loses nothing.
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, daemon=True, **kwargs)


class BackgroundWorkers:
    """
    Two small thread pools, one of them at a lower CPU priority.

    They start with their first job; L{stop} lets the jobs end.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        name: str = "letsencrypt-resource",
        maxThreads: int = MAX_THREADS,
        niceness: int = NICENESS,
    ):
        """
        @param name: What the threads' names start with.
        """
        self._reactor = reactor
        self._name = name
        self._maxThreads = maxThreads
        self._niceness = niceness
        self._pools: dict[bool, ThreadPool] = {}
        self._lowered = threading.local()

    def _pool(self, low: bool) -> ThreadPool:
        pool = self._pools.get(low)
        if pool is None:
            name = self._name + ("-low" if low else "")
            pool = self._pools[low] = ThreadPool(0, self._maxThreads, name=name)
            pool.threadFactory = _DaemonThread
            pool.start()
        return pool

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """
        Call C{f(*args, **kwargs)} in a worker thread, of low priority if
        C{f} is marked L{lowPriority}.

        @return: A Deferred with its result, fired in the reactor thread.
        """
        if not getattr(f, "lowPriority", False):
            return deferToThreadPool(self._reactor, self._pool(False), f, *args, **kwargs)
        return deferToThreadPool(self._reactor, self._pool(True), self._low, f, args, kwargs)

    def _low(self, f: Callable[..., T], args: Any, kwargs: Any) -> T:
        if not getattr(self._lowered, "done", False):
            self._lowered.done = True
            _lowerPriority(self._niceness)
        return f(*args, **kwargs)

    def stop(self) -> Deferred[None]:
        """
        Let the running jobs end and the threads exit, without blocking the
        reactor while they do.
        """
        pools, self._pools = list(self._pools.values()), {}
        return gatherResults([deferToThread(pool.stop) for pool in pools]).addCallback(
            lambda _: None
        )
