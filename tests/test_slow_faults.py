"""
Faults against a real pebble, repeated at random moments, each run
checking that every consumer always holds a valid certificate, that every
domain set ends up issued once the fault is gone, and that the state
directory loads and holds what the consumers use (data lost otherwise).

Slow tests (L{tests.helpers.slow}): L{tests.test_faults} has each fault
once; these repeat them at random moments.  The store directory faults
mount a tmpfs, so they need root, and are skipped without.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest
from zope.interface.registry import Components

from letsencrypt_resource import policy
from letsencrypt_resource.httpclient import loadCABundle, makeHTTPClient
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.pebble import freeTCPPort, startTestCA
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.testing import RecordingConsumer
from tests.helpers.faultcase import Recorder, RestartablePebble, allIssued
from tests.helpers.pebblecase import TestCACase
from tests.helpers.reliability import Row, assertAllPassed
from tests.helpers.resourcecase import resourceOptions
from tests.helpers.slow import skipUnlessSlow
from tests.helpers.statedir import StateDirectory

SETS = {
    "files": ("files.example.test", "www.example.test"),
    "reports": ("reports.example.test",),
    "uploads": ("uploads.example.test",),
}


class Harness:
    """
    A resource with recording consumers, and what it logged.
    """

    def __init__(
        self,
        reactor: Any,
        acmeURL: str,
        caFile: str,
        challengePort: int,
        state: str,
        sets: dict[str, tuple[str, ...]] = SETS,
        **options: Any,
    ) -> None:
        self.reactor = reactor
        self.state = state
        self.sets = sets
        registry = Components()
        self.consumers = {}
        for name, domains in sets.items():
            self.consumers[name] = RecordingConsumer(f"{name}-https", domains)
            registry.registerUtility(self.consumers[name], ICertificateConsumer, name=name)
        http, self.pool = makeHTTPClient(reactor, loadCABundle(caFile))
        values = {
            "port": challengePort,
            "acmeURL": acmeURL,
            "stateDirectory": state,
            "acmeCAFile": caFile,
        }
        values.update(options)
        self.resource = LetsEncryptResource(
            attrs.evolve(resourceOptions(), **values),
            registry,
            DirectoryStorage(state, reactor),
            reactor,
            http,
            closeStorage=True,
        )
        self.recorder = Recorder()
        self.gaps: list[str] = []

    async def start(self) -> None:
        globalLogPublisher.addObserver(self.recorder)
        self.resource.startService()
        await self.resource.whenSettled()

    async def stop(self) -> None:
        watching = getattr(self, "_watching", None)
        if watching is not None and watching.running:
            watching.stop()
        globalLogPublisher.removeObserver(self.recorder)
        if self.resource.running:
            await self.resource.stopService()
        await self.pool.closeCachedConnections()

    def watch(self) -> Callable[[], None]:
        """
        Check every 50 ms, until the returned function is called, that each
        consumer holds a certificate valid now; note gaps in C{self.gaps}.
        """
        from twisted.internet.task import LoopingCall

        def look() -> None:
            now = self.reactor.seconds()
            for name, consumer in self.consumers.items():
                gap = None
                if not consumer.received:
                    gap = f"{name} without a certificate"
                elif consumer.received[-1].notAfter.timestamp() <= now:
                    gap = f"{name} on an expired certificate"
                if gap is not None and gap not in self.gaps:
                    self.gaps.append(gap)

        loop = LoopingCall(look)
        loop.clock = self.reactor
        loop.start(0.05)
        self._watching = loop

        def stop() -> None:
            if loop.running:
                loop.stop()

        return stop

    def storeProblems(self) -> tuple[list[str], bool]:
        """
        Load the state with a fresh store: it must load, and hold for each
        set the CA certificate its consumers use, if they have one.
        """
        problems = []
        lost = False
        store = StateDirectory(self.state)
        for name, domains in self.sets.items():
            try:
                stored = store.loadCertificate(domains)
            except Exception as error:
                problems.append(f"{name} does not load: {error!r}")
                lost = True
                continue
            current = self.consumers[name].received[-1] if self.consumers[name].received else None
            if current is not None and not current.provisional:
                if stored is None or stored.certificate != current.certificate:
                    problems.append(f"{name}: the store does not hold the certificate in use")
                    lost = True
        return problems, lost

    def pending(self) -> list[str]:
        problems = []
        for certificate in self.resource.managed.values():
            if certificate.attempt is not None:
                problems.append(f"{certificate.label}: an attempt still under way")
        if len(self.resource.responder):
            problems.append(f"{len(self.resource.responder)} challenge tokens left")
        return problems


async def waitFor(reactor: Any, condition: Callable[[], bool], timeout: float) -> bool:
    end = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > end:
            return False
        await deferLater(reactor, 0.05, lambda: None)
    return True


def ordered(harness: Harness, orders: int) -> Callable[[], bool]:
    """
    Whether C{harness}'s resource has requested more than C{orders}
    certificates (event 20155).
    """
    return lambda: harness.recorder.ids().count(20155) > orders


def renewedSince(harness: Harness, counts: dict[str, int]) -> Callable[[], bool]:
    """
    Whether every consumer of C{harness} received a CA certificate since it
    had received C{counts} of them.
    """
    return lambda: all(
        len(c.received) > counts[n] and not c.received[-1].provisional
        for n, c in harness.consumers.items()
    )


def exportedInUse(harness: Harness, directory: str, name: str) -> bool:
    """
    Whether C{directory} holds, as its C{cert.pem} for the set C{name}, the
    certificate C{harness}'s consumers of that set use.
    """
    path = os.path.join(directory, "_".join(harness.sets[name]), "cert.pem")
    try:
        with open(path, "rb") as stream:
            exported = stream.read()
    except OSError:
        return False
    return exported == harness.consumers[name].received[-1].certificatePEM


def allExported(harness: Harness, directory: str) -> Callable[[], bool]:
    """
    Whether every set of C{harness} is exported to C{directory} as in use
    (see L{exportedInUse}).
    """
    return lambda: all(exportedInUse(harness, directory, name) for name in harness.sets)


def shortRetries(first: float) -> Callable[[], None]:
    """
    The first retry after a failure after C{first} seconds, doubling as
    usual; return the undo.
    """
    saved = policy.FIRST_RETRY_DELAY
    policy.FIRST_RETRY_DELAY = first

    def undo() -> None:
        policy.FIRST_RETRY_DELAY = saved

    return undo


async def nonceRejection(reactor: Any, directory: str, runs: int) -> Row:
    """
    A new pebble rejecting 50% of good nonces, five domain sets: all
    issued at the first attempt.
    """
    row = Row("pebble rejects 50% of nonces")
    sets = dict(SETS, more=("more.example.test",), last=("last.example.test",))
    retries = 0
    for run in range(runs):
        challengePort = freeTCPPort()
        testCA = await startTestCA(
            reactor, os.path.join(directory, f"nonce-{run}"), challengePort, nonceReject=50
        )
        harness = Harness(
            reactor,
            testCA.directoryURL,
            testCA.caFile,
            challengePort,
            os.path.join(directory, f"nonce-{run}-state"),
            sets,
            debug=True,
        )
        try:
            await harness.start()
            problems = []
            if not allIssued(harness.consumers):
                problems.append("not every set issued")
            problems.extend(harness.recorder.texts(20017))
            problems.extend(harness.recorder.errors())
            retries += len([t for t in harness.recorder.texts(20000) if "badNonce" in t])
            storeProblems, lost = harness.storeProblems()
            row.record(problems + storeProblems, lost)
        finally:
            await harness.stop()
            await testCA.stop()
    row.notes.append(f"{retries} badNonce retries in all")
    return row


#: Lifetime of the certificates in the scheduled-renewal runs: renewed
#: after half of it, on the resource's own schedule.
LIFETIME = 20
#: How long attempts under way once every set is renewed may take to end,
#: in the scheduled-renewal runs.
SETTLE = LIFETIME / 4


async def goneMidOrder(
    reactor: Any, directory: str, runs: int, rng: random.Random, restart: bool
) -> Row:
    """
    Certificates of LIFETIME seconds, renewed on the resource's own
    schedule.  Each run waits for an order to start, then at a random
    moment makes the CA unreachable (or, with C{restart}, replaces it with
    a new pebble) for a random while; every set must get a new certificate
    after the cut, and no consumer may ever be without a valid one.
    """
    what = "restarted (new pebble: no accounts)" if restart else "unreachable"
    row = Row(f"CA {what} at a random moment of scheduled renewals")
    undo = shortRetries(0.25)
    pebble = RestartablePebble(
        os.path.join(directory, "restart" if restart else "gone"),
        extraConfig={"certificateValidityPeriod": LIFETIME},
    )
    await pebble.start()
    durations = []
    try:
        harness = Harness(
            reactor,
            pebble.directoryURL,
            pebble.caFile,
            pebble.challengePort,
            os.path.join(directory, "restart-state" if restart else "gone-state"),
        )
        await harness.start()
        stopWatching = harness.watch()
        try:
            for _ in range(runs):
                orders = harness.recorder.ids().count(20155)
                await waitFor(reactor, ordered(harness, orders), LIFETIME)
                await deferLater(reactor, rng.uniform(0, 0.4), lambda: None)
                cut = reactor.seconds()
                counts = {n: len(c.received) for n, c in harness.consumers.items()}
                failures = len(harness.recorder.texts(20017))
                outage = rng.uniform(0.5, 2.5)
                if restart:
                    await pebble.stop()
                    await deferLater(reactor, outage, lambda: None)
                    await pebble.start()
                else:
                    await pebble.door.refuse()
                    await deferLater(reactor, outage, lambda: None)
                    pebble.door.forward()
                renewed = await waitFor(
                    reactor,
                    renewedSince(harness, counts),
                    LIFETIME + 5,
                )
                if renewed:
                    durations.append(reactor.seconds() - cut)
                problems = []
                if not renewed:
                    problems.append(
                        "no new certificate for every set after the cut: "
                        + "; ".join(harness.recorder.texts(20017)[failures:][-2:])
                    )
                else:
                    # The renewal that ends the wait may be a scheduled one,
                    # due at the same moment as another set's (renewed at
                    # the cut): that one is under way or queued (2 orders at
                    # once) and ends within a second against a working CA;
                    # an attempt that hangs is still under way after this.
                    await waitFor(reactor, lambda: not harness.pending(), SETTLE)
                    problems.extend(harness.pending())
                problems.extend(harness.gaps)
                del harness.gaps[:]
                problems.extend(harness.recorder.errors())
                storeProblems, lost = harness.storeProblems()
                row.record(problems + storeProblems, lost)
                if restart and not renewed:
                    # The resource cannot recover (a known bug): later runs
                    # would only repeat this failure.
                    row.notes.append("stopped after the first failure")
                    break
        finally:
            stopWatching()
            await harness.stop()
    finally:
        await pebble.stop()
        undo()
    if durations:
        row.notes.append(
            f"cuts of 0.5-2.5 s; every set renewed at most {max(durations):.1f} s after the cut"
        )
    return row


async def neverAnswers(reactor: Any, directory: str) -> Row:
    """
    The CA accepts connections and never answers, in the middle of forced
    renewals: every attempt ends after the real 30 s time-out with 20017,
    the consumers keep their certificates, and once the CA answers again
    the next attempts renew.
    """
    from letsencrypt_resource.acmeclient import REQUEST_TIMEOUT

    row = Row("CA accepts connections and never answers (real time-outs)")
    undo = shortRetries(1.0)
    pebble = RestartablePebble(os.path.join(directory, "blackhole"))
    await pebble.start()
    try:
        harness = Harness(
            reactor,
            pebble.directoryURL,
            pebble.caFile,
            pebble.challengePort,
            os.path.join(directory, "blackhole-state"),
        )
        await harness.start()
        stopWatching = harness.watch()
        try:
            before = {n: c.received[-1] for n, c in harness.consumers.items()}
            pebble.door.blackhole()
            started = reactor.seconds()
            await harness.resource.check(force=True)
            elapsed = reactor.seconds() - started
            problems = []
            texts = harness.recorder.texts(20017)
            if len(texts) != len(SETS):
                problems.append(f"{len(texts)} failures logged, not {len(SETS)}")
            if elapsed > REQUEST_TIMEOUT + 5:
                problems.append(f"the attempts took {elapsed:.0f} s")
            for name, consumer in harness.consumers.items():
                if consumer.received[-1] is not before[name]:
                    problems.append(f"{name} changed certificate during the outage")
            problems.extend(harness.pending())
            pebble.door.forward()
            # Nothing was due: the forced renewals are not retried on their
            # own; the next one works.
            await harness.resource.check(force=True)
            if not all(c.received[-1] is not before[n] for n, c in harness.consumers.items()):
                problems.append("not renewed after the CA came back")
            problems.extend(harness.gaps)
            problems.extend(harness.recorder.errors())
            storeProblems, lost = harness.storeProblems()
            row.record(problems + storeProblems, lost)
            row.notes.append(f"attempts ended after {elapsed:.1f} s")
            details = [e["details"] for e in harness.recorder.events if e.get("event_id") == 20017]
            if details:
                row.notes.append(f"20017 says: {details[0][:150]}")
        finally:
            stopWatching()
            await harness.stop()
    finally:
        await pebble.stop()
        undo()
    return row


def mount(path: str, size: str) -> bool:
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
        capture_output=True,
    )
    return result.returncode == 0


def umount(path: str) -> None:
    subprocess.run(["umount", path], capture_output=True)


def fill(path: str) -> str:
    """
    Fill the file system of C{path} with one file; return its path.
    """
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


async def storeDirectoryFaults(reactor: Any, directory: str) -> list[Row]:
    """
    The store directory on a tiny tmpfs, full then read-only: 20009 naming
    the reason, every service on its new certificate, the state intact,
    and the export written by the retries of the failed writes once the
    file system is back (20185), without a new order.
    The state directory on a full tmpfs: see L{stateDirectoryFull}.
    """
    rows = []
    challengePort = freeTCPPort()
    testCA = await startTestCA(reactor, os.path.join(directory, "store-ca"), challengePort)
    undo = shortRetries(0.5)
    try:
        for kind in ("full", "read-only"):
            row = Row(f"store_directory on a {kind} file system")
            rows.append(row)
            mountPoint = os.path.join(directory, f"store-{kind}")
            if not mount(mountPoint, "256k"):
                row.notes.append("skipped: cannot mount a tmpfs here")
                continue
            try:
                if kind == "full":
                    filler = fill(mountPoint)
                else:
                    subprocess.run(["mount", "-o", "remount,ro", mountPoint], check=True)
                harness = Harness(
                    reactor,
                    testCA.directoryURL,
                    testCA.caFile,
                    challengePort,
                    os.path.join(directory, f"store-{kind}-state"),
                    storeDirectory=os.path.join(mountPoint, "exported"),
                )
                problems = []
                try:
                    await harness.start()
                    texts = harness.recorder.texts(20009)
                    reason = "No space left" if kind == "full" else "Read-only file system"
                    if not texts or not all(reason in t for t in texts):
                        problems.append(f"20009 does not say {reason!r}: {texts[:1]}")
                    if not allIssued(harness.consumers):
                        problems.append("not every set issued")
                    storeProblems, lost = harness.storeProblems()
                    problems.extend(storeProblems)
                    orders = harness.recorder.ids().count(20155)
                    if kind == "full":
                        os.remove(filler)
                    else:
                        subprocess.run(["mount", "-o", "remount,rw", mountPoint], check=True)
                    # Failed writes are retried at the retry pace (0.5 s
                    # here, doubling), not at the next check.
                    exportDirectory = os.path.join(mountPoint, "exported")
                    await waitFor(reactor, allExported(harness, exportDirectory), 30)
                    for name in SETS:
                        if not exportedInUse(harness, exportDirectory, name):
                            problems.append(
                                f"{name}: the certificate in use not exported once the "
                                "file system was back"
                            )
                    if 20185 not in harness.recorder.ids():
                        problems.append("no 20185 once the file system was back")
                    if harness.recorder.ids().count(20155) != orders:
                        problems.append("ordered again instead of retrying the export")
                    problems.extend(harness.recorder.errors())
                    row.record(problems, lost)
                    if texts:
                        row.notes.append(f"20009 says: ...{texts[0][-60:]}")
                finally:
                    await harness.stop()
            finally:
                umount(mountPoint)

    finally:
        undo()
        await testCA.stop()
    rows.append(await stateDirectoryFull(reactor, directory))
    return rows


async def stateDirectoryFull(reactor: Any, directory: str) -> Row:
    """
    The state directory on a tiny tmpfs that fills up after the first
    issuance, with certificates of LIFETIME seconds: the writes fail with
    20009 and are retried, no service is ever without a valid
    certificate, and the state still loads.  A certificate issued while
    the disk is full goes in service all the same and is saved later (see
    docs/operation.rst, "What the resource guarantees"): the store may
    lag behind the services only until there is room again, after which
    the retries of the failed writes store every certificate in use.
    """
    row = Row("state_directory on a full file system (scheduled renewals)")
    mountPoint = os.path.join(directory, "state-full")
    if not mount(mountPoint, "1m"):
        row.notes.append("skipped: cannot mount a tmpfs here")
        return row
    undo = shortRetries(0.5)
    pebble = RestartablePebble(
        os.path.join(directory, "state-full-ca"),
        extraConfig={"certificateValidityPeriod": LIFETIME},
    )
    await pebble.start()
    try:
        harness = Harness(
            reactor,
            pebble.directoryURL,
            pebble.caFile,
            pebble.challengePort,
            os.path.join(mountPoint, "state"),
        )
        problems = []
        try:
            await harness.start()
            stopWatching = harness.watch()
            before = {n: c.received[-1] for n, c in harness.consumers.items()}
            filler = fill(mountPoint)
            failing = await waitFor(reactor, lambda: 20009 in harness.recorder.ids(), LIFETIME)
            if not failing:
                problems.append("no 20009 while the file system was full")
            await deferLater(reactor, 2, lambda: None)
            # While the disk is full the store may not hold a certificate
            # put in service meanwhile, but what it holds must load.
            storeProblems, _ = harness.storeProblems()
            unloadable = [p for p in storeProblems if "does not load" in p]
            problems.extend(unloadable)
            lost = bool(unloadable)
            os.remove(filler)
            renewed = await waitFor(
                reactor,
                lambda: all(c.received[-1] is not before[n] for n, c in harness.consumers.items()),
                LIFETIME,
            )
            if not renewed:
                problems.append("not renewed once there was room")
            # The failed writes' retries (0.5 s, doubling) or the next
            # renewal store the certificates in use.
            await waitFor(reactor, lambda: not harness.storeProblems()[0], 2 * LIFETIME)
            stopWatching()
            storeProblems, lost2 = harness.storeProblems()
            problems.extend(storeProblems)
            problems.extend(harness.gaps)
            problems.extend(harness.recorder.errors())
            row.record(problems, lost or lost2)
            texts = harness.recorder.texts(20009)
            if texts:
                row.notes.append(f"20009 says: ...{texts[0][-60:]}")
        finally:
            await harness.stop()
    finally:
        await pebble.stop()
        undo()
        umount(mountPoint)
    return row


class RepeatedFaultTests(TestCACase):
    """
    Faults against a real pebble, each repeated at random moments.
    """

    skip = skipUnlessSlow()
    timeout = 900

    def setUp(self) -> None:
        super().setUp()
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.rng = random.Random(4)

    async def test_nonceRejection(self) -> None:
        """
        Pebble rejecting half the nonces: five runs, each issuing every set.
        """
        assertAllPassed(self, [await nonceRejection(reactor, self.directory, 5)])

    async def test_goneMidOrder(self) -> None:
        """
        The CA unreachable in the middle of orders, ten times.
        """
        row = await goneMidOrder(reactor, self.directory, 10, self.rng, restart=False)
        assertAllPassed(self, [row])

    async def test_restartedMidOrder(self) -> None:
        """
        The CA restarted (losing its orders) in the middle of orders, twice.
        """
        row = await goneMidOrder(reactor, self.directory, 2, self.rng, restart=True)
        assertAllPassed(self, [row])

    async def test_neverAnswers(self) -> None:
        """
        The CA never answering: real time-outs, then issuance once it does.
        """
        assertAllPassed(self, [await neverAnswers(reactor, self.directory)])

    async def test_storeDirectory(self) -> None:
        """
        The store directory on a full and on a read-only file system (a
        tmpfs: root only), and the state directory full.
        """
        rows = await storeDirectoryFaults(reactor, self.directory)
        if all(row.runs == 0 for row in rows):
            raise SkipTest("cannot mount a tmpfs here (root only)")
        assertAllPassed(self, [row for row in rows if row.runs])
