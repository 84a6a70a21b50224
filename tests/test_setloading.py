"""
Tests for L{letsencrypt_resource.setloading.pausedCollection}.
"""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.startupcollection import pausedCollection


class PausedCollectionTests(SynchronousTestCase):
    """
    Automatic garbage collection pauses within L{pausedCollection}.
    """

    def setUp(self) -> None:
        self.addCleanup(gc.enable if gc.isenabled() else gc.disable)

    def test_resumed(self) -> None:
        """
        Collections pause within, and resume after, even after an error.
        """
        gc.enable()
        with self.assertRaises(KeyError), pausedCollection():
            within = gc.isenabled()
            raise KeyError("loading failed")
        self.assertEqual((within, gc.isenabled()), (False, True))

    def test_pausedAlready(self) -> None:
        """
        Collections paused already (by whoever paused them) stay paused
        after.
        """
        gc.disable()
        with pausedCollection():
            pass
        self.assertFalse(gc.isenabled())
