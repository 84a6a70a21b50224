"""
The state directory: account, certificates and the provisional signer, on
disk, written atomically and readable by the owner only.

Layout under the state directory (folders 0700, files 0600)::

    accounts/<hash of the ACME URL>.json   account key and URL
    certificates/<domains joined by _>.pem key + full chain, one file
    renewal/<domains joined by _>.json     renewal state, JSON; holds the
                                           key of the order under way
    provisional-signer.pem                 this installation's signer

(a long domain set's name is shortened, see L{domainsFileName}).  Every
write goes through L{letsencrypt_resource.safefs}: no link is followed and
no folder that another user controls is written in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from typing import Any, Collection

import attrs
from zope.interface import implementer

from .certificates import CertifiedKey, InvalidCertificate
from .config import ConfigurationError, ResourceOptions
from .interfaces import ICertificateStore
from .keys import PrivateKey, keyFromPEM, keyToPEM
from .safefs import UnusablePath, checkFolder, openFolder, replaceInFolder


class StoreError(Exception):
    """
    The state cannot be read or written.

    @ivar path: The file or folder concerned.
    """

    def __init__(self, path: str, message: str):
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@attrs.frozen
class AccountRecord:
    """
    An ACME account: its key and, once registered, its URL and the contacts
    it was given.
    """

    key: PrivateKey
    url: str | None = None
    contacts: tuple[str, ...] = ()

    def toJSON(self) -> bytes:
        """
        The record as the JSON document a store keeps.
        """
        document = {
            "url": self.url,
            "contacts": list(self.contacts),
            "key": keyToPEM(self.key).decode("ascii"),
        }
        return json.dumps(document, indent=2).encode("utf-8")

    @classmethod
    def fromJSON(cls, data: bytes) -> AccountRecord:
        """
        Read a record L{toJSON} wrote.

        @raise ValueError: when C{data} is not such a record.
        """
        try:
            document = json.loads(data)
            return cls(
                keyFromPEM(document["key"].encode("ascii")),
                document.get("url"),
                tuple(document.get("contacts", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"is not a valid account file: {error}") from None


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


#: The longest name L{domainsFileName} gives, so that the name, its suffix
#: (C{.json} at most) and the temporary form C{.<name>.<pid>.tmp} of a
#: write fit in the 255 bytes of a file name.
MAX_NAME = 255 - len(".json") - len(f"..{2**32}.tmp")
_DIGEST_LENGTH = 64


def domainsFileName(domains: tuple[str, ...]) -> str:
    """
    The file or folder name for a domain set: its names joined by C{_}; or,
    when that is longer than L{MAX_NAME}, its start, C{_} and the SHA-256
    of the whole in hex.  No set's joined names end so: a 64-character
    label is not a valid domain name.
    """
    joined = "_".join(domains)
    if len(joined.encode("utf-8")) <= MAX_NAME:
        return joined
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()
    return f"{joined[: MAX_NAME - _DIGEST_LENGTH - 1]}_{digest}"


def _writeError(path: str, error: OSError) -> StoreError:
    """
    The L{StoreError} for a write of C{path} that failed with C{error}.
    """
    reason = str(error) if isinstance(error, UnusablePath) else error.strerror
    return StoreError(path, f"cannot be written: {reason}")


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


@implementer(ICertificateStore)
class DirectoryStore:
    """
    An L{ICertificateStore} in a folder of the file system.
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

    def _file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def _read(self, path: str) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as stream:
                return stream.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(path, f"cannot be read: {error.strerror}") from None

    def _write(self, path: str, data: bytes) -> str:
        """
        Replace the file C{path} of the state directory with C{data}, 0600,
        creating its folders 0700.
        """
        folder, name = os.path.split(os.path.relpath(path, self.path))
        try:
            with openFolder(self.path, [folder] if folder else []) as fd:
                replaceInFolder(fd, [(name, data, 0o600)])
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
        for path in (self._certificatePath(domains), self._renewalStatePath(domains)):
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            except OSError as error:
                raise _writeError(path, error) from None
            if not stat.S_ISREG(mode):
                raise StoreError(path, "cannot be written: something other than a file is there")

    def _accountPath(self, acmeURL: str) -> str:
        digest = hashlib.sha256(acmeURL.encode("utf-8")).hexdigest()[:24]
        return self._file("accounts", f"{digest}.json")

    def loadAccount(self, acmeURL: str) -> AccountRecord | None:
        path = self._accountPath(acmeURL)
        data = self._read(path)
        if data is None:
            return None
        try:
            return AccountRecord.fromJSON(data)
        except ValueError as error:
            raise StoreError(path, str(error)) from None

    def saveAccount(self, acmeURL: str, record: AccountRecord) -> None:
        self._write(self._accountPath(acmeURL), record.toJSON())

    def _certificatePath(self, domains: tuple[str, ...]) -> str:
        return self._file("certificates", domainsFileName(domains) + ".pem")

    def loadCertificate(self, domains: tuple[str, ...]) -> CertifiedKey | None:
        path = self._certificatePath(domains)
        data = self._read(path)
        if data is None:
            return None
        try:
            return CertifiedKey.fromPEM(data)
        except InvalidCertificate as error:
            raise StoreError(path, str(error)) from None

    def saveCertificate(
        self, domains: tuple[str, ...], certifiedKey: CertifiedKey
    ) -> str:
        return self._write(self._certificatePath(domains), certifiedKey.toPEM())

    def _renewalStatePath(self, domains: tuple[str, ...]) -> str:
        return self._file("renewal", domainsFileName(domains) + ".json")

    def loadRenewalState(self, domains: tuple[str, ...]) -> dict[str, Any] | None:
        path = self._renewalStatePath(domains)
        data = self._read(path)
        if data is None:
            return None
        try:
            state = json.loads(data)
        except ValueError as error:
            raise StoreError(path, f"is not a valid renewal state: {error}") from None
        if not isinstance(state, dict):
            raise StoreError(path, "is not a valid renewal state: not an object")
        return state

    def saveRenewalState(self, domains: tuple[str, ...], state: dict[str, Any]) -> None:
        self._write(
            self._renewalStatePath(domains), json.dumps(state, indent=2).encode("utf-8")
        )

    def loadProvisionalSigner(self) -> bytes | None:
        return self._read(self._file("provisional-signer.pem"))

    def saveProvisionalSigner(self, pem: bytes) -> None:
        self._write(self._file("provisional-signer.pem"), pem)


def exportCertificate(
    directory: str, domains: tuple[str, ...], certifiedKey: CertifiedKey
) -> str:
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
    files = [(name, data, mode) for name, (data, mode) in zip(EXPORTED_FILES, contents)]
    try:
        with openFolder(directory, [folderName], privateBase=False) as fd:
            replaceInFolder(fd, files)
    except OSError as error:
        raise _writeError(folder, error) from None
    return folder
