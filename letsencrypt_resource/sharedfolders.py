"""
The folders the services of one server serve, each open once.

Each service holds its folder open while it runs (see L{ServedFolder}).
Thousands of services serving one folder held one descriptor each, on top
of their listening sockets: 10,000 services needed more than 20,000 open
files.  Services that serve the same C{path} with the same C{hidden_files}
share one L{ServedFolder}, closed when the last of them stops.
"""

from __future__ import annotations

from collections.abc import Callable

from .folder import ServedFolder


class SharedFolders:
    """
    Open folders shared by the services serving them, counted.
    """

    def __init__(self, opener: Callable[[str, bool], ServedFolder] = ServedFolder.open):
        """
        @param opener: Opens a folder, as L{ServedFolder.open} does.
        """
        self._opener = opener
        self._open: dict[tuple[str, bool], tuple[ServedFolder, int]] = {}

    def open(self, path: str, hiddenFiles: bool) -> ServedFolder:
        """
        The folder C{path} open for one more service: the one open already,
        or opened now.

        @raise OSError: when it cannot be opened as a folder.
        """
        key = (path, hiddenFiles)
        folder, users = self._open.get(key) or (None, 0)
        if folder is None:
            folder = self._opener(path, hiddenFiles)
        self._open[key] = (folder, users + 1)
        return folder

    def close(self, folder: ServedFolder) -> None:
        """
        One service no longer serves C{folder}: closed once none does.
        """
        key = (folder.path, folder.hiddenFiles)
        shared, users = self._open[key]
        assert shared is folder
        if users > 1:
            self._open[key] = (folder, users - 1)
            return
        del self._open[key]
        folder.close()
