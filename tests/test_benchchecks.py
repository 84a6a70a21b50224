"""
Tests for what the benches in C{bench/} take as a start-up that put every
service in service.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from types import ModuleType

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from letsencrypt_resource import events
from letsencrypt_resource.renewalstate import storedRecord
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.storage.records import Records, StoredSet
from tests.helpers.processcase import ROOT

BENCH = os.path.join(ROOT, "bench")

#: The commit the start-up benches of issue 17 compare with (C{--before}).
BENCH_BASE = "fb4a96a"

#: A service on an endpoint that leaves its C{address} and C{port} empty:
#: not set, so not refused beside the endpoint.
ENDPOINT_SERVICE = """
[services/endpoint]
type = https
endpoint = tcp:6443:interface=127.0.0.1
address =
port =
path = public
ssl_domains = endpoint.example.test
"""


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

    def assertSameWork(self, before: str) -> None:
        """
        Against the tree C{before}, each part's two versions give the same
        results: what they time is the same work.  The services read are
        those of C{bench/twistdscale.py} and L{ENDPOINT_SERVICE}.
        """
        prebootparts = benchModule("prebootparts")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = prebootparts.writeConfiguration(directory, os.path.join(directory, "state"), 3)
        with open(path) as stream:
            text = stream.read() + ENDPOINT_SERVICE
        work = prebootparts.parts(before, text)
        self.assertEqual(sorted(work), ["_readSection", "_service", "parseDomainList", "readINI"])
        for name, (old, new) in work.items():
            self.assertEqual(old(), new(), name)

    def test_sameWorkBothSides(self) -> None:
        """
        Against this tree itself, each part's two versions do the same work.
        """
        self.assertSameWork(ROOT)

    def test_sameWorkBeforeTheChanges(self) -> None:
        """
        Against the modules of L{BENCH_BASE}, the commit before issue 17's
        configuration changes, each part's two versions do the same work:
        its C{config._service} and C{_listenerAddress} take the options a
        section sets (C{written}), which the bench gives them (given the
        section's text, they would refuse the empty C{address} and C{port}
        of L{ENDPOINT_SERVICE}).
        """
        tree = os.path.abspath(self.mktemp())
        for name in ("config", "inireader", "domains"):
            path = os.path.join("letsencrypt_resource", f"{name}.py")
            shown = subprocess.run(
                ["git", "-C", ROOT, "show", f"{BENCH_BASE}:{path}"],
                capture_output=True,
                check=False,
            )
            if shown.returncode:
                raise SkipTest(f"{BENCH_BASE} is not in this checkout: {shown.stderr!r}")
            os.makedirs(os.path.join(tree, "letsencrypt_resource"), exist_ok=True)
            with open(os.path.join(tree, path), "wb") as stream:
                stream.write(shown.stdout)
        self.assertSameWork(tree)
