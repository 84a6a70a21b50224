"""
The state directory: account, certificates and the provisional signer, on
disk, written atomically and readable by the owner only.

Layout under the state directory (folders 0700, files 0600)::

    accounts/<hash of the ACME URL>.json   account key and URL
    certificates/<domains joined by _>.pem key + full chain, one file
    renewal/<domains joined by _>.json     renewal state, JSON
    provisional-signer.pem                 this installation's signer
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Collection

import attrs
from zope.interface import implementer

from .certificates import CertifiedKey, InvalidCertificate
from .interfaces import ICertificateStore
from .keys import PrivateKey, keyFromPEM, keyToPEM


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


def writeAtomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """
    Replace the file at C{path} with C{data} so that readers see either the
    old or the new content, never a mix, even after a crash.

    The data is written to a temporary file in the same folder, flushed to
    disk, and renamed over C{path}; the folder is then flushed too.

    @raise OSError: when any step fails; C{path} is then unchanged.
    """
    replaceTogether(os.path.dirname(path) or ".", [(os.path.basename(path), data, mode)])


def replaceTogether(directory: str, files: list[tuple[str, bytes, int]]) -> None:
    """
    Replace several files of C{directory} as one: each C{(name, data, mode)}
    is first written in full to a temporary file and flushed to disk, and
    only then are they all renamed over their names, in order, with no disk
    wait between two renames; the folder is flushed last.

    A crash before the renames leaves every file as it was; only one in the
    microseconds between renames can leave some new beside some old.

    @raise OSError: when any step fails; nothing is replaced when a write
        fails.
    """
    prepared: list[tuple[str, str]] = []
    try:
        for name, data, mode in files:
            path = os.path.join(directory, name)
            prepared.append((_writeTemporary(path, data, mode), path))
    except BaseException:
        for temporary, _ in prepared:
            os.unlink(temporary)
        raise
    for index, (temporary, path) in enumerate(prepared):
        try:
            os.replace(temporary, path)
        except BaseException:
            for left, _ in prepared[index:]:
                os.unlink(left)
            raise
    directoryFD = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directoryFD)
    finally:
        os.close(directoryFD)


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9]+\.tmp$")

#: The files L{exportCertificate} writes in each certificate's folder.
EXPORTED_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


def removeTemporaryFiles(path: str, only: Collection[str] | None = None) -> int:
    """
    Remove, in every folder under C{path}, the C{.<name>.<pid>.tmp} files
    that writes cut short by a crash left behind; with C{only}, those of
    these names only.

    @return: How many were removed.
    """
    removed = 0
    for folder, _, names in os.walk(path):
        for name in names:
            match = _TEMPORARY.match(name)
            if match and (only is None or match.group("name") in only):
                try:
                    os.unlink(os.path.join(folder, name))
                except FileNotFoundError:
                    continue
                removed += 1
    return removed


def _writeTemporary(path: str, data: bytes, mode: int) -> str:
    """
    Write C{data} to a new temporary file beside C{path}, flushed to disk.

    @return: The temporary file's path.
    """
    temporary = os.path.join(
        os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp"
    )
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temporary)
        raise
    os.close(fd)
    return temporary


def makePrivateDirectory(path: str) -> None:
    """
    Create C{path} and each missing parent 0700 (whatever the umask), and
    make C{path} 0700.
    """
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        makePrivateDirectory(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    os.chmod(path, 0o700)


def domainsFileName(domains: tuple[str, ...]) -> str:
    """
    The file or folder name for a domain set: its names joined by C{_}.
    """
    return "_".join(domains)


@implementer(ICertificateStore)
class DirectoryStore:
    """
    An L{ICertificateStore} in a folder of the file system.
    """

    def __init__(self, path: str):
        self.path = path

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
            with open(path, "rb") as stream:
                return stream.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(path, f"cannot be read: {error.strerror}") from None

    def _write(self, path: str, data: bytes) -> str:
        try:
            # The store's own folder first: makedirs would create it, as a
            # parent of the file's, with the umask's mode.
            makePrivateDirectory(self.path)
            makePrivateDirectory(os.path.dirname(path))
            writeAtomically(path, data)
        except OSError as error:
            raise StoreError(path, f"cannot be written: {error.strerror}") from None
        return path

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

    def checkCertificateWritable(self, domains: tuple[str, ...]) -> None:
        path = self._certificatePath(domains)
        folder = os.path.dirname(path)
        probe = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        try:
            makePrivateDirectory(folder)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as error:
            raise StoreError(path, f"cannot be written: {error.strerror}") from None

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
    L{replaceTogether}); the key is renamed last, so that a reader that
    finds a new key finds its certificate too.

    @return: The folder written.
    @raise StoreError: when a file cannot be written.
    """
    folder = os.path.join(directory, domainsFileName(domains))
    contents = [
        (certifiedKey.certificatePEM, 0o644),
        (certifiedKey.chainPEM, 0o644),
        (certifiedKey.fullchainPEM, 0o644),
        (certifiedKey.keyPEM, 0o600),
    ]
    files = [(name, data, mode) for name, (data, mode) in zip(EXPORTED_FILES, contents)]
    try:
        makePrivateDirectory(folder)
        replaceTogether(folder, files)
    except OSError as error:
        raise StoreError(folder, f"cannot be written: {error.strerror}") from None
    return folder
