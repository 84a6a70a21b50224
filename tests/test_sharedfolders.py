"""
Tests for L{letsencrypt_resource.sharedfolders}.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.folder import ServedFolder
from letsencrypt_resource.sharedfolders import SharedFolders


class SharedFoldersTests(SynchronousTestCase):
    """
    Tests for L{SharedFolders}.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        os.mkdir(self.path)
        self.opened: list[ServedFolder] = []

        def opener(path: str, hiddenFiles: bool) -> ServedFolder:
            folder = ServedFolder.open(path, hiddenFiles)
            self.opened.append(folder)
            return folder

        self.folders = SharedFolders(opener)

    def served(self, folder: ServedFolder) -> bool:
        """
        Whether C{folder} is still open (not closed: it would answer 404).
        """
        return folder._root is not None

    def test_openOnce(self) -> None:
        """
        A folder served by several services is opened once, and closed
        when the last of them closes it.
        """
        first = self.folders.open(self.path, False)
        second = self.folders.open(self.path, False)
        self.assertIs(first, second)
        self.assertEqual(self.opened, [first])
        self.folders.close(first)
        self.assertTrue(self.served(first))
        self.folders.close(second)
        self.assertFalse(self.served(first))

    def test_openedAgain(self) -> None:
        """
        Once closed by all, a folder is opened afresh for the next service.
        """
        first = self.folders.open(self.path, False)
        self.folders.close(first)
        again = self.folders.open(self.path, False)
        self.assertIsNot(again, first)
        self.assertTrue(self.served(again))

    def test_hiddenFilesApart(self) -> None:
        """
        Services that differ in C{hidden_files} do not share their folder.
        """
        shown = self.folders.open(self.path, True)
        hidden = self.folders.open(self.path, False)
        self.assertIsNot(shown, hidden)
        self.assertEqual((shown.hiddenFiles, hidden.hiddenFiles), (True, False))

    def test_openFails(self) -> None:
        """
        A folder that cannot be opened raises, and counts no user.
        """
        missing = os.path.join(self.path, "missing")
        self.assertRaises(OSError, self.folders.open, missing, False)
        os.mkdir(missing)
        folder = self.folders.open(missing, False)
        self.folders.close(folder)
        self.assertFalse(self.served(folder))
