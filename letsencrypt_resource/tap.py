"""
The C{twistd lets-encrypt} command.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import usage

from .config import ConfigurationError
from .control import StateDirectoryLocked, StateLock
from .host import ServerService, readConfiguration
from .reload import ReloadOnHangUp


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

    def postOptions(self) -> None:
        """
        Read and validate the whole configuration before anything starts.

        A configuration that cannot be used stops twistd with status 1 and
        one line naming the file, section and option, without twistd's
        usage text, which says nothing about it.
        """
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
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


def makeService(options: Options) -> IService:
    """
    Build the server described by the validated configuration; while it
    runs, C{SIGHUP} reloads the configuration file.
    """
    from twisted.internet import reactor

    server = ServerService(
        options["configuration"], reactor, options["lock"], path=os.path.abspath(options["config"])
    )
    ReloadOnHangUp(server.reload, IReactorFromThreads(reactor)).setServiceParent(server)
    return server
