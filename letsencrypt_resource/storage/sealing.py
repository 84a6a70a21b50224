"""
Sealing values for a shared database: each value is encrypted and
authenticated with AES-256-GCM under a key derived (HKDF-SHA256) from the
cluster's key file, with a random nonce, and bound to the storage key it
is stored at and to the node that wrote it.  A dump of the database shows
no private key; a value moved to another key, changed, or written with
another key file does not open.

A sealed value is::

    MAGIC | length of the node name (1 byte) | node name | nonce (12 bytes)
          | ciphertext and tag

and its associated data is C{MAGIC}, the node name and the storage key.
"""

from __future__ import annotations

import os
import stat

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: The start of every sealed value, and its format's version.
MAGIC = b"LERS1"
#: What the key derivation is for: another use of the same key file gets
#: another key.
LABEL = b"letsencrypt-resource cluster sealing key, version 1"
#: The fewest bytes a key file holds.
MIN_KEY_FILE = 32
#: The most bytes read from a key file.
MAX_KEY_FILE = 65536
#: The fewest different byte values a key file holds: 32 random bytes
#: hold about 30 and their hex practically always more than 8 (a quarter
#: of such hex lacks one of the 16 digits); a byte repeated or a short
#: pattern, far fewer.
MIN_DISTINCT = 8
#: The fewest characters, blanks aside, of a key file that is all text: 44
#: is the base64 of 32 random bytes; a passphrase is shorter, and guessed
#: offline from a dump (the key derivation has no work factor).
MIN_TEXT = 44
_NONCE = 12


class KeyFileError(Exception):
    """
    The cluster key file cannot be used.

    @ivar path: The file.
    @ivar message: Why.
    """

    def __init__(self, path: str, message: str):
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"{self.path} {self.message}"


class Unsealable(ValueError):
    """
    A value is not one sealed with this key for this storage key.
    """


def readKeyFile(path: str) -> bytes:
    """
    The bytes of the key file at C{path}, which must be a regular file of
    L{MIN_KEY_FILE} to L{MAX_KEY_FILE} bytes, owned by this process's user
    or root, that neither its group nor others may read, write or run (as
    C{ssh} asks of a private key), and that looks random (see
    L{checkRandom}).  It is opened without waiting (a FIFO planted there
    is refused at once, not waited on) and read to its end.

    @raise KeyFileError: when it is not.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | os.O_NOCTTY)
    except OSError as error:
        raise KeyFileError(path, f"cannot be read: {error.strerror}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise KeyFileError(path, "is not a regular file")
        if status.st_uid not in (os.geteuid(), 0):
            raise KeyFileError(
                path,
                f"belongs to user {status.st_uid}, who could replace it: it must be "
                "this process's user's or root's",
            )
        if status.st_mode & 0o077:
            raise KeyFileError(
                path,
                f"is open to its group or others (mode {stat.S_IMODE(status.st_mode):04o}): "
                "make it readable by its owner only (chmod 600)",
            )
        data = _readAll(fd, MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) < MIN_KEY_FILE:
        raise KeyFileError(
            path,
            f"holds {len(data)} bytes, fewer than {MIN_KEY_FILE}: make one with "
            "head -c 32 /dev/urandom",
        )
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(path, f"holds more than {MAX_KEY_FILE} bytes")
    checkRandom(path, data)
    return data


def _readAll(fd: int, most: int) -> bytes:
    """
    The bytes of C{fd}, up to C{most}, read until its end (a read may give
    fewer than asked, as on a network file system).
    """
    parts: list[bytes] = []
    size = 0
    while size < most:
        part = os.read(fd, most - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def checkRandom(path: str, data: bytes) -> None:
    """
    Refuse key file contents C{data} that are obviously not random: fewer
    than L{MIN_DISTINCT} different bytes, or text (printable ASCII and
    blanks only) of fewer than L{MIN_TEXT} characters besides blanks, as a
    passphrase typed into a file would be.  This cannot tell a random file
    from a guessable one that passes; the documentation asks for 32 bytes
    from C{/dev/urandom}.

    @raise KeyFileError: when they are.
    """
    how = "make one with head -c 32 /dev/urandom"
    if len(set(data)) < MIN_DISTINCT:
        raise KeyFileError(
            path, f"holds fewer than {MIN_DISTINCT} different bytes, not random: {how}"
        )
    text = data.translate(None, b" \t\r\n")
    if all(32 < byte < 127 for byte in text) and len(text) < MIN_TEXT:
        raise KeyFileError(
            path, f"holds a text of {len(text)} characters, which can be guessed: {how}"
        )


def deriveKey(material: bytes) -> bytes:
    """
    The 256-bit sealing key derived from the key file's bytes C{material}.
    """
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABEL).derive(material)


def _keyBytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


@attrs.frozen
class Sealer:
    """
    Seals and opens the values of one node.

    @ivar key: The sealing key (see L{deriveKey}).
    @ivar node: The node's name, recorded in what it seals.
    """

    key: bytes = attrs.field(repr=False)
    node: str

    @classmethod
    def fromKeyFile(cls, path: str, node: str) -> Sealer:
        """
        The sealer of the key file at C{path} (see L{readKeyFile}).

        @raise KeyFileError: when the file cannot be used.
        """
        return cls(deriveKey(readKeyFile(path)), node)

    def seal(self, key: str, value: bytes) -> bytes:
        """
        C{value}, to be stored at the storage key C{key}, sealed.
        """
        node = self.node.encode("utf-8")[:255]
        nonce = os.urandom(_NONCE)
        header = MAGIC + bytes([len(node)]) + node
        sealed = AESGCM(self.key).encrypt(nonce, value, header + _keyBytes(key))
        return header + nonce + sealed

    def unseal(self, key: str, data: bytes) -> tuple[str, bytes]:
        """
        Open C{data}, read at the storage key C{key}.

        @return: The name of the node that sealed it, and the value.
        @raise Unsealable: when C{data} is not a value sealed with this
            key for C{key}.
        """
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 1:
            raise Unsealable("is not sealed with the cluster key")
        end = len(MAGIC) + 1 + data[len(MAGIC)]
        header, nonce, sealed = data[:end], data[end : end + _NONCE], data[end + _NONCE :]
        if len(nonce) < _NONCE:
            raise Unsealable("is a sealed value cut short")
        try:
            value = AESGCM(self.key).decrypt(nonce, sealed, header + _keyBytes(key))
        except InvalidTag:
            raise Unsealable(
                "does not open with this node's cluster_key_file: sealed with another "
                "key, changed, or moved from another key"
            ) from None
        return header[len(MAGIC) + 1 :].decode("utf-8", "replace"), value
