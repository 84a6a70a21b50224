"""
Tests for L{letsencrypt_resource.host.ServerService} itself.
"""

from __future__ import annotations

import gc
import weakref

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.config import Configuration
from letsencrypt_resource.host import ServerService


class Cycle:
    """
    An object in a reference cycle: only the collector frees it.
    """

    def __init__(self) -> None:
        self.me = self


class StartTests(SynchronousTestCase):
    """
    What L{ServerService.startService} does for the whole process.
    """

    def test_startUpFrozenAfterCollecting(self) -> None:
        """
        Start-up garbage is collected, then what is left is frozen out of
        the collector's reach, so that full collections stay short.
        """
        server = ServerService(Configuration("host test", None, ()), MemoryReactorClock())
        # Only an explicit collection may free the cycle.
        gc.disable()
        self.addCleanup(gc.enable)
        gc.unfreeze()
        self.addCleanup(gc.unfreeze)
        garbage = weakref.ref(Cycle())
        server.startService()
        self.addCleanup(server.stopService)
        self.assertIsNone(garbage())
        self.assertGreater(gc.get_freeze_count(), 0)
