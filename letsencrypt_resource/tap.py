"""
The C{twistd lets-encrypt} command.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import usage

from .config import ConfigurationError, ResourceOptions
from .control import StateDirectoryLocked, StateLock
from .host import ServerService, makeResource, readConfiguration
from .nodestorage import stopReactor
from .reload import ReloadOnHangUp
from .startupcollection import ResumeCollection, pauseCollection, resumeCollection


class Options(usage.Options):
    """
    Options of C{twistd lets-encrypt}.
    """

    synopsis = "--config FILE"
    longdesc = (
        "Run the file services of an INI configuration with certificates "
        "obtained and renewed automatically from an ACME CA."
    )
    optParameters = [
        ["config", "c", None, "The INI configuration file.", str],
    ]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse the command line and read the configuration (see
        L{postOptions}).

        Automatic garbage collection pauses from here until the server has
        started (see L{pauseCollection}; under twistd, the plugin paused it
        only while it imported this module); options refused turn it on
        again.
        """
        pauseCollection()
        try:
            super().parseOptions(options)
        except BaseException:
            # twistd exits; a host that catches the exit goes on collecting.
            resumeCollection()
            raise

    def postOptions(self) -> None:
        """
        Read and validate the whole configuration before anything starts.

        A configuration that cannot be used stops twistd with status 1 and
        one line naming the file, section and option, without twistd's
        usage text, which says nothing about it.
        """
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        self._readConfiguration()

    def _readConfiguration(self) -> None:
        """
        Read the configuration and take its state directory's lock.
        """
        try:
            configuration = readConfiguration(self["config"])
        except ConfigurationError as error:
            _refuse(f"{self['config']}: {error}")
        self["configuration"] = configuration
        self["lock"] = None
        if configuration.resource is not None:
            lock = StateLock(configuration.resource.stateDirectory)
            try:
                lock.acquire()
            except (StateDirectoryLocked, OSError) as error:
                _refuse(f"{self['config']}: {error}")
            self["lock"] = lock


def _refuse(message: str) -> NoReturn:
    """
    Stop twistd before anything starts, with C{message} alone.
    """
    print(f"twistd lets-encrypt: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def refusedByCluster(
    reactor: Any,
    path: str,
    options: ResourceOptions,
    atExit: Callable[..., object] = atexit.register,
) -> Callable[[], None]:
    """
    What twistd does when the cluster's database refuses this node's key
    file (event 20220, which needs the database, so it comes once the
    reactor runs): say so on the standard error as for the other start-up
    errors, stop, and end with status 1 once twistd has cleaned up.

    twistd ends with status 0 whatever stopped its reactor, and swallows
    what its shutdown triggers raise: the status is set when the
    interpreter exits, after twistd removed its pid file.

    @param path: The configuration file.
    @param atExit: Registers what the interpreter does at exit.
    """
    error = ConfigurationError(
        options.section,
        "cluster_key_file",
        f"{options.clusterKeyFile} is not the key file the cluster database was first used with",
    )

    def refused() -> None:
        # twistd sends sys.stderr to its log: this goes to the terminal.
        print(f"twistd lets-encrypt: error: {path}: {error}", file=sys.__stderr__, flush=True)
        atExit(_exitWith, 1)
        stopReactor(reactor)()

    return refused


def _exitWith(status: int) -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    os._exit(status)


def makeService(options: Options) -> IService:
    """
    Build the server described by the validated configuration; while it
    runs, C{SIGHUP} reloads the configuration file.  A node that the
    cluster's database refuses stops with status 1 (see
    L{refusedByCluster}).  Once every service has started, the garbage
    collector resumes (see L{ResumeCollection}): what starting froze
    includes any garbage in cycles the process held when the options were
    parsed, for good, so a long-lived process that builds a server here
    collects first.
    """
    from twisted.internet import reactor

    path = os.path.abspath(options["config"])
    configuration = options["configuration"]
    factory = makeResource
    if configuration.resource is not None:
        onRefused = refusedByCluster(reactor, path, configuration.resource)
        factory = partial(makeResource, onRefused=onRefused)
    server = ServerService(
        configuration, reactor, options["lock"], path=path, resourceFactory=factory
    )
    ReloadOnHangUp(server.reload, IReactorFromThreads(reactor)).setServiceParent(server)
    # Last: once every other service has started, before the reactor runs.
    ResumeCollection().setServiceParent(server)
    return server
