"""
Tests for L{letsencrypt_resource.workers}, with real threads.
"""

from __future__ import annotations

import os
import sys
import threading

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.workers import NICENESS, BackgroundWorkers, lowPriority


def threadFacts() -> tuple[int, int, bool]:
    """
    The calling thread's native ID, nice value and whether it is a daemon.
    """
    native = threading.get_native_id()
    return native, os.getpriority(os.PRIO_PROCESS, native), threading.current_thread().daemon


lowThreadFacts = lowPriority(lambda: threadFacts())


class BackgroundWorkersTests(TestCase):
    """
    L{BackgroundWorkers} runs jobs in daemon threads of a lower priority.
    """

    def setUp(self) -> None:
        self.workers = BackgroundWorkers(reactor, f"test-workers-{id(self)}")
        self.addCleanup(self.workers.stop)

    async def test_result(self) -> None:
        """
        The job runs in another thread and its result comes back.
        """
        native, _, daemon = await self.workers.run(threadFacts)
        self.assertNotEqual(native, threading.get_native_id())
        self.assertTrue(daemon)

    async def test_failure(self) -> None:
        """
        The job's exception comes back as the Deferred's failure.
        """
        with self.assertRaises(ZeroDivisionError):
            await self.workers.run(lambda: 1 / 0)

    async def test_priorities(self) -> None:
        """
        On Linux a job marked L{lowPriority} runs in a thread whose own nice
        value is the process's plus L{NICENESS}; other jobs, and the reactor
        thread, keep the process's.
        """
        if not sys.platform.startswith("linux"):
            self.skipTest("threads have their own nice value on Linux only")
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        lowThread, lowNice, _ = await self.workers.run(lowThreadFacts)
        normalThread, normalNice, _ = await self.workers.run(threadFacts)
        self.assertEqual(lowNice, min(19, before + NICENESS))
        self.assertEqual(normalNice, before)
        self.assertNotEqual(lowThread, normalThread)
        self.assertEqual(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), before)

    def test_keyGenerationIsLowPriority(self) -> None:
        """
        Key generation, long and free of the GIL, is marked low priority.
        """
        self.assertTrue(generateKey.lowPriority)

    async def test_stopThenRunAgain(self) -> None:
        """
        L{BackgroundWorkers.stop} waits for the threads; a later job gets
        new ones.
        """

        def ours() -> list[threading.Thread]:
            return [t for t in threading.enumerate() if f"test-workers-{id(self)}" in t.name]

        await self.workers.run(threadFacts)
        await self.workers.run(lowThreadFacts)
        self.assertEqual(len(ours()), 2)
        await self.workers.stop()
        self.assertEqual(ours(), [])
        self.assertEqual(await self.workers.run(lambda: 42), 42)
