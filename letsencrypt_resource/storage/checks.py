"""
The checks that the state directory and the store directory can be written
safely (see L{letsencrypt_resource.safefs}): at start, before anything is
written, and before each certificate is ordered.
"""

from __future__ import annotations

import os
import stat

from ..config import ConfigurationError, ResourceOptions
from ..safefs import UnusablePath, checkFolder
from .directory import writeError
from .interface import StorageError
from .records import certificateKey, domainsFileName, renewalKey


def _folderError(error: OSError) -> str:
    """
    What C{error}, raised while opening a folder, says, with the path.
    """
    return str(error) if isinstance(error, UnusablePath) else f"{error.filename}: {error.strerror}"


def checkStorage(options: ResourceOptions) -> None:
    """
    Check, before anything is written, that the state directory and the
    store directory can be written safely.

    @raise ConfigurationError: naming the option of a folder that cannot.
    """
    folders = [("state_directory", options.stateDirectory, True)]
    if options.storeDirectory is not None:
        folders.append(("store_directory", options.storeDirectory, False))
    for option, path, private in folders:
        try:
            checkFolder(path, privateBase=private)
        except OSError as error:
            raise ConfigurationError(options.section, option, _folderError(error)) from None


def checkCertificateWritable(
    stateDirectory: str, exportDirectory: str | None, domains: tuple[str, ...]
) -> None:
    """
    Check that the certificate and the renewal state of C{domains} can be
    written in C{stateDirectory}, and their export in C{exportDirectory}
    if any, before a certificate is ordered.

    @raise StorageError: naming the path, when one of their folders cannot
        be written or created, or is not safe to write in, or when
        something other than a file is where one of them goes.
    """
    folders = [(stateDirectory, [folder], True) for folder in ("certificates", "renewal")]
    if exportDirectory is not None:
        folders.append((exportDirectory, [domainsFileName(domains)], False))
    for base, parts, private in folders:
        try:
            checkFolder(base, parts, privateBase=private)
        except OSError as error:
            raise writeError(os.path.join(base, *parts), error) from None
    for key in (certificateKey(domains), renewalKey(domains)):
        path = os.path.join(stateDirectory, key)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as error:
            raise writeError(path, error) from None
        if not stat.S_ISREG(mode):
            raise StorageError(path, "cannot be written: something other than a file is there")
