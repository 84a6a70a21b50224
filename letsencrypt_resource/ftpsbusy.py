"""
The files FTPS uploads are writing, in this process: while one is, a
second upload of it, its removal and its renaming (from or to its name)
are refused, with 450 as servers answer for a locked file (with 550 or
553 where RFC 959 lists no 450), until the first upload was stored or
removed.

Each upload writes a temporary file and renames it to its name at the
end; a resumed upload (C{APPE}, C{REST} then C{STOR}) first copies the
file it replaces into it.  Two at once would each copy the same start,
and the last rename would drop the other's data; a removal during the
copy would be undone by the rename.  Refusing rather than waiting keeps
no data connection open for an unknown time: clients retry a 450.

A file is known by its folder (device and inode) and its name, so that
two services serving one folder (explicit and implicit FTPS, say) share
the lock.  Other processes, and other nodes of a cluster, are not told.
Names are compared as given: on a folder whose file system folds case
(vfat, exfat, SMB mounts, ext4 with casefold), two spellings of one file
are two names, and are not refused.

The temporary files the uploads write are known the same way
(L{TEMPORARIES}), so that a service starting on a folder another service
of the process serves does not take them for the leftovers of a stopped
process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from twisted.protocols.ftp import REQ_ACTN_ABRTD_FILE_UNAVAIL, FTPCmdError

_Key = tuple[int, int, str]


class FileBusy(FTPCmdError):
    """
    A file an upload is writing: it cannot be uploaded, removed or renamed
    until that upload ended.
    """

    errorCode = REQ_ACTN_ABRTD_FILE_UNAVAIL

    def __init__(self, path: str, code: int = 450):
        """
        @param path: The path the client gave.
        @param code: The reply's code: 450 where RFC 959 lists it (STOR,
            APPE, RNFR, DELE), else a permanent one (550 for MKD and RMD,
            553 for RNTO).
        """
        super().__init__(path)
        self.code = code

    def response(self) -> str:
        """
        The reply: Twisted's words for 450 take no name.
        """
        return f"{self.code} {self.args[0]}: file busy, an upload of it is in progress."


class BusyFiles:
    """
    The files uploads are writing, each known by its folder and name.
    """

    def __init__(self) -> None:
        self._busy: set[_Key] = set()

    def take(self, folder: int, name: str, path: Sequence[str]) -> Callable[[], None]:
        """
        Mark the file C{name} of the open folder C{folder} busy until what
        is given is called (once).

        @param path: The path the client gave, for the refusal.
        @raise FileBusy: when it is busy already.
        """
        key = _key(folder, name)
        if key in self._busy:
            raise FileBusy("/".join(path))
        self._busy.add(key)
        released: list[None] = []

        def release() -> None:
            if not released:
                released.append(None)
                self._busy.discard(key)

        return release

    def check(self, folder: int, name: str, path: Sequence[str], code: int = 450) -> None:
        """
        @param code: The code of the refusal (see L{FileBusy}).
        @raise FileBusy: when the file C{name} of the open folder C{folder}
            is busy.
        """
        if self.holds(folder, name):
            raise FileBusy("/".join(path), code)

    def holds(self, folder: int, name: str) -> bool:
        """
        Whether the file C{name} of the open folder C{folder} is busy; may
        be asked from another thread.
        """
        return bool(self._busy) and _key(folder, name) in self._busy


def _key(folder: int, name: str) -> _Key:
    """
    The file C{name} of the open folder C{folder}, whatever path or
    descriptor led to that folder.
    """
    status = os.fstat(folder)
    return status.st_dev, status.st_ino, name


#: The files the uploads of every FTPS service of this process write.
UPLOADING = BusyFiles()
#: The temporary files the uploads of every FTPS service of this process
#: write, from before they are made until they were renamed or removed.
TEMPORARIES = BusyFiles()
