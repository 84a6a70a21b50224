"""
The C{twistd lets-encrypt} command.
"""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

from .config import ConfigurationError, loadConfiguration
from .control import StateDirectoryLocked, StateLock
from .host import ServerService, checkFileSystem


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
            configuration = loadConfiguration(self["config"])
            checkFileSystem(configuration)
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
    Build the server described by the validated configuration.
    """
    from twisted.internet import reactor

    return ServerService(options["configuration"], reactor, options["lock"])
