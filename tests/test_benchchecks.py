"""
Tests for what the benches in C{bench/} take as a start-up that put every
service in service.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import events
from letsencrypt_resource.renewalstate import storedRecord
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.storage.records import Records, StoredSet
from tests.helpers.processcase import ROOT

BENCH = os.path.join(ROOT, "bench")


def benchModule(name: str) -> ModuleType:
    """
    The bench C{bench/<name>.py}, imported as the benches import each
    other (their folder first on C{sys.path}).
    """
    sys.path.insert(0, BENCH)
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(BENCH)
    return module


class AfterReactorTests(SynchronousTestCase):
    """
    C{bench/afterreactor.py} takes event 20209 for all in service only when
    every service listens.
    """

    def line(self, listening: int, failed: int, waiting: int) -> str:
        """
        The log line of event 20209 with these counts.
        """
        text = events.SERVICES_LISTENING.logFormat.format(
            listening=listening, failed=failed, waiting=waiting, seconds=0.5
        )
        return f"2026-11-29T20:00:00+0000 [-] {text}"

    def test_allListen(self) -> None:
        """
        Every service listening is all in service; one that cannot, or that
        waits for a certificate, is not.
        """
        bench = benchModule("afterreactor")
        self.assertEqual(
            [
                bench.allListen(self.line(*counts))
                for counts in ((10, 0, 0), (9, 1, 0), (9, 0, 1), (10, 0, 10))
            ],
            [True, False, False, False],
        )

    def test_beforeTheWaitingCount(self) -> None:
        """
        A version that logged 20209 only once every service listened, with
        no waiting count, is compared too: its line is all in service
        unless one cannot listen.
        """
        bench = benchModule("afterreactor")
        old = "20209 10000 services listen, {} cannot, 3.683 seconds after they started."
        self.assertEqual([bench.allListen(old.format(n)) for n in (0, 1)], [True, False])


class StoredRecordTests(SynchronousTestCase):
    """
    C{bench/warm.py} and C{bench/storedsets.py} take a stored set back by
    the start-up's own path: the digest and the facts of its state at once
    (L{storedRecord}).
    """

    def test_productPath(self) -> None:
        """
        Checking a fabricated state, and taking its sets back, each asks
        L{storedRecord} once a set.
        """
        warm = benchModule("warm")
        storedsets = benchModule("storedsets")
        asked: list[object] = []

        def counted(state: object) -> object:
            asked.append(state)
            return storedRecord(state)  # type: ignore[arg-type]

        self.patch(warm, "storedRecord", counted)
        self.patch(storedsets, "storedRecord", counted)
        state = warm.fabricated(os.path.abspath(self.mktemp()), 2)
        self.assertEqual(len(asked), 1)
        records = Records(DirectoryStorage(state, None, workers=warm.Inline()))  # type: ignore[arg-type]
        stored: list[StoredSet] = []
        records.loadSets([(name,) for name in warm.names(2, warm.RUN)]).addCallback(stored.extend)
        states = [each.renewalState() for each in stored]
        storedsets.takeBack(stored, states, True)
        self.assertEqual(asked[1:], states)


class PrebootPartsTests(SynchronousTestCase):
    """
    C{bench/prebootparts.py} runs each part's two versions on the same
    work.
    """

    def test_sameWorkBothSides(self) -> None:
        """
        Against this tree itself, each part's two versions give the same
        results: what they time is the same work.
        """
        prebootparts = benchModule("prebootparts")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = prebootparts.writeConfiguration(directory, os.path.join(directory, "state"), 3)
        with open(path) as stream:
            work = prebootparts.parts(ROOT, stream.read())
        self.assertEqual(
            sorted(work),
            ["_readSection", "_service", "parseDomainList", "readINI", "registrations"],
        )
        for name in ("readINI", "_readSection", "_service", "parseDomainList"):
            before, after = work[name]
            self.assertEqual(before(), after(), name)
        before, after = work["registrations"]
        self.assertEqual(
            [
                sorted(n for n, _ in r.getUtilitiesFor(prebootparts.ICertificateConsumer))
                for r in (before(), after())
            ],
            [[f"services/s{i:05d}" for i in range(3)]] * 2,
        )
