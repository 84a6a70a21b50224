"""
The export of certificates to the store directory, laid out as certbot lays
them out, for the programs that read certificates from files.
"""

from __future__ import annotations

import os

from ..certificates import CertifiedKey, InvalidCertificate
from ..safefs import openFolder, replaceInFolder
from .directory import writeError
from .interface import StorageError
from .records import certificateKey, domainsFileName

#: The files L{exportCertificate} writes in each certificate's folder.
EXPORTED_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


class UnreadableCertificate(StorageError):
    """
    The certificate to export was read from its record, whose PEM no
    longer parses: writing it again would not help.

    @ivar key: The record's key (C{certificates/<names>.pem}), in the
        state directory or the cluster's database.
    """


def exportCertificate(directory: str, domains: tuple[str, ...], certifiedKey: CertifiedKey) -> str:
    """
    Write C{certifiedKey} under C{directory} as certbot lays files out.

    The folder is named after C{domains} joined by C{_} and holds
    C{privkey.pem} (0600), C{cert.pem} (the certificate), C{chain.pem} (the
    intermediates) and C{fullchain.pem} (both), replaced together (see
    L{replaceInFolder}); the key is renamed last, so that a reader that
    finds a new key finds its certificate too.

    @return: The folder written.
    @raise StorageError: naming the folder, when a file cannot be written.
    @raise UnreadableCertificate: naming the record of C{domains}, when
        the certificate read from it (parsed at its first use) cannot be
        parsed.
    """
    folderName = domainsFileName(domains)
    folder = os.path.join(directory, folderName)
    try:
        contents = [
            (certifiedKey.certificatePEM, 0o644),
            (certifiedKey.chainPEM, 0o644),
            (certifiedKey.fullchainPEM, 0o644),
            (certifiedKey.keyPEM, 0o600),
        ]
    except InvalidCertificate as error:
        raise UnreadableCertificate(certificateKey(domains), str(error)) from None
    files = [
        (name, data, mode) for name, (data, mode) in zip(EXPORTED_FILES, contents, strict=False)
    ]
    try:
        with openFolder(directory, [folderName], privateBase=False) as fd:
            replaceInFolder(fd, files)
    except OSError as error:
        raise writeError(folder, error) from None
    return folder
