"""
The CPU of one check of N stored certificates, with no ACME server: the
first check after start-up, later routine checks, and a forced check.

    .venv/bin/python bench/checkcpu.py --n 1000 10000 --repeats 2
    .venv/bin/python bench/checkcpu.py --n 10000 --repeats 3 --tree /tmp/before --tree .

The state of each N is the one C{bench/warm.py} fabricates (kept under
C{--workdir}, shared with it): N certificates valid for 90 days, none due.
Each run is a fresh process (a worker) that starts a resource on it, as
warm.py does, and measures the process's CPU (C{time.process_time}: every
thread; the storage's threads are idle then).  The modules that speak ACME
(acme, josepy, requests: see L{letsencrypt_resource.acmeloading}) are
imported before the resource starts, and the CPU of that import is given
apart (C{ACME import}): a server loads them in a worker thread at their
first need, which is the first check's learning whether the CA offers
renewal information; counted in the first check, the import, not the
check, would be most of it.  The CA is unreachable, so that learning fails
at each check; with a reachable CA, the connection would stay connected
after the first check and no later check would learn again (nor look for
the wake-up after it), and a CA that offers renewal information would add
its checks to each set's next event: neither is measured here.  With
C{--ari-known}, each set's next question for renewal information is 6 h
away, as a server that asked saves it: a check then need not connect.

  - C{first}: the check the resource starts by itself once the sets are
    loaded (the first look at each set: its certificate's validity is read
    then), from its call until it ended (its Deferred fired) and the
    scheduler is quiet (the wake-up it schedules was found, in turns, and
    the connection that asks the CA whether it offers renewal information
    failed).  As twistd's host does, the load's end also collects the
    garbage and freezes the heap (C{gc.freeze}), in the first check's
    first turn: that collection's CPU is measured apart and not counted;
  - C{main}: of that CPU, the reactor thread's (C{time.thread_time});
  - C{longest turn}: of each phase (the later checks': the longest of
    them), the CPU and wall time of its longest reactor turn
    (L{TurnProbe}); the turn in which the load ended and the first check
    started (its first chunk, after the load's end: the last sets taken
    into service, the consumers told) is given apart (C{load's end}),
    less the load's collection, the host's;
  - C{later}: the same routine check (nothing due) called again, once the
    first one is over, measured the same way; C{--later} of them, the
    median;
  - C{forced}: C{check(force=True)}, from its call until every set's
    attempt is queued (the passes that plan, warn and queue): the queue
    is held, so no attempt runs while it is measured (their network work,
    failing, is not counted), and the resource stops after it, which
    cancels them.  What a forced check does after its attempts end (the
    wake-up pass, as in C{later}) is not counted.

With several C{--tree}s (source trees of the package, such as one
exported with C{git archive} and compiled), runs alternate between them,
the first tree's first; compile each tree to bytecode first.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import pstats
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT, emitResult, names, parseResult  # noqa: E402

# The tree measured: set by the orchestrator for its workers, in front of
# the one common.py put first.
if os.environ.get("CHECKCPU_TREE"):
    sys.path.insert(0, os.environ["CHECKCPU_TREE"])

from twisted.internet.defer import Deferred, gatherResults, succeed  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402
from warm import RUN, _cProfile, benchOptions, fabricate  # noqa: E402
from zope.interface.registry import Components  # noqa: E402

import letsencrypt_resource  # noqa: E402
from letsencrypt_resource.interfaces import ICertificateConsumer  # noqa: E402
from letsencrypt_resource.resource import LetsEncryptResource  # noqa: E402
from letsencrypt_resource.storage.directory import DirectoryStorage  # noqa: E402
from letsencrypt_resource.tls import TLSCertificateConsumer  # noqa: E402

#: Seconds left after the first check for what follows it to end.
SETTLE = 1.0
#: With --ari-known, seconds until each set's next renewal information question.
ARI_KNOWN = 6 * 3600.0


class Collections:
    """
    The time the garbage collector's passes took so far.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0
        gc.callbacks.append(self._timed)

    def _timed(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began


COLLECTIONS = Collections()


class TurnProbe:
    """
    The longest reactor turn (one C{runUntilCurrent}: the timed calls, the
    calls from threads and what they fire, which is where a check's chunks
    run) since the last L{reset}, in CPU time of the reactor thread
    (C{time.thread_time}: a busy machine that preempts the thread does
    not lengthen it) and in wall time, less the time set apart in
    C{excluded} during that turn (the collection at the load's end).
    """

    def __init__(self, reactor: Any):
        self.longest = (0.0, 0.0)
        self.excluded = (0.0, 0.0)
        #: The turn under way when L{reset} was called with C{apart}, once
        #: it ended: what it ran before the check, not the check.
        self.apart = (0.0, 0.0)
        self._apart = False
        run = reactor.runUntilCurrent

        def timed() -> None:
            cpu, wall = time.thread_time(), time.perf_counter()
            self.excluded = (0.0, 0.0)
            run()
            cpu = time.thread_time() - cpu - self.excluded[0]
            wall = time.perf_counter() - wall - self.excluded[1]
            if self._apart:
                self._apart, self.apart = False, (cpu, wall)
            else:
                self.longest = (max(self.longest[0], cpu), max(self.longest[1], wall))

        reactor.runUntilCurrent = timed

    def reset(self, apart: bool = False) -> tuple[float, float]:
        """
        Start again; return the longest turn so far, CPU and wall.

        @param apart: Keep the turn under way apart (L{apart}).
        """
        longest, self.longest = self.longest, (0.0, 0.0)
        self._apart = apart
        return longest


class Profiler:
    """
    cProfile over one phase of the worker (C{first}, C{later} or
    C{forced}), printed on the standard error at its end.
    """

    def __init__(self, phase: str | None):
        self._phase = phase
        self._profile: Any = None

    def enter(self, phase: str) -> None:
        if phase == self._phase:
            self._profile = _cProfile().Profile()
            self._profile.enable()

    def leave(self, phase: str) -> None:
        if phase == self._phase:
            self._profile.disable()
            stats = pstats.Stats(self._profile, stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)


class CheckTimer:
    """
    Wraps a scheduler's C{check} to measure the CPU of each call, until the
    check ended and the wake-up it scheduled was found.
    """

    def __init__(self, scheduler: Any, profiler: Profiler, probe: TurnProbe):
        self._scheduler = scheduler
        self._profiler = profiler
        self._probe = probe
        self._check = scheduler.check
        scheduler.check = self
        self.cpu: list[float] = []
        self.main: list[float] = []
        self.wall: list[float] = []
        self.collecting: list[float] = []
        self.turns: list[tuple[float, float]] = []
        self.whenMeasured: list[Deferred[None]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Deferred[None]:
        if not self.whenMeasured:
            self._profiler.enter("first")
        cpu, wall = time.process_time(), time.perf_counter()
        main = time.thread_time()
        self._probe.reset(apart=not self.whenMeasured)
        collecting = COLLECTIONS.seconds
        checking = self._check(*args, **kwargs)
        measured: Deferred[None] = Deferred()
        self.whenMeasured.append(measured)

        def ended(result: object) -> object:
            Deferred.fromCoroutine(self._quiet()).addCallback(done)
            return result

        def done(_: object) -> None:
            self.cpu.append(time.process_time() - cpu)
            self.main.append(time.thread_time() - main)
            self.wall.append(time.perf_counter() - wall)
            self.collecting.append(COLLECTIONS.seconds - collecting)
            self.turns.append(self._probe.reset())
            measured.callback(None)

        checking.addBoth(ended)
        return checking

    async def _quiet(self) -> None:
        """
        Wait until the scheduler neither learns whether the CA offers
        renewal information nor looks for the next wake-up.
        """
        scheduler = self._scheduler
        if hasattr(scheduler, "whenQuiet"):
            await scheduler.whenQuiet()
            return
        # A tree from before Scheduler.whenQuiet: its private attributes.
        while True:
            learning = scheduler._learning
            connecting = getattr(learning, "_pending", None)
            if isinstance(connecting, dict):
                # One connection under way per CA.
                learning = next(iter(connecting.values()), None)
            else:
                # A tree from before the connections per CA kept one
                # Deferred (earlier still, the scheduler itself).
                learning = getattr(learning, "pending", learning)
            pending = learning or scheduler._finding
            if pending is None:
                return
            await _passed(pending)


def _passed(pending: Deferred[Any]) -> Deferred[None]:
    """
    A Deferred that fires once C{pending} has fired, leaving its result
    to its other callbacks.

    A copy of C{letsencrypt_resource.coroutines.whenFired}, kept here on
    purpose: the bench also measures trees from before that helper
    (fb4a96a), which do not have it.
    """
    passed: Deferred[None] = Deferred()

    def fire(outcome: object) -> object:
        passed.callback(None)
        return outcome

    pending.addBoth(fire)
    return passed


def importACME(clock: Any) -> float:
    """
    Import the modules that speak ACME, as a server's first need of them
    does in a worker thread, here before anything is timed; return the
    CPU it took (not a number for a tree from before they were loaded
    so: it imported them with the package).
    """
    try:
        from letsencrypt_resource import acmeloading
    except ImportError:
        return math.nan
    cpu = time.process_time()
    acmeloading.loadACME(lambda function: succeed(function()), clock)
    return time.process_time() - cpu


async def work(reactor: Any, args: argparse.Namespace) -> None:
    """
    Start a resource on the state of C{args.n} certificates, measure its
    checks, stop it.
    """
    registry = Components("bench")
    consumers = []
    for index, name in enumerate(names(args.n, RUN)):
        consumer = TLSCertificateConsumer(f"service-{index}", (name,))
        registry.registerUtility(consumer, ICertificateConsumer, name=f"s{index:05d}")
        consumers.append(consumer)
    storage = DirectoryStorage(args.state, reactor)
    acmeCPU = importACME(reactor)
    resource = LetsEncryptResource(
        benchOptions(args.state), registry, storage, reactor, closeStorage=True
    )
    scheduler = resource._scheduler
    profiler = Profiler(args.profile)
    probe = TurnProbe(reactor)
    timer = CheckTimer(scheduler, profiler, probe)
    resource.startService()
    frozen: list[float] = []

    def freeze(_: object) -> None:
        # What the host does once the sets are loaded (host._freezeStartUp).
        cpu, collecting = time.process_time(), COLLECTIONS.seconds
        main, wall = time.thread_time(), time.perf_counter()
        gc.collect()
        gc.freeze()
        probe.excluded = (time.thread_time() - main, time.perf_counter() - wall)
        frozen[:] = [time.process_time() - cpu, COLLECTIONS.seconds - collecting]

    if args.ari_known:
        # As a server saves them once it asked a CA for renewal information.
        def asked(_: object) -> None:
            for certificate in resource.managed.values():
                certificate.ariNextCheck = reactor.seconds() + ARI_KNOWN

        resource.whenLoaded().addCallback(asked)
    resource.whenLoaded().addCallback(freeze)
    await gatherResults([c.whenCertificate() for c in consumers])
    await resource.whenSettled()
    await timer.whenMeasured[0]
    profiler.leave("first")
    await deferLater(reactor, SETTLE, lambda: None)
    profiler.enter("later")
    for _ in range(args.later):
        scheduler.check()
        await timer.whenMeasured[-1]
    profiler.leave("later")
    attempts = scheduler._renewer._attempts
    attempts._limit = 0
    renewer = scheduler._renewer
    whenEnded = renewer.whenEnded
    queued: list[float] = []

    def allQueued() -> Deferred[None]:
        queued.append(time.process_time())
        return whenEnded()

    renewer.whenEnded = allQueued
    profiler.enter("forced")
    cpu = time.process_time()
    probe.reset()
    resource.check(force=True)
    while not queued:
        await deferLater(reactor, 0.01, lambda: None)
    forcedTurn = probe.reset()
    profiler.leave("forced")
    emitResult(
        {
            "n": args.n,
            "tree": os.path.dirname(os.path.dirname(letsencrypt_resource.__file__)),
            "acme_cpu": acmeCPU,
            "first_cpu": timer.cpu[0] - frozen[0],
            "first_main": timer.main[0] - frozen[0],
            "later_main": statistics.median(timer.main[1:]),
            "freeze_cpu": frozen[0],
            "first_wall": timer.wall[0],
            "first_gc": timer.collecting[0] - frozen[1],
            "later_gc": statistics.median(timer.collecting[1:]),
            "first_turn": timer.turns[0],
            "load_end_turn": probe.apart,
            "later_turn": (max(t[0] for t in timer.turns[1:]), max(t[1] for t in timer.turns[1:])),
            "forced_turn": forcedTurn,
            "later_cpu": statistics.median(timer.cpu[1:]),
            "later_cpu_all": timer.cpu[1:],
            "forced_cpu": queued[0] - cpu,
            "queued": len(attempts._queued),
        }
    )
    await resource.stopService()


def turns(r: dict[str, Any]) -> str:
    """
    The longest turns of a worker's result C{r}, as the table shows them.
    """
    phases = (r["load_end_turn"], r["first_turn"], r["later_turn"], r["forced_turn"])
    return ", ".join(f"{cpu * 1e3:.0f}/{wall * 1e3:.0f}" for cpu, wall in phases)


def runWorker(args: argparse.Namespace, n: int, tree: str) -> dict[str, Any]:
    """
    One worker on C{n} certificates with the package of C{tree}.
    """
    state = os.path.join(args.workdir, f"warm-state-{n}")
    fabricate(state, n)
    command = [sys.executable, __file__, "--worker", "--n", str(n), "--state", state]
    command += ["--later", str(args.later)]
    if args.profile:
        command += ["--profile", args.profile]
    if args.ari_known:
        command += ["--ari-known"]
    environment = dict(os.environ, CHECKCPU_TREE=os.path.abspath(tree))
    ran = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    if args.profile:
        print(ran.stderr)
    return parseResult(ran.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--later", type=int, default=3, help="later routine checks per run")
    parser.add_argument(
        "--tree", action="append", help="a source tree of the package (default: this one)"
    )
    parser.add_argument(
        "--profile",
        choices=["first", "later", "forced"],
        help="print cProfile's figures of that phase (which they slow down)",
    )
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument(
        "--ari-known",
        action="store_true",
        help="every set's next renewal information question 6 h away, as a server "
        "that asked saves it (else none was asked: each is due)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.n = args.n[0]
        react(lambda reactor: Deferred.fromCoroutine(work(reactor, args)))
        return
    trees = args.tree or [ROOT]
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    print(
        "| tree | N | ACME import CPU, apart (ms) "
        "| first check CPU (ms; main: the reactor thread's) "
        "| collections in it (ms, wall) | later routine check CPU "
        "(ms) | their collections (ms) | forced check CPU (ms) "
        "| longest turn: load's end, first, later, forced (ms CPU / wall) | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.n:
        for _ in range(args.repeats):
            for tree in trees:
                r = runWorker(args, n, tree)
                later = ", ".join(f"{c * 1e3:.0f}" for c in r["later_cpu_all"])
                later += f"; main {r['later_main'] * 1e3:.0f}"
                print(
                    f"| {r['tree']} | {n:,} | {r['acme_cpu'] * 1e3:.0f} "
                    f"| {r['first_cpu'] * 1e3:.0f} (main {r['first_main'] * 1e3:.0f}) "
                    f"| {r['first_gc'] * 1e3:.0f} | {r['later_cpu'] * 1e3:.0f} ({later}) "
                    f"| {r['later_gc'] * 1e3:.0f} | {r['forced_cpu'] * 1e3:.0f} "
                    f"| {turns(r)} "
                    f"| {os.getloadavg()[0]:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
