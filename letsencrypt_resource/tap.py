"""
The C{twistd lets-encrypt} command.
"""

from __future__ import annotations

import os

from twisted.application.service import IService
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
        """
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            configuration = readConfiguration(self["config"])
        except ConfigurationError as error:
            raise usage.UsageError(f"{self['config']}: {error}")
        self["configuration"] = configuration
        self["lock"] = None
        if configuration.resource is not None:
            lock = StateLock(configuration.resource.stateDirectory)
            try:
                lock.acquire()
            except (StateDirectoryLocked, OSError) as error:
                raise usage.UsageError(f"{self['config']}: {error}")
            self["lock"] = lock


def makeService(options: Options) -> IService:
    """
    Build the server described by the validated configuration; while it
    runs, C{SIGHUP} reloads the configuration file.
    """
    from twisted.internet import reactor

    server = ServerService(
        options["configuration"], reactor, options["lock"], path=os.path.abspath(options["config"])
    )
    ReloadOnHangUp(server.reload, reactor).setServiceParent(server)
    return server
