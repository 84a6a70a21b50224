"""
The checks of a configuration that C{status} makes, beyond the file
itself: the state directory and the store directory, and the cluster key
file.  Both the full command (see L{letsencrypt_resource.host}) and the
status read without a server (L{letsencrypt_resource.localstatus}, which
must not import the reactor) make them from here.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Configuration, ConfigurationError
from .storage.checks import checkStorage
from .storage.sealing import KeyFileError, readKeyFile


def checkState(configuration: Configuration) -> None:
    """
    The checks of the state directory and the store directory.

    @raise ConfigurationError: when one of them cannot be written safely.
    """
    resource = configuration.resource
    if resource is not None:
        checkStorage(resource)


def checkCluster(configuration: Configuration) -> None:
    """
    The check of the cluster key file, when a cluster database is set.

    @raise ConfigurationError: naming C{cluster_key_file} and the file,
        when it cannot be used (see L{readKeyFile}).
    """
    resource = configuration.resource
    if resource is not None and resource.clusterKeyFile is not None:
        try:
            readKeyFile(resource.clusterKeyFile)
        except KeyFileError as error:
            raise ConfigurationError(resource.section, "cluster_key_file", str(error)) from None


#: The checks of C{status}: it neither reaches the CA nor serves files.
STATUS_CHECKS: tuple[Callable[[Configuration], None], ...] = (checkState, checkCluster)
