"""
What only the state directory needs beside its L{IStorage
<letsencrypt_resource.storage.directory.DirectoryStorage>}: the removal of
what crashed writes left, the checks that it and the store directory can be
written, the export of certificates to the store directory; and
L{DirectoryStore}, which reads and writes its records at once, for tools
and tests that look at a state directory while no resource runs.

Layout under the state directory (folders 0700, files 0600)::

    accounts/<hash of the ACME URL>.json   account key and URL
    certificates/<domains joined by _>.pem key + full chain, one file
    renewal/<domains joined by _>.json     renewal state, JSON; holds the
                                           key of the order under way
    provisional-signer.pem                 this installation's signer

(a long domain set's name is shortened, see L{domainsFileName}; the keys
and formats are those of L{letsencrypt_resource.storage.records}).  Every
write goes through L{letsencrypt_resource.safefs}: no link is followed and
no folder that another user controls is written in.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from .certificates import CertifiedKey
from .config import ConfigurationError, ResourceOptions
from .safefs import UnusablePath, checkFolder, openFolder, replaceInFolder
from .storage.directory import readFile, reason, writeFile
from .storage.interface import StorageError
from .storage.records import (
    SIGNER_KEY,
    AccountRecord,
    accountKey,
    certificateKey,
    domainsFileName,
    parseAccount,
    parseCertificate,
    parseRenewalState,
    renewalKey,
    renewalStateJSON,
)

T = TypeVar("T")


class StoreError(StorageError):
    """
    The state cannot be read or written.

    @ivar path: The file or folder concerned.
    """

    def __init__(self, path: str, message: str):
        super().__init__(path, message)
        self.path = path


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9]+\.tmp$")

#: The files L{exportCertificate} writes in each certificate's folder.
EXPORTED_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


def removeTemporaryFiles(path: str, only: Collection[str] | None = None) -> int:
    """
    Remove, in every folder under C{path}, the C{.<name>.<pid>.tmp} files
    that writes cut short by a crash left behind; with C{only}, those of
    these names only.  Folders of other users are left alone: the product
    never writes there.

    @return: How many were removed.
    """
    removed = 0
    for folder, _, names in os.walk(path):
        if os.lstat(folder).st_uid != os.geteuid():
            continue
        for name in names:
            match = _TEMPORARY.match(name)
            if match and (only is None or match.group("name") in only):
                try:
                    os.unlink(os.path.join(folder, name))
                except FileNotFoundError:
                    continue
                removed += 1
    return removed


def _writeError(path: str, error: OSError) -> StoreError:
    """
    The L{StoreError} for a write of C{path} that failed with C{error}.
    """
    return StoreError(path, f"cannot be written: {reason(error)}")


def _folderError(error: OSError) -> str:
    """
    What C{error}, raised while opening a folder, says, with the path.
    """
    return str(error) if isinstance(error, UnusablePath) else f"{error.filename}: {error.strerror}"


def checkStorage(options: ResourceOptions) -> None:
    """
    Check, before anything is written, that the state directory and the
    store directory can be written safely (see L{letsencrypt_resource.safefs}).

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


class DirectoryStore:
    """
    The records of a state directory, read and written at once in the
    calling thread (the resource goes through L{DirectoryStorage
    <letsencrypt_resource.storage.directory.DirectoryStorage>} instead),
    and the directory-only checks the resource runs in a worker thread.
    """

    def __init__(self, path: str, exportDirectory: str | None = None):
        """
        @param path: The state directory.
        @param exportDirectory: The folder L{exportCertificate} writes in,
            if any, for L{checkCertificateWritable}.
        """
        self.path = path
        self.exportDirectory = exportDirectory

    def removeTemporaryFiles(self) -> int:
        """
        Remove what writes cut short by a crash left in the state directory
        (see L{removeTemporaryFiles}).  Call it only while holding the state
        directory's lock.

        @return: How many were removed.
        """
        return removeTemporaryFiles(self.path)

    def _read(self, key: str, parse: Callable[[bytes], T]) -> T | None:
        """
        The file C{key} of the state directory, as C{parse} reads it.
        """
        path = os.path.join(self.path, key)
        try:
            data = readFile(self.path, key)
        except OSError as error:
            raise StoreError(path, f"cannot be read: {reason(error)}") from None
        if data is None:
            return None
        try:
            return parse(data)
        except ValueError as error:
            raise StoreError(path, str(error)) from None

    def _write(self, key: str, data: bytes) -> str:
        """
        Replace the file C{key} of the state directory with C{data}, 0600,
        creating its folders 0700.

        @return: Its path.
        """
        path = os.path.join(self.path, key)
        try:
            writeFile(self.path, key, data)
        except OSError as error:
            raise _writeError(path, error) from None
        return path

    def checkCertificateWritable(self, domains: tuple[str, ...]) -> None:
        """
        Check that the certificate, the renewal state and the export of
        C{domains} can be written, before a certificate is ordered.

        @raise StoreError: when one of their folders cannot be written or
            created, or is not safe to write in.
        """
        folders = [(self.path, [folder], True) for folder in ("certificates", "renewal")]
        if self.exportDirectory is not None:
            folders.append((self.exportDirectory, [domainsFileName(domains)], False))
        for base, parts, private in folders:
            try:
                checkFolder(base, parts, privateBase=private)
            except OSError as error:
                raise _writeError(os.path.join(base, *parts), error) from None
        for key in (certificateKey(domains), renewalKey(domains)):
            path = os.path.join(self.path, key)
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            except OSError as error:
                raise _writeError(path, error) from None
            if not stat.S_ISREG(mode):
                raise StoreError(path, "cannot be written: something other than a file is there")

    def loadAccount(self, acmeURL: str) -> AccountRecord | None:
        return self._read(accountKey(acmeURL), parseAccount)

    def saveAccount(self, acmeURL: str, record: AccountRecord) -> None:
        self._write(accountKey(acmeURL), record.toJSON())

    def loadCertificate(self, domains: tuple[str, ...]) -> CertifiedKey | None:
        return self._read(certificateKey(domains), parseCertificate)

    def saveCertificate(self, domains: tuple[str, ...], certifiedKey: CertifiedKey) -> str:
        return self._write(certificateKey(domains), certifiedKey.toPEM())

    def loadRenewalState(self, domains: tuple[str, ...]) -> dict[str, Any] | None:
        return self._read(renewalKey(domains), parseRenewalState)

    def saveRenewalState(self, domains: tuple[str, ...], state: dict[str, Any]) -> None:
        self._write(renewalKey(domains), renewalStateJSON(state))

    def loadProvisionalSigner(self) -> bytes | None:
        return self._read(SIGNER_KEY, bytes)

    def saveProvisionalSigner(self, pem: bytes) -> None:
        self._write(SIGNER_KEY, pem)


def exportCertificate(directory: str, domains: tuple[str, ...], certifiedKey: CertifiedKey) -> str:
    """
    Write C{certifiedKey} under C{directory} as certbot lays files out.

    The folder is named after C{domains} joined by C{_} and holds
    C{privkey.pem} (0600), C{cert.pem} (the certificate), C{chain.pem} (the
    intermediates) and C{fullchain.pem} (both), replaced together (see
    L{replaceInFolder}); the key is renamed last, so that a reader that
    finds a new key finds its certificate too.

    @return: The folder written.
    @raise StoreError: when a file cannot be written.
    """
    folderName = domainsFileName(domains)
    folder = os.path.join(directory, folderName)
    contents = [
        (certifiedKey.certificatePEM, 0o644),
        (certifiedKey.chainPEM, 0o644),
        (certifiedKey.fullchainPEM, 0o644),
        (certifiedKey.keyPEM, 0o600),
    ]
    files = [
        (name, data, mode) for name, (data, mode) in zip(EXPORTED_FILES, contents, strict=False)
    ]
    try:
        with openFolder(directory, [folderName], privateBase=False) as fd:
            replaceInFolder(fd, files)
    except OSError as error:
        raise _writeError(folder, error) from None
    return folder
