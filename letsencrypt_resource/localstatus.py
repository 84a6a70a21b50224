"""
The operations command's C{status} when no server runs on a state
directory of its own, read in the command's own thread without a reactor:
the configuration is read and checked as the full command reads it for
C{status} (the same L{STATUS_CHECKS
<letsencrypt_resource.statechecks.STATUS_CHECKS>}), the state directory's
lock is taken, and its records are read by L{offlineStatus
<letsencrypt_resource.statusreader.offlineStatus>}, every file read at once.
Neither the reactor nor TLS, nor the server's parts (the resource, its
operations, the control socket's server) are imported.

Whenever this way does not fit (another form of the command line, a
configuration the full command would refuse or that names a cluster
database, a state directory that does not exist yet or whose lock another
process holds, an error), nothing is printed and the full command runs,
which says what is wrong or asks the server that holds the lock.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable
from typing import Any, TextIO, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from .config import ConfigurationError, ResourceOptions, ServiceOptions, loadConfiguration
from .display import formatStatus
from .quickstatus import statusArguments
from .startupcollection import pausedCollection
from .statechecks import STATUS_CHECKS
from .statusreader import offlineStatus
from .storage.directory import DirectoryStorage, InThisThread
from .storage.lock import StateLock

T = TypeVar("T")


class WallClock:
    """
    The time of day: all of C{IReactorTime} that the reading of a state
    directory uses.
    """

    def seconds(self) -> float:
        """
        Seconds since the epoch, as the reactor gives them.
        """
        return time.time()


def _firedResult(d: Deferred[T]) -> T:
    """
    The result of C{d}, which has fired; its failure is raised.
    """
    results: list[T | Failure] = []
    d.addBoth(results.append)
    if not results:
        raise RuntimeError("the status was not read at once")
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def readRows(
    options: ResourceOptions, services: Iterable[ServiceOptions], lock: StateLock
) -> list[dict[str, Any]]:
    """
    The status rows of the resource of C{options} and its C{services},
    read from its state directory, whose C{lock} is held.
    """
    # Only its seconds() is called: the reading waits for nothing.
    clock = cast(IReactorTime, WallClock())
    storage = DirectoryStorage(
        options.stateDirectory, clock, clock, workers=InThisThread(), lock=lock
    )
    try:
        return _firedResult(offlineStatus(options, services, storage, clock))
    finally:
        _firedResult(storage.close())


def _read(path: str) -> tuple[str, list[dict[str, Any]]] | None:
    """
    The state directory of the configuration file at C{path} and the
    status rows read from it; C{None} when they are the full command's to
    read (see L{localStatus}), as is a configuration that is not a regular
    file (a pipe, C{/dev/stdin}: it can be read once only).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    try:
        configuration = loadConfiguration(path)
        options = configuration.resource
        if options is None or options.clusterDatabase or options.clusterKeyFile:
            return None
        for check in STATUS_CHECKS:
            check(configuration)
    except ConfigurationError:
        return None
    if not os.path.lexists(options.stateDirectory):
        return None
    lock = StateLock(options.stateDirectory)
    try:
        lock.acquire(reader=True)
    except Exception:
        return None
    try:
        return options.stateDirectory, readRows(options, configuration.services, lock)
    except Exception:
        return None
    finally:
        lock.release()


def localStatus(argv: list[str], out: TextIO) -> bool:
    """
    Print, to C{out}, the status that the full command prints when no
    server runs, when C{argv} asks for it plainly (see
    L{statusArguments <letsencrypt_resource.quickstatus.statusArguments>})
    and it can be read so (see above).

    @return: Whether it did; when not, the full command is to run.
    """
    arguments = statusArguments(argv)
    if arguments is None:
        return False
    path, asJSON = arguments
    # What is read lives until the command ends: the collector's automatic
    # collections would go over it again and again while it grows.
    with pausedCollection():
        read = _read(path)
        if read is None:
            return False
        stateDirectory, rows = read
        if asJSON:
            out.write(json.dumps(rows) + "\n")
        else:
            out.write(formatStatus(rows, False, stateDirectory) + "\n")
    return True
