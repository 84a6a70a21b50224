"""
The rules a stored record's file is read by, the one implementation for
both readers of the state directory: the storage's thread
(L{letsencrypt_resource.storage.directory}) and its read-ahead process
(L{letsencrypt_resource.storage.readerchild}).  Standard library only, as
is L{letsencrypt_resource.safefs}: the read-ahead process imports nothing
else.

A key is read from the folders on its path, each opened below the state
directory without following a link and checked (see
L{openBelow <letsencrypt_resource.safefs.openBelow>}); its file must be a
regular file, is opened without following a link, and no more than the
limit and one byte are read of it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager

from ..safefs import UnusablePath

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class TooLarge(Exception):
    """
    A file is larger than the limit it is read to.
    """


def readIn(folder: int, name: str, base: str, key: str, limit: int) -> bytes | None:
    """
    The content of the regular file C{name} of the open C{folder} (the file
    of C{key} under C{base}, whose path is made only to name it in an
    error), or C{None} when it is missing; a
    link there is not followed.  A first read that returns the size the
    file reported ends it (four system calls a file, not five: at 10,000
    sets, 20,000 reads fewer at start-up); otherwise (a read cut short, a
    file that grew or shrank) it is read on to its end.  No more than
    C{limit} bytes and one are read.

    @raise OSError: naming the path, when it cannot be read
        (L{UnusablePath} when it is a link or not a regular file).
    @raise TooLarge: when it is larger than C{limit} bytes.
    """
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnusablePath(
                os.path.join(base, key), "is a symbolic link, which is never followed"
            ) from None
        raise OSError(error.errno, error.strerror, os.path.join(base, key)) from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise UnusablePath(os.path.join(base, key), "is not a regular file")
        if status.st_size > limit:
            raise TooLarge(os.path.join(base, key))
        first = os.read(fd, max(status.st_size + 1, 4096))
        if len(first) == status.st_size:
            return first
        parts = [first]
        read = len(first)
        while read <= limit and (part := os.read(fd, limit + 1 - read)):
            parts.append(part)
            read += len(part)
        if read > limit:
            raise TooLarge(os.path.join(base, key))
        return b"".join(parts)
    except UnusablePath:
        raise
    except OSError as error:
        raise OSError(error.errno, error.strerror, os.path.join(base, key)) from None
    finally:
        os.close(fd)


#: What a key's read gives: its content, C{None} when it is missing, or why
#: it cannot be read (L{TooLarge}, or an C{OSError} naming the path).
Result = bytes | None | TooLarge | OSError

#: What opens the folders C{parts} below the state directory, without
#: creating them: a context manager giving the folder's descriptor, or
#: raising C{FileNotFoundError} when one is missing.
FolderOpener = Callable[[Sequence[str]], AbstractContextManager[int]]


def splitKey(key: str) -> tuple[list[str], str]:
    """
    The folders of C{key}, a storage key, and its file's name.
    """
    *folders, name = key.split("/")
    return folders, name


def readEach(
    openFolder: FolderOpener, base: str, keys: Collection[str], limit: int
) -> Iterator[tuple[str, Result]]:
    """
    Read each file C{key} under the state directory C{base} (named in
    errors only), each folder opened once for the keys in it, the keys of
    a folder one after another in their order.

    @return: Each key with what its read gave: a missing folder makes its
        keys missing; a folder that cannot be used gives its error to each
        of its keys.
    """
    byFolder: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for key in keys:
        parts, name = splitKey(key)
        byFolder.setdefault(tuple(parts), []).append((key, name))
    for folders, inFolder in byFolder.items():
        try:
            with openFolder(folders) as folder:
                for key, name in inFolder:
                    try:
                        value: Result = readIn(folder, name, base, key, limit)
                    except (TooLarge, OSError) as error:
                        value = error
                    yield key, value
        except FileNotFoundError:
            for key, _ in inFolder:
                yield key, None
        except OSError as error:
            for key, _ in inFolder:
                yield key, error
